"""The downstream side: an ``asyncio.Protocol`` over httptools' request parser.

Parser callbacks only build state. A request whose headers are complete becomes an
``Exchange``; exchanges of one connection are answered strictly in order (pipelining), and
only the first is active. Routing and local replies happen synchronously; forwarding spawns
one task that obtains an upstream connection, after which bodies flow callback to callback
in both directions with backpressure (``pause_reading`` on the other side when a write buffer
fills). A ``ProxyError`` anywhere becomes exactly one local reply, or a closed connection if the
response had already started.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from typing import Callable

import httptools

from .. import errors
from ..errors import BadRequest, HeadersTooLarge, ProxyError
from ..observe import AccessLog, format_time
from . import http
from .compile import DIRECT, FORWARD, REDIRECT, CompiledBackend, CompiledRoute, Snapshot
from .dns import DnsError, Resolver
from .filters import redirect_location, rewrite_path
from .pool import Pool
from .router import normalize_host
from .upstream import UpstreamConnection

log = logging.getLogger("pyproxy.server")

BODY_BUFFER_LIMIT = 64 * 1024
HEADER_TIMEOUT = 30.0
IDLE_TIMEOUT = 60.0

# Reasons to stop reading from the client; reading resumes when none is left.
BLOCK_UPSTREAM_FULL = 1  # the upstream's write buffer is full
BLOCK_BUFFERED = 2  # body bytes buffered while no upstream connection is attached yet
BLOCK_PIPELINE = 4  # a further request arrived while one is still being answered


class Context:
    """What every connection shares; ``snapshot`` is swapped by the runtime on reload."""

    def __init__(self, snapshot: Snapshot, resolver: Resolver, pool: Pool, access_log: AccessLog) -> None:
        self.snapshot = snapshot
        self.resolver = resolver
        self.pool = pool
        self.access_log = access_log
        self.connections: set[HttpProtocol] = set()


class Exchange:
    """One request and its response."""

    __slots__ = (
        "proto", "method", "target", "path", "query", "version", "keep_alive", "headers", "host", "host_header",
        "chunked_in", "expect_continue", "start", "start_mono", "request_complete", "started", "response_started",
        "finished", "discard_body", "body", "body_size", "body_seen", "conn", "reused", "route", "backend", "status",
        "flags", "bytes_received", "bytes_sent", "chunked_out", "close_after", "timer", "task", "upstream_head",
        "upstream_addr", "request_id", "retried", "response_filters", "head_request",
    )

    def __init__(self, proto: "HttpProtocol") -> None:
        self.proto = proto
        self.headers: list[tuple[bytes, bytes]] = []
        self.start = time.time()
        self.start_mono = time.monotonic()
        self.method = ""
        self.target = b""
        self.path = ""
        self.query = ""
        self.version = "1.1"
        self.keep_alive = True
        self.host = ""
        self.host_header = b""
        self.chunked_in = False
        self.expect_continue = False
        self.request_complete = False
        self.started = False
        self.response_started = False
        self.finished = False
        self.discard_body = False
        self.body: list[bytes] = []
        self.body_size = 0
        self.body_seen = False
        self.conn: UpstreamConnection | None = None
        self.reused = False
        self.route: CompiledRoute | None = None
        self.backend: CompiledBackend | None = None
        self.status = 0
        self.flags = "-"
        self.bytes_received = 0
        self.bytes_sent = 0
        self.chunked_out = False
        self.close_after = False
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task | None = None
        self.upstream_head = b""
        self.upstream_addr: str | None = None
        self.request_id = ""
        self.retried = False
        self.response_filters: tuple = ()
        self.head_request = False

    # ------------------------------------------------------------------ ResponseSink

    def response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], framed: bool) -> None:
        self.proto.write_response_head(self, status, reason, headers, framed)

    def response_body(self, data: bytes) -> None:
        self.proto.write_response_body(self, data)

    def response_end(self, reusable: bool) -> None:
        self.proto.end_response(self, reusable)

    def upstream_failed(self, error: ProxyError) -> None:
        self.proto.upstream_failed(self, error)

    def upstream_pause(self) -> None:
        self.proto.block(BLOCK_UPSTREAM_FULL)

    def upstream_resume(self) -> None:
        self.proto.unblock(BLOCK_UPSTREAM_FULL)


class HttpProtocol(asyncio.Protocol):
    """One downstream connection on a listener socket (``group_key`` = (address, port))."""

    def __init__(self, ctx: Context, group_key: tuple[str, int], scheme: str) -> None:
        self.ctx = ctx
        self.group_key = group_key
        self.scheme = scheme
        self.scheme_b = scheme.encode()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Exchange] = deque()
        self.parsing: Exchange | None = None
        self.url = b""
        self.header_count = 0
        self.header_bytes = 0
        self.blocked = 0
        self.write_paused = False
        self.reading_stopped = False
        self.no_more_requests = False
        self.deferred_error: ProxyError | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.peer = ""
        self.peer_b = b""
        self.local = ""
        self.loop = asyncio.get_event_loop()

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.ctx.connections.add(self)
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")
        self.peer_b = (peer[0] if isinstance(peer, tuple) else "").encode()
        self.local = f"{sock[0]}:{sock[1]}" if isinstance(sock, tuple) else str(sock or "")
        self._arm(IDLE_TIMEOUT, self._idle_expired)

    def data_received(self, data: bytes) -> None:
        if self.reading_stopped:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgrade()
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _StopParsing):
                self.reading_stopped = True
            elif isinstance(cause, ProxyError):
                self._protocol_error(cause)
            elif cause is not None:
                log.error("internal error while handling a request", exc_info=cause)
                self._protocol_error(errors.InternalError("internal error"))
            else:
                self._protocol_error(BadRequest(str(exc)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.ctx.connections.discard(self)
        self._disarm()
        self.reading_stopped = True
        for ex in self.queue:
            if not ex.finished:
                ex.finished = True
                self._cancel(ex)
                if ex.started:
                    if not ex.response_started:
                        ex.flags = "DC"
                    self._log(ex)
        self.queue.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.queue and self.queue[0].conn is not None:
            self.queue[0].conn.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.queue and self.queue[0].conn is not None and not self.queue[0].conn.closed:
            self.queue[0].conn.transport.resume_reading()

    # ------------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        if self.no_more_requests:
            raise _StopParsing
        ex = Exchange(self)
        self.parsing = ex
        self.url = b""
        self.header_count = 0
        self.header_bytes = 0
        if self.queue:
            self.block(BLOCK_PIPELINE)
        else:
            self._arm(HEADER_TIMEOUT, self._header_expired)

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.header_bytes += len(url)
        if self.header_bytes > http.MAX_HEADER_BYTES:
            raise errors.UriTooLong("request-target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        self.header_bytes += len(name) + len(value) + 4
        if self.header_count > http.MAX_HEADERS:
            raise HeadersTooLarge("too many headers")
        if self.header_bytes > http.MAX_HEADER_BYTES:
            raise HeadersTooLarge("header section too large")
        self.parsing.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        ex = self.parsing
        parser = self.parser
        ex.method = parser.get_method().decode("latin-1")
        ex.version = parser.get_http_version()
        ex.keep_alive = parser.should_keep_alive()
        ex.head_request = ex.method == "HEAD"
        self._validate(ex)
        if not self.queue:
            self._disarm()
        self.queue.append(ex)
        if len(self.queue) == 1:
            self._start(ex)

    def on_body(self, body: bytes) -> None:
        ex = self.parsing
        ex.bytes_received += len(body)
        if ex.discard_body or ex.finished:
            return
        ex.body_seen = True
        conn = ex.conn
        if conn is not None:
            if ex.chunked_in:
                conn.transport.writelines((b"%x\r\n" % len(body), body, b"\r\n"))
            else:
                conn.write(body)
            return
        ex.body.append(body)
        ex.body_size += len(body)
        if ex.body_size > BODY_BUFFER_LIMIT:
            self.block(BLOCK_BUFFERED)

    def on_message_complete(self) -> None:
        ex = self.parsing
        self.parsing = None
        ex.request_complete = True
        if not ex.keep_alive:
            self.no_more_requests = True
        if ex.finished:
            if not ex.close_after:
                self._after(ex)
            return
        if ex.conn is not None and ex.chunked_in:
            ex.conn.write(b"0\r\n\r\n")
        if ex.started and ex.route is not None and ex.timer is None and not ex.response_started:
            self._start_route_timer(ex)

    # ------------------------------------------------------------------ request validation

    def _validate(self, ex: Exchange) -> None:
        """Strict framing and target rules (hardening.md §2): anything ambiguous is a 400 and
        the connection closes."""
        if ex.method == "CONNECT":
            raise BadRequest("CONNECT is not supported")
        hosts = []
        content_lengths = []
        transfer_encodings = []
        for name, value in ex.headers:
            if name == b"host":
                hosts.append(value)
            elif name == b"content-length":
                content_lengths.append(value)
            elif name == b"transfer-encoding":
                transfer_encodings.append(value)
            elif name == b"expect":
                if value.strip().lower() == b"100-continue":
                    ex.expect_continue = ex.version == "1.1"
            if b"_" in name:
                raise BadRequest("header name with underscore")
        if transfer_encodings:
            if content_lengths or ex.version != "1.1" or len(transfer_encodings) > 1:
                raise BadRequest("ambiguous framing")
            if transfer_encodings[0].strip().lower() != b"chunked":
                raise errors.NotImplementedCoding("unsupported transfer-encoding")
            ex.chunked_in = True
        elif content_lengths:
            first = content_lengths[0]
            if not first.isdigit() or any(v != first for v in content_lengths):
                raise BadRequest("invalid content-length")
        target = self.url
        if target[:1] != b"/":
            lowered = target[:8].lower()
            if lowered.startswith(b"http://") or lowered.startswith(b"https://"):
                authority, target = http.parse_absolute(target)
                if hosts and hosts[0].lower() != authority.lower():
                    raise BadRequest("absolute-form authority differs from Host")
                hosts = hosts or [authority]
            elif not (target == b"*" and ex.method == "OPTIONS"):
                raise BadRequest("invalid request-target")
        if len(hosts) > 1:
            raise BadRequest("duplicate Host")
        if hosts:
            if not http.valid_host(hosts[0]):
                raise BadRequest("invalid Host")
            ex.host_header = hosts[0]
            ex.host = normalize_host(hosts[0])
        elif ex.version == "1.1":
            raise BadRequest("missing Host")
        ex.target = target
        path, ex.query = http.split_target(target)
        ex.path = http.normalize_path(path) if path.startswith("/") else path

    # ------------------------------------------------------------------ dispatch

    def _start(self, ex: Exchange) -> None:
        """Route the active exchange and either answer it locally or start forwarding."""
        ex.started = True
        snapshot = self.ctx.snapshot
        group = snapshot.groups.get(self.group_key)
        listener = group.listeners.find(ex.host) if group is not None else None
        vhost = listener.vhosts.find(ex.host) if listener is not None else None
        route = vhost.match(ex.method, ex.path, ex.query, ex.headers) if vhost is not None else None
        if route is None:
            ex.flags = "NR"
            self._reply(ex, 404)
            return
        ex.route = route
        if route.kind == REDIRECT:
            location = redirect_location(route.redirect, self.scheme, ex.host, self.group_key[1], ex.path, ex.query)
            self._reply(ex, route.redirect.status_code, extra=[(b"location", location.encode("latin-1"))])
            return
        if route.kind == DIRECT:
            self._reply(ex, route.direct.status, route.direct.body.encode())
            return
        backend = route.pick()
        ex.backend = backend
        if backend.destination is None:
            self._reply(ex, backend.invalid_status)
            return
        ex.upstream_head = self._upstream_head(ex, route, backend)
        ex.response_filters = tuple(f for f in (route.response_headers, backend.response_headers) if f is not None)
        if ex.expect_continue:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if ex.request_complete:
            self._start_route_timer(ex)
        ex.task = self.loop.create_task(self._connect(ex), name=f"pyproxy-connect-{ex.request_id}")

    def _upstream_head(self, ex: Exchange, route: CompiledRoute, backend: CompiledBackend) -> bytes:
        tokens = http.connection_tokens(ex.headers)
        owned = http.REQUEST_OWNED
        headers = [h for h in ex.headers if h[0] not in owned and h[0] not in tokens]
        host = ex.host_header
        path = ex.path
        rewrite = route.url_rewrite
        if rewrite is not None:
            if rewrite.hostname is not None:
                _append(headers, b"x-forwarded-host", host)
                host = rewrite.hostname.encode("latin-1")
            if rewrite.path is not None:
                path = rewrite_path(path, rewrite.path)
        _append(headers, b"x-forwarded-for", self.peer_b)
        headers.append((b"x-forwarded-proto", self.scheme_b))
        ex.request_id = str(uuid.uuid4())
        headers.append((b"x-request-id", ex.request_id.encode()))
        if route.request_headers is not None:
            headers = route.request_headers.apply(headers)
        if backend.request_headers is not None:
            headers = backend.request_headers.apply(headers)
        if ex.chunked_in:
            headers.append((b"transfer-encoding", b"chunked"))
        else:
            for name, value in ex.headers:
                if name == b"content-length":
                    headers.append((name, value))
                    break
        target = path + "?" + ex.query if ex.query else path
        lines = [b"%s %s HTTP/1.1\r\nhost: %s" % (ex.method.encode(), target.encode("latin-1"), host)]
        lines.extend(map(b": ".join, headers))
        lines.append(b"\r\n")
        return b"\r\n".join(lines)

    async def _connect(self, ex: Exchange, fresh: bool = False) -> None:
        dest = ex.backend.destination
        ctx = self.ctx
        try:
            addresses = dest.addresses(ctx.resolver.lookup)
            if not addresses and dest.fqdns:
                for ep in dest.fqdns:
                    try:
                        await ctx.resolver.resolve(ep.host)
                    except DnsError:
                        pass
                addresses = dest.addresses(ctx.resolver.lookup)
            if not addresses:
                raise errors.NoHealthyUpstream("no endpoint")
            host, port, unix = dest.pick(addresses)
            ex.upstream_addr = host if unix else f"{host}:{port}"
            conn, reused = await ctx.pool.acquire(dest, host, port, unix, fresh=fresh)
        except ProxyError as exc:
            if not ex.finished:
                self._fail(ex, exc)
            return
        if ex.finished:
            ctx.pool.release(conn)
            return
        ex.conn = conn
        ex.reused = reused
        conn.start(ex, ex.upstream_head, ex.head_request)
        if ex.body:
            body = ex.body
            ex.body = []
            if ex.chunked_in:
                conn.transport.writelines([b"%x\r\n%s\r\n" % (len(b), b) for b in body])
            else:
                conn.transport.writelines(body)
        if ex.request_complete and ex.chunked_in:
            conn.write(b"0\r\n\r\n")
        if self.write_paused:
            conn.transport.pause_reading()
        self.unblock(BLOCK_BUFFERED)

    def _start_route_timer(self, ex: Exchange) -> None:
        timeouts = ex.route.timeouts
        limit = timeouts.request
        if timeouts.backend_request is not None:
            limit = timeouts.backend_request if limit is None else min(limit, timeouts.backend_request)
        if limit is not None:
            ex.timer = self.loop.call_later(limit, self._route_timeout, ex)

    def _route_timeout(self, ex: Exchange) -> None:
        ex.timer = None
        if not ex.finished:
            self._fail(ex, errors.UpstreamTimeout())

    # ------------------------------------------------------------------ response path (upstream callbacks)

    def write_response_head(self, ex: Exchange, status: int, reason: bytes, headers: list[tuple[bytes, bytes]],
                            framed: bool) -> None:
        ex.response_started = True
        ex.status = status
        tokens = http.connection_tokens(headers)
        content_length = None
        out = []
        for h in headers:
            name = h[0]
            if name == b"content-length":
                content_length = h[1]
            elif name not in http.HOP_BY_HOP and name not in tokens:
                out.append(h)
        for ops in ex.response_filters:
            out = ops.apply(out)
        bodiless = ex.head_request or status in (204, 304)
        if content_length is not None:
            if status != 204:
                out.append((b"content-length", content_length))
        elif not bodiless:
            if ex.version == "1.1":
                ex.chunked_out = True
                out.append((b"transfer-encoding", b"chunked"))
            else:
                ex.close_after = True
        if ex.close_after or not ex.keep_alive:
            out.append((b"connection", b"close"))
        elif ex.version == "1.0":
            out.append((b"connection", b"keep-alive"))
        lines = [b"HTTP/1.1 %d %s" % (status, reason or http.REASONS.get(status, b""))]
        lines.extend(map(b": ".join, out))
        lines.append(b"\r\n")
        self.transport.write(b"\r\n".join(lines))

    def write_response_body(self, ex: Exchange, data: bytes) -> None:
        ex.bytes_sent += len(data)
        if ex.chunked_out:
            self.transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            self.transport.write(data)

    def end_response(self, ex: Exchange, reusable: bool) -> None:
        if ex.finished:
            return
        if ex.chunked_out:
            self.transport.write(b"0\r\n\r\n")
        conn, ex.conn = ex.conn, None
        if conn is not None:
            if reusable and ex.request_complete:
                self.ctx.pool.release(conn)
            else:
                conn.close()
        if not ex.request_complete:
            ex.close_after = True  # the rest of the request body will not be read
        self._finish(ex)

    def upstream_failed(self, ex: Exchange, error: ProxyError) -> None:
        if ex.finished:
            return
        conn, ex.conn = ex.conn, None
        if conn is not None:
            conn.abort()
        retryable = (
            isinstance(error, errors.UpstreamReset) and ex.reused and not ex.retried and not ex.response_started
            and not ex.body_seen and ex.method in http.IDEMPOTENT
        )
        if retryable:
            # The stale keep-alive race: the pooled connection died before our request reached
            # the upstream. Nothing was consumed, so one fresh connection is safe to try.
            ex.retried = True
            ex.task = self.loop.create_task(self._connect(ex, fresh=True), name=f"pyproxy-retry-{ex.request_id}")
            return
        self._fail(ex, error)

    # ------------------------------------------------------------------ completion

    def _reply(self, ex: Exchange, status: int, body: bytes = b"", extra=None, close: bool = False) -> None:
        ex.status = status
        ex.response_started = True
        ex.bytes_sent += len(body)
        if ex.expect_continue and not ex.request_complete:
            close = True
        close = close or not ex.keep_alive
        if close:
            ex.close_after = True
        self.transport.write(http.local_reply(status, b"" if ex.head_request else body, close=close, extra=extra))
        if not ex.request_complete:
            ex.discard_body = True
        self._finish(ex)

    def _fail(self, ex: Exchange, error: ProxyError) -> None:
        """Answer with the error's local reply, or cut the connection if the response began."""
        ex.flags = error.flags
        self._cancel(ex)
        if ex.response_started:
            ex.finished = True
            self._log(ex)
            self.transport.close()
            return
        self._reply(ex, error.status, error.body.encode(), close=error.close)

    def _cancel(self, ex: Exchange) -> None:
        if ex.timer is not None:
            ex.timer.cancel()
            ex.timer = None
        if ex.task is not None and not ex.task.done():
            ex.task.cancel()
        conn, ex.conn = ex.conn, None
        if conn is not None:
            conn.abort()

    def _finish(self, ex: Exchange) -> None:
        ex.finished = True
        if ex.timer is not None:
            ex.timer.cancel()
            ex.timer = None
        self._log(ex)
        if ex.request_complete or ex.close_after:
            self._after(ex)

    def _after(self, ex: Exchange) -> None:
        """The exchange is answered and its request fully read: move on to the next one."""
        if self.queue and self.queue[0] is ex:
            self.queue.popleft()
        if ex.close_after or not ex.keep_alive:
            self._close()
            return
        if self.queue:
            nxt = self.queue[0]
            if len(self.queue) == 1:
                self.unblock(BLOCK_PIPELINE)
            self._start(nxt)
            return
        self.unblock(BLOCK_PIPELINE)
        if self.deferred_error is not None:
            self._send_error(self.deferred_error)
        elif self.parsing is None:
            self._arm(IDLE_TIMEOUT, self._idle_expired)

    def _close(self) -> None:
        self.reading_stopped = True
        self._disarm()
        if self.transport is not None:
            self.transport.close()

    def _log(self, ex: Exchange) -> None:
        access_log = self.ctx.access_log
        if not access_log.enabled:
            return
        route = ex.route
        dest = ex.backend.destination if ex.backend is not None else None
        user_agent = forwarded = None
        for name, value in ex.headers:
            if name == b"user-agent":
                user_agent = value.decode("latin-1")
            elif name == b"x-forwarded-for":
                forwarded = value.decode("latin-1")
        access_log.write({
            "start_time": format_time(ex.start),
            "method": ex.method,
            "x-envoy-origin-path": ex.target.decode("latin-1"),
            "protocol": "HTTP/" + ex.version,
            "response_code": ex.status,
            "response_flags": ex.flags,
            "bytes_received": ex.bytes_received,
            "bytes_sent": ex.bytes_sent,
            "duration": int((time.monotonic() - ex.start_mono) * 1000),
            "x-forwarded-for": forwarded,
            "user-agent": user_agent,
            "x-request-id": ex.request_id or None,
            ":authority": ex.host_header.decode("latin-1") or None,
            "upstream_host": ex.upstream_addr,
            "upstream_cluster": dest.name if dest is not None else None,
            "downstream_local_address": self.local,
            "downstream_remote_address": self.peer,
            "route_name": route.name if route is not None else None,
        })

    # ------------------------------------------------------------------ errors on the connection

    def _protocol_error(self, error: ProxyError) -> None:
        """A malformed request: stop reading; answer the exchanges before it, then this error."""
        self.reading_stopped = True
        self.transport.pause_reading()
        ex = self.parsing
        self.parsing = None
        if ex is not None and ex in self.queue:
            if ex is self.queue[0]:
                ex.keep_alive = False
                self._fail(ex, error)
                return
            self.queue.remove(ex)
        self.deferred_error = error
        if not self.queue:
            self._send_error(error)

    def _send_error(self, error: ProxyError) -> None:
        self.deferred_error = None
        self.transport.write(http.local_reply(error.status, error.body.encode(), close=True))
        self._close()

    def _upgrade(self) -> None:
        """httptools stops at an Upgrade request (after delivering it whole). We do not switch
        protocols: the request was forwarded without ``Upgrade``, and the connection closes
        after its response because bytes after it cannot be parsed as HTTP/1.1."""
        self.no_more_requests = True
        for ex in self.queue:
            ex.keep_alive = False

    # ------------------------------------------------------------------ flow control and timers

    def block(self, reason: int) -> None:
        if not self.blocked and not self.reading_stopped:
            self.transport.pause_reading()
        self.blocked |= reason

    def unblock(self, reason: int) -> None:
        if self.blocked & reason:
            self.blocked &= ~reason
            if not self.blocked and not self.reading_stopped:
                self.transport.resume_reading()

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _idle_expired(self) -> None:
        self.timer = None
        if not self.queue and self.parsing is None:
            self._close()

    def _header_expired(self) -> None:
        self.timer = None
        if not self.queue:
            self.parsing = None
            self._send_error(errors.RequestTimeout("request headers not received in time"))


class _StopParsing(Exception):
    """Raised from a parser callback to ignore bytes after a request that ends the connection."""


def _append(headers: list[tuple[bytes, bytes]], name: bytes, value: bytes) -> None:
    """Append ``value`` to the first header ``name`` (comma-joined), or add it."""
    for i, (hname, hvalue) in enumerate(headers):
        if hname == name:
            headers[i] = (hname, hvalue + b", " + value)
            return
    headers.append((name, value))

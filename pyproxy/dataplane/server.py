"""The downstream side: an ``asyncio.Protocol`` over httptools' request parser.

Parser callbacks only build state. A request whose headers are complete becomes an
``Exchange`` (``exchange.py``: validation, the heads written each way); exchanges of one
connection are answered strictly in order (pipelining), and only the first is active. Routing
and local replies happen synchronously; forwarding (``forward.py``) takes an idle pooled
upstream connection or starts one task to connect, after which bodies flow callback to
callback in both directions with backpressure (``pause_reading`` on the other side when a
write buffer fills; ``flow.py`` tracks why the client is not being read). A ``ProxyError``
anywhere becomes exactly one local reply, or a closed connection if the response had already
started.
"""
from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from typing import Callable

import httptools

from .. import errors
from ..errors import BadRequest, HeadersTooLarge, ProxyError
from . import http, tls
from .compile import DIRECT, REDIRECT
from .context import Context
from .exchange import Exchange, access_entry, upstream_head, validate
from .filters import redirect_location
from .flow import BUFFERED, PIPELINE, UPSTREAM_FULL, ReadGate
from .forward import Forwarding

log = logging.getLogger("pyproxy.server")



class HttpProtocol(Forwarding, asyncio.Protocol):
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
        self.in_head = False  # between on_message_begin and on_headers_complete
        self.head_raw = 0  # bytes read while a request head stays incomplete across reads
        self.gate: ReadGate | None = None
        self.write_paused = False
        self.closing = False
        self.advancing = False  # _after is starting queued exchanges further up the stack
        self.no_more_requests = False
        self.deferred_error: ProxyError | None = None
        self.timer: asyncio.TimerHandle | None = None  # the lingering close
        self.deadline = 0.0  # loop time at which deadline_cb fires (header or idle deadline)
        self.deadline_cb: Callable[[], None] | None = None
        self.pending: list[bytes] | None = None  # response bytes held until the upstream read ends
        self.sni: str | None = None  # the TLS server name the client sent (HTTPS listeners)
        self.peer = ""
        self.peer_b = b""
        self.local = ""
        self.loop = asyncio.get_event_loop()

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.gate = ReadGate(self.transport)
        self.ctx.connections.add(self)
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")
        self.peer_b = (peer[0] if isinstance(peer, tuple) else "").encode()
        self.local = f"{sock[0]}:{sock[1]}" if isinstance(sock, tuple) else str(sock or "")
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.sni = tls.server_name(ssl_object)
        self._arm(self.ctx.limits.idle_timeout, self._idle_expired)

    def data_received(self, data: bytes) -> None:
        if self.gate.stopped:
            return
        pending = self.parsing if self.in_head else None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgrade()
            return
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _StopParsing):
                self.gate.stop(drain=True)
            elif isinstance(cause, ProxyError):
                self._protocol_error(cause)
            elif cause is not None:
                log.error("internal error while handling a request", exc_info=cause)
                self._protocol_error(errors.InternalError("internal error"))
            else:
                self._protocol_error(BadRequest(str(exc)))
            return
        if self.in_head:
            # httptools buffers a header line until it ends and reports it only then, so a
            # head that keeps growing across reads is measured here, before it is complete.
            if self.parsing is pending:
                self.head_raw += len(data)
                if self.head_raw > http.MAX_HEADER_BYTES:
                    self._protocol_error(HeadersTooLarge("header section too large"))
                    return
            if self.parser.get_http_version() == "0.9":
                self._protocol_error(BadRequest("HTTP/0.9"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.ctx.connections.discard(self)
        self._disarm()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.gate.stopped = True
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
        self.in_head = True
        self.head_raw = 0
        if self.queue:
            self.gate.block(PIPELINE)
        else:
            self._arm(self.ctx.limits.header_timeout, self._header_expired)

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
        self.in_head = False
        ex.method = parser.get_method().decode("latin-1")
        ex.version = parser.get_http_version()
        ex.keep_alive = parser.should_keep_alive()
        ex.head_request = ex.method == "HEAD"
        validate(ex, self.url)
        if ex.has_body:
            self._arm(self.ctx.limits.body_timeout, self._body_expired)
        elif not self.queue:
            self._disarm()
        self.queue.append(ex)
        if len(self.queue) == 1:
            self._start(ex)

    def on_body(self, body: bytes) -> None:
        ex = self.parsing
        ex.bytes_received += len(body)
        if self.deadline_cb is not None:  # the body deadline: progress pushes it back
            self.deadline = self.loop.time() + self.ctx.limits.body_timeout
        if ex.finished:
            return
        ex.body_seen = True
        if ex.replay is not None:
            ex.keep_for_replay(body)
        conn = ex.conn
        if conn is not None:
            if ex.chunked_in:
                conn.transport.writelines((b"%x\r\n" % len(body), body, b"\r\n"))
            else:
                conn.write(body)
            return
        ex.body.append(body)
        ex.body_size += len(body)
        if ex.body_size > self.ctx.limits.buffer_limit:
            self.gate.block(BUFFERED)

    def on_message_complete(self) -> None:
        ex = self.parsing
        self.parsing = None
        self._disarm()
        ex.request_complete = True
        if not ex.keep_alive:
            self.no_more_requests = True
        if ex.finished:
            if not ex.close_after:
                self._after(ex)
            return
        if ex.conn is not None:
            if ex.chunked_in:
                ex.conn.write(b"0\r\n\r\n")
            self._start_try_timer(ex)
        if ex.started and ex.route is not None and ex.timer is None and not ex.response_started:
            self._start_route_timer(ex)
        if ex.mirrors:
            self._send_mirrors(ex)

    # ------------------------------------------------------------------ dispatch

    def _start(self, ex: Exchange) -> None:
        """Route the active exchange and either answer it locally or start forwarding."""
        ex.started = True
        snapshot = self.ctx.snapshot
        group = snapshot.groups.get(self.group_key)
        listener = group.listeners.find(ex.host) if group is not None else None
        if listener is not None and self.sni is not None and group.listeners.find(self.sni) is not listener:
            # TLS picked another listener than the Host names: Misdirected Request (RFC 9110 §15.5.20)
            self._reply(ex, 421)
            return
        vhost = listener.vhosts.find(ex.host) if listener is not None else None
        route = vhost.match(ex.method, ex.path, ex.query, ex.headers) if vhost is not None else None
        if route is None:
            ex.flags = "NR"
            self._reply(ex, 404)
            return
        ex.route = route
        if route.cors is not None and self._cors(ex, route.cors):
            return
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
        ex.upstream_head = upstream_head(ex, route, backend, self.peer_b, self.scheme_b)
        ex.response_filters = tuple(f for f in (route.response_headers, backend.response_headers) if f is not None)
        if route.retry is not None:
            ex.retries_left = route.retry.retries
        if route.mirrors:
            ex.mirrors = [dest for dest, percent in route.mirrors if percent >= 100 or random.random() * 100 < percent]
        if ex.retries_left or ex.mirrors:
            ex.start_replay()
        if ex.expect_continue:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if ex.request_complete:
            self._start_route_timer(ex)
            if ex.mirrors:
                self._send_mirrors(ex)
        self._dispatch(ex)

    # ------------------------------------------------------------------ completion

    def _reply(self, ex: Exchange, status: int, body: bytes = b"", extra=None, close: bool = False) -> None:
        ex.status = status
        ex.response_started = True
        ex.bytes_sent += len(body)
        # Like Envoy on HTTP/1: an answer before the request body was read ends the connection
        # instead of reading (and discarding) a body of any size.
        close = close or not ex.keep_alive or (ex.has_body and not ex.request_complete)
        if close:
            ex.close_after = True
        if ex.extra_response_headers:
            # like Envoy, the proxy's own answers on a CORS route carry the CORS headers too, so
            # a browser sees the real 5xx instead of a CORS failure
            extra = (extra or []) + ex.extra_response_headers
        self.transport.write(http.local_reply(status, b"" if ex.head_request else body, close=close, extra=extra))
        self._finish(ex)

    def _fail(self, ex: Exchange, error: ProxyError) -> None:
        """Answer with the error's local reply, or cut the connection if the response began."""
        ex.flags = error.flags
        self._cancel(ex)
        if ex.response_started:
            ex.finished = True
            self.flush()
            self._log(ex)
            self._close()
            return
        self._reply(ex, error.status, error.body.encode(), close=error.close)

    def _cancel(self, ex: Exchange) -> None:
        if ex.timer is not None:
            ex.timer.cancel()
            ex.timer = None
        if ex.task is not None and not ex.task.done():
            ex.task.cancel()
        self._drop_attempt(ex)

    def _finish(self, ex: Exchange) -> None:
        ex.finished = True
        ex.body = []
        ex.replay = None
        if ex.timer is not None:
            ex.timer.cancel()
            ex.timer = None
        if ex.try_timer is not None:
            ex.try_timer.cancel()
            ex.try_timer = None
        self.gate.unblock(UPSTREAM_FULL | BUFFERED)
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
        if self.advancing:
            return
        # A loop, not recursion: queued exchanges answered locally finish inside _start.
        self.advancing = True
        try:
            while self.queue and not self.closing and not self.queue[0].started:
                if len(self.queue) == 1:
                    self.gate.unblock(PIPELINE)
                self._start(self.queue[0])
        finally:
            self.advancing = False
        if self.queue or self.closing:
            return
        self.gate.unblock(PIPELINE)
        if self.deferred_error is not None:
            self._send_error(self.deferred_error)
        elif self.parsing is None:
            self._arm(self.ctx.limits.idle_timeout, self._idle_expired)

    def _close(self) -> None:
        """Close after the last response. Over TCP, half-close instead and keep reading (and
        discarding) for a moment: closing with unread input makes the kernel send RST, which
        can destroy the response before the client reads it (nginx's lingering close). The
        client's EOF or self.ctx.limits.linger_timeout ends it."""
        self.closing = True
        self._disarm()
        transport = self.transport
        if transport.is_closing():
            self.gate.stopped = True
        elif transport.can_write_eof():
            transport.write_eof()
            self.gate.stop(drain=True)
            self.timer = self.loop.call_later(self.ctx.limits.linger_timeout, transport.close)
        else:
            self.gate.stopped = True
            transport.close()

    def _log(self, ex: Exchange) -> None:
        if self.ctx.access_log.enabled:
            self.ctx.access_log.write(access_entry(ex, self.local, self.peer))

    # ------------------------------------------------------------------ errors on the connection

    def _protocol_error(self, error: ProxyError) -> None:
        """A malformed request: stop reading; answer the exchanges before it, then this error."""
        self.gate.stop()
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

    def upstream_write_paused(self, paused: bool) -> None:
        """The upstream's write buffer filled (stop reading the request body) or drained."""
        if paused:
            self.gate.block(UPSTREAM_FULL)
        else:
            self.gate.unblock(UPSTREAM_FULL)

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self.deadline = self.loop.time() + delay
        self.deadline_cb = callback
        # deadlines fire at most a quarter of the shortest one late (at most a second)
        self.ctx.watch_deadlines(self.loop, min(1.0, self.ctx.limits.header_timeout / 4, self.ctx.limits.idle_timeout / 4, self.ctx.limits.body_timeout / 4))

    def _disarm(self) -> None:
        self.deadline_cb = None

    def _idle_expired(self) -> None:
        if not self.queue and self.parsing is None:
            self._close()

    def _body_expired(self) -> None:
        """The client went silent in the middle of a request body (slow-body attacks): 408 if
        the response has not started, else the connection is cut. Time spent with reading
        paused by the proxy itself (backpressure) does not count."""
        if self.gate.blocked:
            self._arm(self.ctx.limits.body_timeout, self._body_expired)
        else:
            self._protocol_error(errors.RequestTimeout("request body not received in time"))

    def _header_expired(self) -> None:
        if not self.queue:
            self.parsing = None
            self._send_error(errors.RequestTimeout("request headers not received in time"))


class _StopParsing(Exception):
    """Raised from a parser callback to ignore bytes after a request that ends the connection."""


"""The downstream HTTP/1.1 connection: an ``asyncio.Protocol`` driving the I/O-free framing
(``framing.RequestReader``) and the state tables of ``states.py``.

Requests are answered strictly in order (pipelining); only the exchange at the head of the
queue is active, and the reader is held (its unparsed bytes kept, the socket paused) while
``max_pipelined`` requests wait, while a waiting request's body fills ``buffer_limit``, or
while the client is not reading what we write. Routing (``decide.py``) and local replies
are synchronous; forwarding is a ``forward.Forwarder`` that talks back through the
``Downstream`` methods of this class. Every answer the proxy writes itself goes through
``_local``, which also writes the access-log line.

Deadlines are one slot per connection (``deadline``/``deadline_cb``), checked by the
context's sweeper: the header deadline while a head is incomplete (and before the first),
the body deadline while a request body goes silent, the idle deadline between requests,
and within the first two the listener's ``request_timeout`` for the whole request
(``request_deadline``). The stream idle timeout is the sweeper comparing ``progress``
between sweeps.

The connection's limits, timeouts and head rules are the ``ClientPolicy`` of the listener
it belongs to (``PortGroup.listener_for``), taken once in ``connection_made``; a listener
with a ``connection_limit`` closes a connection over it there, before reading a byte.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import cast

from .. import errors
from ..errors import ProxyError
from ..observe import describe
from . import grpc, http, tls
from .client import ClientPolicy
from .context import Context
from .decide import decide
from .encode import encode_trailers, identify, response_head, upstream_request
from .exchange import Exchange, access_entry
from .flow import HOLD, UPSTREAM_FULL, ReadGate
from .forward import Forwarder
from .framing import RequestHead, RequestReader
from .http import H2_PREFACE as PREFACE
from .states import KEEP_ALIVE, REQUEST, Conn, Ev, Req, Resp, step
from .tunnel import Tunnel
from .upstream import UpstreamConnection

log = logging.getLogger("pyproxy.server")

_NONE, _HEADER, _BODY, _IDLE, _REQUEST = range(5)  # which deadline is armed (_REQUEST: request_timeout alone)


class HttpProtocol(asyncio.Protocol):
    """One downstream connection on a listener socket (``group_key`` = (address, port))."""

    transport: asyncio.Transport  # all set by connection_made, before any other callback
    gate: ReadGate
    policy: ClientPolicy
    reader: RequestReader

    def __init__(self, ctx: Context, group_key: tuple[str, int], scheme: str) -> None:
        self.ctx = ctx
        self.limits = ctx.limits
        self.group_key = group_key
        self.scheme = scheme
        self.scheme_b = scheme.encode()
        self.stats = ctx.stats.listener(group_key, scheme)
        self.loop = ctx.loop
        self.admission: tuple[tuple[str, int], str] | None = None  # counted against a connection_limit
        self.keep = Conn.OPEN
        self.queue: deque[Exchange] = deque()  # exchanges not yet answered, in order
        self.reading: Exchange | None = None  # the exchange whose request body is arriving
        self.backlog = b""  # bytes received but not parsed while the reader is held
        self.write_paused = False
        self.pending: list[bytes] | None = None  # response bytes held until the upstream read ends
        self.deferred_error: ProxyError | None = None  # a parse error answered after the queue
        self.advancing = False
        self.served = 0
        self.closed = False
        self.linger: asyncio.TimerHandle | None = None
        self.deadline = 0.0
        self.deadline_kind = _NONE
        self.deadline_cb: Callable[[], None] | None = None
        self.request_deadline = math.inf  # the request being received must be whole by then
        self.progress = 0  # bumped whenever bytes move for the active exchange
        self.progress_seen = 0
        self.progress_at = 0.0
        self.sni: str | None = None
        self.peer = ""
        self.peer_b = b""
        self.local = ""
        self.sniffing = True  # until the first bytes show HTTP/1 or the HTTP/2 preface
        self.sniff = b""
        self.upgrading: Exchange | None = None  # an upgrade request waiting for its answer
        self.tunnel: Tunnel | None = None  # after a 101: every byte is relayed

    def __repr__(self) -> str:
        return (f"<HttpProtocol {self.peer} keep={self.keep.name} queue={list(self.queue)} "
                f"backlog={len(self.backlog)} write_paused={self.write_paused}>")

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        self.gate = ReadGate(self.transport)
        self.stats.cx_total += 1
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")
        self.peer_b = (peer[0] if isinstance(peer, tuple) else "").encode()
        self.local = f"{sock[0]}:{sock[1]}" if isinstance(sock, tuple) else str(sock or "")
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.sni = tls.server_name(ssl_object)
        group = self.ctx.snapshot.groups.get(self.group_key)
        listener = group.listener_for(self.sni) if group is not None else None
        policy = self.policy = listener.policy if listener is not None else self.ctx.default_policy
        self.limits = policy.limits
        self.reader = RequestReader(self, policy.limits, policy.rules)
        if listener is not None and policy.connection_limit is not None:
            key = (self.group_key, listener.name)
            if not self.ctx.admit(key, policy.connection_limit):
                log.debug("%s: %s is at its connection limit (%d): closed", self.peer, listener.name,
                          policy.connection_limit)
                self.stats.cx_limited += 1
                self.closed = True
                self.reader.stop()
                self.transport.close()
                return
            self.admission = key
        if ssl_object is not None:
            if ssl_object.selected_alpn_protocol() == "h2":
                self._become_h2(b"")
                return
            # HTTP/2 with prior knowledge over TLS only where the listener's ALPN offers h2
            self.sniffing = group is None or group.h2_over_tls
        self.ctx.connections.add(self)
        self._arm(_HEADER)  # a connection that sends nothing gets the header deadline

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.to_upstream(data)
            return
        if self.closed:
            return
        if self.sniffing:
            # HTTP/2 with prior knowledge begins with its preface instead of a request
            data = self.sniff + data
            if len(data) < len(PREFACE) and PREFACE.startswith(data):
                self.sniff = data
                return
            self.sniffing = False
            self.sniff = b""
            if data.startswith(PREFACE):
                self._become_h2(data)
                return
        self.progress += 1
        if self.backlog:  # held: keep the order (a TLS transport may deliver after pause)
            self.backlog += data
            return
        self._feed(data)

    def eof_received(self) -> bool | None:
        if self.tunnel is not None:
            return self.tunnel.downstream_eof()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.tunnel is not None:
            self.end_tunnel(self.tunnel.ex)
        self.closed = True
        self.ctx.forget(self)
        if self.admission is not None:
            self.ctx.release(self.admission)
            self.admission = None
        self.deadline_cb = None
        if self.linger is not None:
            self.linger.cancel()
            self.linger = None
        self.reader.stop()
        self.backlog = b""
        for ex in self.queue:
            if ex.resp is not Resp.DONE and ex.resp is not Resp.QUEUED:
                if ex.forwarder is not None:
                    ex.forwarder.cancel()
                ex.lost()
                self._log(ex)
        self.queue.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.tunnel is not None:
            self.tunnel.downstream_full(True)
            return
        if self.queue and self.queue[0].forwarder is not None:
            self.queue[0].forwarder.pause_reading(True)

    def resume_writing(self) -> None:
        self.write_paused = False
        self.progress += 1
        if self.tunnel is not None:
            self.tunnel.downstream_full(False)
            return
        if self.queue and self.queue[0].forwarder is not None:
            self.queue[0].forwarder.pause_reading(False)
        self._advance()

    # ------------------------------------------------------------------ parsing (RequestHandler)

    def _feed(self, data: bytes) -> None:
        try:
            rest = self.reader.feed(data)
        except ProxyError as error:
            self._protocol_error(error)
            return
        except Exception as exc:  # a bug (an InvalidTransition among others): logged, answered 500
            log.error("internal error while reading a request", exc_info=exc)
            self._protocol_error(errors.InternalError("internal error"))
            return
        if rest:
            self.backlog = rest
            self.gate.block(HOLD)
        self._rearm()

    def request_head(self, head: RequestHead) -> None:
        if self.deadline_kind != _HEADER and self.policy.request_timeout:
            # a head parsed at once (not timed as a head): its request's time starts now
            self.request_deadline = self.loop.time() + self.policy.request_timeout
        ex = Exchange(head)
        if head.chunked or head.content_length:
            ex.req = step(REQUEST, Req.HEAD, Ev.HEAD_BODY)
        else:
            ex.req = Req.DONE  # REQUEST[HEAD][HEAD_DONE], the common case spelled out
        if not head.keep_alive:
            self.keep = step(KEEP_ALIVE, self.keep, Ev.LAST)
        self.reading = ex
        if head.upgrade:
            self.upgrading = ex
        self.queue.append(ex)
        if len(self.queue) == 1 and not self.write_paused:
            self._start(ex)
        if not self._may_read():
            self.reader.hold()

    def request_body(self, data: bytes) -> None:
        ex = self.reading
        assert ex is not None
        ex.bytes_received += len(data)
        if self.deadline_kind == _BODY:
            self.deadline = min(self.loop.time() + self.limits.body_timeout, self.request_deadline)
        if ex.resp is Resp.DONE:
            return  # answered already; the connection closes once this read is done
        forwarder = ex.forwarder
        if forwarder is not None:
            forwarder.body_received(data)
            return
        ex.body.append(data)  # queued behind another exchange, or being routed
        ex.body_size += len(data)
        if ex.body_size > self.limits.buffer_limit:
            self.reader.hold()

    def request_end(self) -> None:
        ex = self.reading
        assert ex is not None
        self.reading = None
        self.request_deadline = math.inf
        if ex.req is Req.BODY:
            ex.req = step(REQUEST, ex.req, Ev.BODY_END)
            if ex.forwarder is not None and ex.resp is not Resp.DONE:
                ex.forwarder.end_request()
        if self.keep is not Conn.OPEN:
            self.reader.stop()  # nothing after the last request is parsed, let alone forwarded
            self.backlog = b""
        if ex.resp is Resp.DONE:
            self._advance()
        elif not self._may_read():
            self.reader.hold()

    def _may_read(self) -> bool:
        """Whether the reader may go on now (else it holds what it has not parsed)."""
        reading = self.reading
        if reading is not None:
            # the body of a request that is not being forwarded yet is held at buffer_limit
            return reading.forwarder is not None or reading.body_size <= self.limits.buffer_limit
        if self.keep is not Conn.OPEN or self.closed or self.upgrading is not None:
            return False  # (after an upgrade request: the answer says what the next bytes are)
        if self.write_paused:
            return False  # the client is not reading our answers: read no further requests
        return len(self.queue) < self.limits.max_pipelined

    # ------------------------------------------------------------------ exchanges

    def _start(self, ex: Exchange) -> None:
        """Route the exchange at the head of the queue; answer it or start forwarding."""
        ex.advance(Ev.START)
        if ex.head.upgrade and ex.head.upgrade != b"websocket":
            # Envoy's default upgrade_configs allow websocket only
            self._local(ex, 403, details="upgrade_failed")
            return
        try:
            local = decide(self.ctx.snapshot, self.group_key, self.sni, self.scheme, ex)
        except ProxyError as error:
            self._local(ex, error.status, error.body.encode(), flags=error.flags, details=error.details,
                        close=error.close)
            return
        if local is not None:
            self._local(ex, local.status, local.body, local.headers, details=local.details)
            return
        route, backend = ex.route, ex.backend
        assert route is not None and backend is not None
        request = upstream_request(ex, route, backend, self.peer_b, self.scheme_b, self.policy)
        ex.advance(Ev.FORWARD)
        forwarder = ex.forwarder = Forwarder(self, ex, route, backend, request)
        forwarder.start(ex.req is Req.DONE)

    def _advance(self) -> None:
        """Move on after an exchange: drop the answered ones, start the next queued one,
        parse what was held back, close when the connection ends. A loop, not recursion:
        exchanges answered locally finish inside ``_start``."""
        if self.advancing or self.closed:
            return
        queue = self.queue
        if (len(queue) == 1 and queue[0].resp is Resp.DONE and queue[0].req is Req.DONE and self.keep is Conn.OPEN
                and not self.backlog and not self.reader.held and self.deferred_error is None):
            queue.popleft()  # the common case: one request answered, nothing waiting
            self._rearm()
            return
        self.advancing = True
        try:
            queue = self.queue
            while True:
                while queue and queue[0].resp is Resp.DONE and (queue[0].req is Req.DONE or self.keep is Conn.CLOSING):
                    queue.popleft()
                if not queue and self.deferred_error is not None:
                    # a malformed request after the ones just answered: its answer comes last
                    error, self.deferred_error = self.deferred_error, None
                    self._local(Exchange(None), error.status, error.body.encode(), flags=error.flags,
                                details=error.details, close=True)
                    continue
                if self.keep is Conn.CLOSING or (self.keep is Conn.LAST and not queue and self.reading is None):
                    if not queue or queue[0].resp is Resp.QUEUED:
                        self._close()
                        return
                    break
                if queue:
                    first = queue[0]
                    if first.resp is Resp.QUEUED and not self.write_paused:
                        self._start(first)
                        continue
                    if not self._may_read():
                        break
                if self._may_read():
                    if self.reader.held:
                        self.reader.release()
                    data, self.backlog = self.backlog, b""
                    if self.gate.blocked & HOLD:
                        self.gate.unblock(HOLD)
                    if data:
                        self._feed(data)
                        continue
                break
        finally:
            self.advancing = False
        self._rearm()

    def _finish(self, ex: Exchange) -> None:
        """The exchange's answer is complete (or cut short)."""
        if ex is self.upgrading:
            self.upgrading = None  # answered without a switch: the connection goes on as HTTP
        self._log(ex)
        self.served += 1
        if ex.req is not Req.DONE:
            # answered before its body was read: like Envoy on HTTP/1, close instead of
            # reading (and discarding) a body of any size
            self.keep = step(KEEP_ALIVE, self.keep, Ev.CLOSE)
            self.reader.stop()
            self.reading = None
            self.backlog = b""
        if self.gate.blocked & UPSTREAM_FULL:
            self.gate.unblock(UPSTREAM_FULL)
        self._advance()

    # ------------------------------------------------------------------ writing (Downstream)

    def send_head(self, ex: Exchange, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.progress += 1
        try:
            data, close = response_head(ex, status, reason, headers, close=self._closes_after(ex))
        except ProxyError as error:
            self.fail(ex, error)
            return
        ex.advance(Ev.HEAD)
        ex.status = status
        ex.details = "via_upstream"
        if close:
            self.keep = step(KEEP_ALIVE, self.keep, Ev.CLOSE)
        self.pending = [data]

    def send_body(self, ex: Exchange, data: bytes) -> None:
        self.progress += 1
        ex.bytes_sent += len(data)
        pending = self.pending
        if pending is not None:
            if len(data) <= self.limits.coalesce_limit:
                if ex.chunked_out:
                    pending.extend((b"%x\r\n" % len(data), data, b"\r\n"))
                else:
                    pending.append(data)
                return
            self.flush()
        if ex.chunked_out:
            self.transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            self.transport.write(data)

    def send_trailers(self, ex: Exchange, trailers: list[tuple[bytes, bytes]]) -> None:
        """A chunked response carries them in its last chunk, written here (so ``end`` writes
        no other); a response framed by Content-Length or by the close cannot: dropped."""
        if ex.chunked_out:
            ex.chunked_out = False
            data = encode_trailers(trailers)
            if self.pending is not None:
                self.pending.append(data)
            else:
                self.transport.write(data)

    def flush(self) -> None:
        pending, self.pending = self.pending, None
        if pending and not self.closed:
            self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def end(self, ex: Exchange) -> None:
        if ex.chunked_out:
            if self.pending is not None:
                self.pending.append(b"0\r\n\r\n")
            else:
                self.transport.write(b"0\r\n\r\n")
        self.flush()
        ex.advance(Ev.END)
        self._finish(ex)

    def fail(self, ex: Exchange, error: ProxyError) -> None:
        """Answer with the error's local reply, or cut the connection if the response began."""
        tunnel = self.tunnel
        if tunnel is not None:
            self.tunnel = None
            tunnel.close()
        if ex.forwarder is not None:
            ex.forwarder.cancel()
        if ex.response_started:
            ex.cut(error)
            self.flush()
            self.keep = step(KEEP_ALIVE, self.keep, Ev.CLOSE)
            self._finish(ex)
            return
        self._local(ex, error.status, error.body.encode(), flags=error.flags, details=error.details,
                    close=error.close)

    def pause_request(self, paused: bool) -> None:
        if paused:
            self.gate.block(UPSTREAM_FULL)
        elif self.gate.blocked & UPSTREAM_FULL:
            self.progress += 1
            self.gate.unblock(UPSTREAM_FULL)
            self._rearm()  # the body deadline counts again

    def continue_request(self, ex: Exchange) -> None:
        if ex.head.expect_continue and ex.req is Req.BODY and not ex.bytes_received:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _become_h2(self, first: bytes) -> None:
        """Hand the transport to an HTTP/2 connection (ALPN h2, or the preface in clear)."""
        # The first HTTP/2 connection imports the h2 library (50 ms once on our 2-core
        # machines): 1.6 MiB of RSS that a process no HTTP/2 client reaches does not carry.
        from .h2 import H2Protocol

        self.closed = True
        self.ctx.forget(self)
        self.deadline_cb = None
        self.reader.stop()
        proto = H2Protocol(self.ctx, self.group_key, self.scheme, self.sni, self.peer, self.peer_b, self.local,
                           self.stats, self.policy, self.admission)
        self.admission = None  # the HTTP/2 connection releases it
        self.transport.set_protocol(proto)
        proto.connection_made(self.transport)
        if first:
            proto.data_received(first)

    def start_tunnel(self, ex: Exchange, conn: UpstreamConnection, first: bytes) -> None:
        self.flush()  # the 101
        self.upgrading = None
        ex.forwarder = None
        tunnel = self.tunnel = conn.tunnel = Tunnel(self, conn, ex)
        self.stats.cx_upgrades_total += 1
        self.keep = step(KEEP_ALIVE, self.keep, Ev.CLOSE)  # the connection ends with the tunnel
        self.reader.stop()
        if first:
            tunnel.to_downstream(first)
        backlog, self.backlog = self.backlog, b""
        if backlog:  # sent right after the upgrade request, before the 101 came back
            tunnel.to_upstream(backlog)
        if self.gate.blocked & HOLD:
            self.gate.unblock(HOLD)
        if self.write_paused:
            tunnel.downstream_full(True)

    def end_tunnel(self, ex: Exchange) -> None:
        """The tunnel is over (both sides ended, or one was lost): close the upstream side,
        log the exchange (status 101, the tunnel's duration and bytes) and close."""
        tunnel = self.tunnel
        if tunnel is None:
            return
        self.tunnel = None
        tunnel.close()
        if ex.resp is Resp.SENDING:
            ex.advance(Ev.END)
            self._finish(ex)
        if not self.transport.is_closing():
            self.transport.close()

    def _closes_after(self, ex: Exchange) -> bool:
        """Whether the response now being written is the connection's last: its request
        ends the connection (or its body will not be read), the connection is closing and
        nothing else will be answered (a deferred error still is), or no request after this
        one will be read (``LAST``, e.g. draining) and none is waiting behind it."""
        if not ex.head.keep_alive or ex.req is not Req.DONE:
            return True
        if self.deferred_error is not None:
            return False
        if self.keep is Conn.CLOSING:
            return True
        # (``reading`` is still ``ex`` while a bodiless request is answered inside its own parse)
        return (self.keep is Conn.LAST and (self.reading is None or self.reading is ex)
                and (not self.queue or self.queue[-1] is ex))

    def drain(self) -> None:
        """Stop serving this connection gracefully (shutdown, or its listener removed by a
        reload): an idle keep-alive connection closes now; otherwise the requests already
        received are answered, the last with ``Connection: close``, and nothing more is read.
        A connection that has not sent its first request yet gets that one answered."""
        if self.closed:
            return
        self.keep = step(KEEP_ALIVE, self.keep, Ev.LAST)
        if self.served and not self.queue and self.reading is None and not self.reader.in_head:
            self._close()

    # ------------------------------------------------------------------ the one local-reply path

    def _local(self, ex: Exchange, status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None,
               *, flags: str = "-", details: str = "", close: bool = False) -> None:
        """Write an answer of the proxy's own (an error, a redirect, a direct response, a
        CORS preflight) and its access-log line. Fixed bodies; request bytes never echoed.
        To a gRPC call, a gRPC status (``grpc.py``): 200 with the status in the head."""
        ex.advance(Ev.LOCAL)
        identify(ex, self.policy)
        if grpc.is_grpc(ex.head.headers):
            headers = grpc.status_headers(status, body) + (headers or [])
            status, body = 200, b""
        ex.status = status
        ex.flags = flags
        ex.details = details
        if close:
            self.keep = step(KEEP_ALIVE, self.keep, Ev.CLOSE)
        close = self._closes_after(ex)
        if ex.cors_headers:
            # like Envoy, the proxy's own answers on a CORS route carry the CORS headers too,
            # so a browser sees the real 5xx instead of a CORS failure
            headers = (headers or []) + ex.cors_headers
        if ex.head.method == "HEAD":
            body = b""
        ex.bytes_sent += len(body)
        if not self.closed:
            self.transport.write(http.local_reply(status, body, close=close, extra=headers))
        if close:
            self.keep = step(KEEP_ALIVE, self.keep, Ev.CLOSE)
        self._finish(ex)

    def _log(self, ex: Exchange) -> None:
        """Count the finished exchange and write its access-log line (once per exchange)."""
        ms = (time.monotonic() - ex.start_mono) * 1000
        stats = self.stats
        stats.rq_xx[ex.status // 100] += 1
        stats.rq_time.record(ms)
        access_log = self.ctx.access_log
        debug = log.isEnabledFor(logging.DEBUG)
        if access_log.enabled or debug:
            entry = access_entry(ex, self.local, self.peer, ms)
            if access_log.enabled:
                access_log.write(entry)
            if debug:
                log.debug("%s %s", self.peer, describe(entry))

    # ------------------------------------------------------------------ errors and closing

    def _protocol_error(self, error: ProxyError) -> None:
        """A malformed request: nothing more is parsed; the exchanges before it are answered,
        then this error, then the connection closes."""
        self.reader.stop()
        self.backlog = b""
        self.keep = step(KEEP_ALIVE, self.keep, Ev.CLOSE)
        ex = self.reading
        self.reading = None
        if ex is not None and ex in self.queue:
            if ex is self.queue[0] and ex.resp is not Resp.DONE:
                self.fail(ex, error)
                return
            if ex is not self.queue[0]:
                self.queue.remove(ex)
                self.deferred_error = error
        elif self.queue:
            self.deferred_error = error
        else:
            self._local(Exchange(None), error.status, error.body.encode(), flags=error.flags,
                        details=error.details, close=True)
            return
        self._advance()

    def _close(self) -> None:
        """Close after the last response. Over TCP, half-close instead and keep reading (and
        discarding) for a moment: closing with unread input makes the kernel send RST, which
        can destroy the response before the client reads it (nginx's lingering close). The
        client's EOF or ``linger_timeout`` ends it."""
        if self.closed:
            return
        self.closed = True
        self.deadline_cb = None
        self.reader.stop()
        self.backlog = b""
        transport = self.transport
        if transport.is_closing():
            self.gate.stopped = True
        elif transport.can_write_eof():
            transport.write_eof()
            self.gate.stop(drain=True)
            self.linger = self.loop.call_later(self.limits.linger_timeout, transport.close)
        else:
            self.gate.stopped = True
            transport.close()

    # ------------------------------------------------------------------ deadlines

    def _rearm(self) -> None:
        """Arm the deadline the connection's state calls for (an armed one of the same kind
        keeps its time: a trickle of header bytes does not extend the header deadline)."""
        if self.closed:
            return
        if self.queue or self.reading is not None:
            reading = self.reading
            if reading is not None and reading.req is Req.BODY:
                # time the proxy paused reading (backpressure) counts for request_timeout alone
                kind = _BODY if not self.gate.blocked else _REQUEST if self.request_deadline < math.inf else _NONE
            else:
                kind = _NONE
        elif self.reader.in_head or not self.served:
            kind = _HEADER
        else:
            kind = _IDLE
        if kind != self.deadline_kind or (kind != _NONE and self.deadline_cb is None):
            self._arm(kind)

    def _arm(self, kind: int) -> None:
        self.deadline_kind = kind
        if kind == _NONE:
            self.deadline_cb = None
            return
        limits = self.limits
        now = self.loop.time()
        if kind == _IDLE:
            deadline = now + limits.idle_timeout
        elif kind == _HEADER:
            if self.policy.request_timeout:
                self.request_deadline = now + self.policy.request_timeout  # a request begins
            deadline = min(now + limits.header_timeout, self.request_deadline)
        elif kind == _BODY:
            deadline = min(now + limits.body_timeout, self.request_deadline)
        else:
            deadline = self.request_deadline
        self.deadline = deadline
        self.deadline_cb = self._expired
        self.ctx.watch_deadlines()

    def _expired(self) -> None:
        kind = self.deadline_kind
        self.deadline_kind = _NONE
        if kind != _IDLE and self.request_deadline <= self.loop.time():
            self._request_timeout(kind)
        elif kind == _IDLE:
            if not self.queue and self.reading is None and not self.reader.in_head:
                self._close()
        elif kind == _HEADER:
            if self.queue:
                return
            if not self.served and not self.reader.in_head:
                self._close()  # it never sent a byte: nothing to answer (as nginx)
            else:
                self._protocol_error(errors.RequestTimeout("request headers not received in time"))
        elif kind == _BODY:
            # time with reading paused by the proxy itself (backpressure) does not count
            if self.gate.blocked:
                self._arm(_BODY)
            else:
                self._protocol_error(errors.RequestBodyTimeout("request body not received in time"))

    def _request_timeout(self, kind: int) -> None:
        """The listener's ``request_timeout`` passed before the request was whole: 408 and
        close, as the header deadline (a connection that never sent a byte just closes). Like
        Envoy's, it no longer applies once the response has begun."""
        error = errors.RequestOverallTimeout("request not received in time")
        if kind == _HEADER:
            if self.queue:
                return
            if not self.served and not self.reader.in_head:
                self._close()
            else:
                self._protocol_error(error)
            return
        ex = self.reading
        if ex is None or ex.resp is Resp.SENDING or ex.resp is Resp.DONE:
            self.request_deadline = math.inf
            self._rearm()
            return
        self._protocol_error(error)

    def stream_idle(self, now: float) -> None:
        """Called by the sweeper: cut the active exchange if nothing moved for too long."""
        if self.progress != self.progress_seen or not self.queue:
            self.progress_seen = self.progress
            self.progress_at = now
            return
        ex = self.queue[0]
        if ex.resp is Resp.QUEUED or ex.resp is Resp.DONE:
            self.progress_at = now
            return
        if now - self.progress_at >= self.limits.stream_idle_timeout:
            self.progress_at = now
            self.fail(ex, errors.StreamIdleTimeout())


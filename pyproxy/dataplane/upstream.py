"""The upstream side of a proxied request: an ``asyncio.Protocol`` over httptools' response
parser. Parser callbacks only build state and hand each piece to the current ``sink`` (the
downstream exchange), which writes it on; nothing here awaits.

``Upstream`` is what forwarding sees of the way to the upstream: this module's HTTP/1.1
``UpstreamConnection``, or a stream of a shared HTTP/2 connection (``upstream_h2``); the
forwarder does not know which protocol the upstream speaks.
"""
from __future__ import annotations

import asyncio
import logging
import select
import ssl
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple, cast
from typing import Protocol as TypingProtocol

import httptools

from ..errors import ProxyError, UpstreamProtocolError, UpstreamReset
from ..stats import HostStats
from .encode import UpstreamRequest, http1_head
from .limits import Limits

if TYPE_CHECKING:
    from .tunnel import Tunnel

log = logging.getLogger("pyproxy.upstream")


HELD_WRITE_DELAY = 0.01  # longest wait of request body bytes for a pending read (send_body)


class PoolKey(NamedTuple):
    """What makes two upstream connections interchangeable (aiohttp's ``ConnectionKey``).

    It holds the ``SSLContext`` itself, compared and hashed by identity, not ``id(context)``:
    once a context is garbage collected (a reload dropped its settings) a new context may get
    the same id, and a connection made with the old trust and client certificate would then be
    handed to requests that want the new ones. Holding the context also keeps it alive while
    connections made with it are pooled."""

    host: str
    port: int
    unix: bool
    ssl_context: ssl.SSLContext | None
    sni: str | None
    http2: bool = False  # the destination speaks HTTP/2 (over TLS: if the server selects it)


class ResponseSink(TypingProtocol):
    """What an upstream connection feeds: the exchange that sent the request."""

    def response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None: ...

    def response_body(self, data: bytes) -> None: ...

    def response_trailers(self, trailers: list[tuple[bytes, bytes]]) -> None:
        """The response's trailer fields (before its end); sent only when it has some."""

    def response_end(self, reusable: bool) -> None: ...

    def upstream_failed(self, error: ProxyError) -> None: ...

    def flush(self) -> None:
        """The current read has been processed: send what was held back."""

    def upstream_pause(self) -> None: ...

    def upstream_resume(self) -> None: ...

    def upgraded(self, conn: UpstreamConnection, first: bytes) -> None:
        """The upstream switched protocols (the 101 went to ``response_head``): the
        connection is the sink's now, as a tunnel; ``first`` is what followed the 101."""


class Upstream(TypingProtocol):
    """One request's way upstream, as forwarding and mirrors use it: an HTTP/1.1
    ``UpstreamConnection``, or an ``upstream_h2.H2Stream`` of a shared HTTP/2 connection.
    Body pieces are raw bytes: the framing (chunked, DATA frames) is the connection's."""

    key: PoolKey

    @property
    def closed(self) -> bool:
        """No (further) use: closed, lost, or over."""

    @property
    def sink(self) -> ResponseSink | None:
        """Whom the response goes to; None once it ended (or before ``start``)."""

    def start(self, sink: ResponseSink, request: UpstreamRequest, head_request: bool, upgrade: bool = False) -> None:
        """Send the request head; the response goes to ``sink``."""

    def send_body(self, pieces: Sequence[bytes]) -> None: ...

    def end_body(self) -> None:
        """The request body is complete."""

    def pause_response(self, paused: bool) -> None:
        """Stop (or resume) reading the response: the client is not taking it."""

    def close(self) -> None: ...

    def abort(self) -> None: ...


class UpstreamConnection(asyncio.BufferedProtocol):
    """One keep-alive connection to an upstream address; carries one request at a time.

    A ``BufferedProtocol`` reading into one reused buffer: with a plain ``Protocol`` the loop
    allocates a fresh bytes object per read, and large responses then churn the allocator
    (measured: half the throughput on a 1 MiB body, depending on glibc's mmap threshold).
    httptools copies what it hands to the callbacks, so reusing the buffer is safe.

    Any response byte that arrives while no request is waiting for it (bytes after a complete
    response, a body on a HEAD response, anything while idle in the pool) poisons the
    connection: it is aborted, never reused, because its framing can no longer be trusted.
    The end of a response is reported only once the read that completed it has been parsed
    whole, so extra bytes in the same read are seen before anyone can reuse the connection
    (and so can never become the answer to the next request)."""

    __slots__ = ("key", "limits", "transport", "parser", "sink", "closed", "head_request", "_headers", "_reason",
                 "_informational", "_status", "_close_delimited", "_head_bytes", "_read_size", "on_close",
                 "idle_since", "idle_timeout", "_view", "_complete", "_ended", "_readable", "_held", "_held_timer",
                 "host", "upgrade", "_switching", "tunnel", "chunked")

    transport: asyncio.Transport  # set by connection_made, before the pool hands it out
    host: HostStats  # set by the pool with on_close: whose cx_active this connection counts in

    def __init__(self, key: PoolKey, limits: Limits) -> None:
        self.key = key  # the pool's PoolKey
        self.limits = limits
        self._view = memoryview(bytearray(limits.upstream_read_buffer))
        self.parser = httptools.HttpResponseParser(self)
        self.sink: ResponseSink | None = None
        self.closed = False
        self.head_request = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._status = 0
        self._informational = False
        self._close_delimited = False
        self._head_bytes = 0  # bytes of the reads that ended inside the response head
        self._read_size = 0  # bytes of the read being parsed
        # set by the pool: called once, when closed by anyone or lost
        self.on_close: Callable[[UpstreamConnection], None] | None = None
        self.idle_since = 0.0  # loop time when the pool took it back
        self.idle_timeout = limits.pool_idle_timeout  # set by the pool: its destination's
        self._complete: bool | None = None  # a response ended in this read (keep-alive or not)
        self._readable: select.poll | None = None  # polls the socket for pending input
        self._held: list[bytes] | None = None  # request body bytes waiting for a read (send_body)
        self._held_timer: asyncio.TimerHandle | None = None
        self._ended: ResponseSink | None = None  # whom to tell once the read is parsed
        self.upgrade = False  # the request asked to switch protocols: a 101 is an answer
        self._switching = False  # a 101 arrived; what follows its head is the other protocol
        self.tunnel: Tunnel | None = None  # after the switch: the bytes are the tunnel's
        self.chunked = False  # the current request's body is sent chunked

    # ------------------------------------------------------------------ used by the exchange (Upstream)

    def start(self, sink: ResponseSink, request: UpstreamRequest, head_request: bool, upgrade: bool = False) -> None:
        self.sink = sink
        self.head_request = head_request
        self.upgrade = upgrade
        self.chunked = request.chunked
        head = request.h1
        if head is None:
            head = request.h1 = http1_head(request)
        self.transport.write(head)

    def send_body(self, pieces: Sequence[bytes]) -> None:
        if self.chunked:
            framed: list[bytes] = []
            for piece in pieces:
                if piece:  # (an empty chunk would end the body)
                    framed += (b"%x\r\n" % len(piece), piece, b"\r\n")
            pieces = framed
        self._write(pieces)

    def end_body(self) -> None:
        if self.chunked:
            self._write((b"0\r\n\r\n",))

    def pause_response(self, paused: bool) -> None:
        if self.closed:
            return
        if paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def _write(self, pieces: Sequence[bytes]) -> None:
        """Write request body bytes, unless the upstream has something for us to read first.

        An upstream may answer before it has read the whole body (413, 401) and close; the
        kernel then resets the connection, and a write after that fails and makes the loop
        drop the connection without reading the answer already received (Linux still holds
        it). So when the socket is readable, the bytes wait until its read has been handled
        (the answer is relayed, or the reset is seen) — or, for a read that yields no
        response bytes (a TLS record of its own), until ``HELD_WRITE_DELAY``."""
        if self.closed:
            return
        held = self._held
        if held is not None:
            held.extend(pieces)
            return
        if self._readable is not None and self._readable.poll(0):
            self._held = list(pieces)
            self._held_timer = asyncio.get_running_loop().call_later(HELD_WRITE_DELAY, self._release)
            return
        self.transport.writelines(pieces)

    def _release(self) -> None:
        """Write what ``send_body`` held back (the read it waited for has been handled)."""
        held, self._held = self._held, None
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None
        if held and not self.closed:
            self.transport.writelines(held)

    def close(self) -> None:
        self.sink = None
        self._drop_held()
        if not self.closed:
            self.closed = True
            self.transport.close()
            self._gone()

    def abort(self) -> None:
        self.sink = None
        self._drop_held()
        if not self.closed:
            self.closed = True
            self.transport.abort()
            self._gone()

    def _gone(self) -> None:
        """Tell the pool, once: the connection no longer counts against its limit from the
        moment it is closed, not when the transport has finished flushing."""
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            on_close(self)

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._readable = select.poll()
            self._readable.register(sock.fileno(), select.POLLIN)

    def _drop_held(self) -> None:
        self._held = None
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._view[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.to_downstream(bytes(data))
            return
        sink = self.sink
        if sink is None:
            self.abort()
            return
        self._read_size = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if not self._switching:
                self._fail(UpstreamProtocolError("upgrade response"))
                return
            self._switching = False
            self.sink = None
            self._drop_held()
            sink.upgraded(self, bytes(data[exc.args[0]:]))
            return
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _HeadResponseDone):
                # the parser was stopped after a HEAD response's head: bytes after it poison it
                self._ended_read(self._complete is True and bytes(data[-4:]) == b"\r\n\r\n")
                return
            if self._ended is not None:
                self._ended_read(False)  # bytes after a complete response
                return
            if isinstance(cause, ProxyError):
                self._fail(cause)
                return
            if cause is not None:
                log.error("internal error while relaying a response", exc_info=cause)
            self._fail(UpstreamProtocolError(f"invalid response: {exc}"))
            return
        if self._ended is not None:
            self._ended_read(bool(self._complete))
            return
        sink.flush()
        if self._held is not None:
            self._release()
        if self._status == 0 and self.sink is not None:
            # Still inside the head: httptools buffers a header line until it ends, so bound it
            # here; a head that arrives within one read is bounded in on_headers_complete.
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_response_header_bytes:
                self._fail(UpstreamProtocolError("response headers too large"))
        elif self._headers and _too_many(self._headers, self.limits):
            self._fail(UpstreamProtocolError("response trailers too large"))  # (trailers, collected so far)

    def _ended_read(self, reusable: bool) -> None:
        """The read that completed a response has been parsed: report the end."""
        sink, self._ended = self._ended, None
        self._complete = None
        if self._held is not None:
            reusable = False  # answered before the whole request was sent: never reused
        if not reusable:
            self.abort()
        assert sink is not None
        sink.response_end(reusable)

    def eof_received(self) -> bool:
        if self.tunnel is not None:
            return self.tunnel.upstream_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._gone()
        if self.tunnel is not None:
            self.tunnel.upstream_lost()
            return
        sink, self.sink = self.sink, None
        if sink is not None:
            # A response without framing ends at close; anything else was cut short.
            if self._status and not self._informational and self._close_delimited:
                sink.response_end(False)
            else:
                sink.upstream_failed(UpstreamReset("connection closed by upstream"))

    def pause_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.upstream_full(True)
        elif self.sink is not None:
            self.sink.upstream_pause()

    def resume_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.upstream_full(False)
        elif self.sink is not None:
            self.sink.upstream_resume()

    # ------------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        if self.sink is None:
            raise UpstreamProtocolError("response without a request")
        self._headers = []
        self._reason = b""
        self._status = 0
        self._head_bytes = 0
        self._close_delimited = False

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        # checked once the head is complete: until then one read (bounded by the buffer) is
        # all it can hold, and a head over several reads is bounded in data_received
        headers = self._headers
        limits = self.limits
        if len(headers) > limits.max_response_headers or (
                self._head_bytes + self._read_size > limits.max_response_header_bytes  # else it cannot be
                and _too_many(headers, limits)):
            raise UpstreamProtocolError("response headers too large")
        status = self.parser.get_status_code()
        self._status = status
        if status == 101:
            if not self.upgrade:
                raise UpstreamProtocolError("101 Switching Protocols without an upgrade request")
            self._switching = True  # llhttp stops after this head (HttpParserUpgrade)
            assert self.sink is not None
            self.sink.response_head(status, self._reason, self._headers)
            return
        if status < 200:
            self._informational = True
            return
        self._informational = False
        self._close_delimited = not (status in (204, 304) or self.head_request or _framed(self._headers))
        sink = self.sink
        assert sink is not None  # on_message_begin refuses a response nobody asked for
        sink.response_head(status, self._reason, self._headers)
        self._headers = []  # what on_header collects from now on are the trailers
        if self.head_request and self.sink is not None:
            # httptools cannot be told the request was HEAD; the response is complete now and
            # a fresh parser takes the next one (the old one would wait for a body).
            keep_alive = self.parser.should_keep_alive()
            self.parser = httptools.HttpResponseParser(self)
            self._finish(keep_alive)
            raise _HeadResponseDone

    def on_body(self, body: bytes) -> None:
        if self.sink is None:
            raise UpstreamProtocolError("body bytes after the response")
        self.sink.response_body(body)

    def on_message_complete(self) -> None:
        if self._switching:
            return
        if self._informational:
            self._informational = False
            return
        sink = self.sink
        if sink is not None:
            if self._headers:
                trailers, self._headers = self._headers, []
                if _too_many(trailers, self.limits):
                    raise UpstreamProtocolError("response trailers too large")
                sink.response_trailers(trailers)
            self._finish(self.parser.should_keep_alive())

    def _finish(self, keep_alive: bool) -> None:
        """The response is complete; its end is reported once the current read is parsed."""
        self._ended, self.sink = self.sink, None
        self._complete = keep_alive

    def _fail(self, error: ProxyError) -> None:
        self._ended = None
        sink = self.sink
        self.abort()
        if sink is not None:
            sink.upstream_failed(error)


class _HeadResponseDone(Exception):
    """Raised from the parser callback to stop parsing after a HEAD response's head."""


def _too_many(headers: list[tuple[bytes, bytes]], limits: Limits) -> bool:
    """Whether a response's header (or trailer) fields pass the response header limits."""
    return (len(headers) > limits.max_response_headers
            or sum(len(n) + len(v) + 4 for n, v in headers) > limits.max_response_header_bytes)


def _framed(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the response says where its body ends: a Content-Length, or a
    Transfer-Encoding whose final coding is chunked (else the body runs to the close)."""
    framed = False
    for name, value in headers:
        if name == b"content-length":
            framed = True
        elif name == b"transfer-encoding":
            framed = value.rstrip().lower().endswith(b"chunked")
    return framed

"""HTTP/2 to upstreams (the h2 library, client side): one connection carries many requests at
once, each an ``H2Stream`` that forwarding drives through the same ``Upstream`` interface as
an HTTP/1.1 ``UpstreamConnection``, so it never knows which protocol the upstream speaks.

- Capacity: a connection carries at most ``Limits.upstream_max_streams`` streams, fewer when
  the server's MAX_CONCURRENT_STREAMS says so. The pool reserves a stream (``reserve``) before
  handing it out and hears of every change of room (``on_capacity``): a stream that ended, a
  new setting, a GOAWAY. Stream ids are taken at ``start``, so they go out in order.
- Request bodies leave in DATA frames within the server's windows. What the windows do not
  take waits in the stream; past ``buffer_limit`` (or while the socket's buffer is full) the
  client's side stops sending (``upstream_pause``) until a WINDOW_UPDATE drains it.
- Response DATA is acknowledged (the windows reopened) as the client's side takes it: at once,
  or, while it cannot (``pause_response``), when it resumes; the upstream can then send at
  most a stream window ahead.
- Trailers go to the sink before the end. A response that ends with its head (gRPC's
  trailers-only answer) ends right after it.
- Failures: a stream reset by the server fails like a connection reset on HTTP/1.1
  (``UpstreamStreamReset``; REFUSED_STREAM is ``UpstreamRefused``: never processed, safe to
  send again). GOAWAY: no new stream; those above its last stream id were never processed
  (``UpstreamRefused``), the others finish, and the connection closes when none is left. A
  protocol error or the connection's loss fails every stream.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from ..errors import ProxyError, UpstreamProtocolError, UpstreamRefused, UpstreamReset, UpstreamStreamReset
from ..stats import HostStats
from .encode import UpstreamRequest, http2_headers
from .h2flow import SparingConnection, send_within_window
from .limits import Limits
from .upstream import PoolKey, ResponseSink

log = logging.getLogger("pyproxy.upstream_h2")

STREAM_WINDOW = 256 * 1024  # what the upstream may send ahead on one stream
CONNECTION_WINDOW = 16 * 1024 * 1024  # ... and on the whole connection
_DEFAULT_WINDOW = 65535  # the connection window before our WINDOW_UPDATE

Headers = list[tuple[bytes, bytes]]


class H2Stream:
    """One request on an ``H2UpstreamConnection`` (an ``upstream.Upstream``): reserved by the
    pool, opened by ``start``, over once it ended both ways, was reset, or was given back."""

    __slots__ = ("owner", "key", "id", "sink", "out", "out_size", "ending", "sent_end", "acks", "response_paused",
                 "request_paused", "finished")

    def __init__(self, owner: H2UpstreamConnection) -> None:
        self.owner = owner
        self.key = owner.key
        self.id = 0  # taken at start
        self.sink: ResponseSink | None = None
        self.out: list[bytes] = []  # request body the windows do not take yet
        self.out_size = 0
        self.ending = False  # the request body is complete once ``out`` is sent
        self.sent_end = False  # our END_STREAM went out
        self.acks = 0  # response bytes taken while paused: acknowledged on resume
        self.response_paused = False
        self.request_paused = False  # the client's side was told to stop sending the body
        self.finished = False

    def __repr__(self) -> str:
        return f"<H2Stream {self.id} out={self.out_size} ending={self.ending} finished={self.finished}>"

    @property
    def closed(self) -> bool:
        owner = self.owner
        return self.finished or owner.closed or (not self.id and owner.goaway)

    def start(self, sink: ResponseSink, request: UpstreamRequest, head_request: bool, upgrade: bool = False) -> None:
        self.owner.open_stream(self, sink, request)

    def send_body(self, pieces: Sequence[bytes]) -> None:
        if self.finished or self.sent_end:
            return
        for piece in pieces:
            if piece:
                self.out.append(piece)
                self.out_size += len(piece)
        self.owner.pump(self)

    def end_body(self) -> None:
        if not self.finished:
            self.ending = True
            self.owner.pump(self)

    def pause_response(self, paused: bool) -> None:
        self.response_paused = paused
        if not paused and self.acks and not self.finished:
            self.owner.acknowledge(self)

    def close(self) -> None:
        """Give the stream back: reset it if it is still open our way (an answer that came
        before the whole request), or free its reservation if it never started."""
        self.owner.finish(self, h2.errors.ErrorCodes.CANCEL)

    def abort(self) -> None:
        self.owner.finish(self, h2.errors.ErrorCodes.CANCEL)


class H2UpstreamConnection(asyncio.Protocol):
    """One HTTP/2 connection to an upstream address, shared by the streams of many requests."""

    transport: asyncio.Transport  # set by connection_made, before the pool hands it out
    host: HostStats  # set by the pool with on_close: whose cx_active this connection counts in

    def __init__(self, key: PoolKey, limits: Limits) -> None:
        self.key = key
        self.limits = limits
        config = h2.config.H2Configuration(client_side=True, header_encoding=None, validate_inbound_headers=True)
        self.conn = SparingConnection(config=config)
        self.conn.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_response_header_bytes,
        })
        self.scheme = b"https" if key.ssl_context is not None else b"http"
        self.streams: dict[int, H2Stream] = {}  # started and not over
        self.reserved = 0  # streams handed out by the pool, not started yet
        self.closed = False
        self.goaway = False  # the server sent GOAWAY: no new stream
        self.negotiated = True  # False: TLS and the server did not select h2 (the pool speaks HTTP/1.1 instead)
        self.write_paused = False
        self.idle_since = 0.0  # set by the pool when the last stream ended
        self.idle_timeout = limits.pool_idle_timeout  # set by the pool: its destination's
        # set by the pool: called once when closed by anyone or lost; and when the room changes
        self.on_close: Callable[[H2UpstreamConnection], None] | None = None
        self.on_capacity: Callable[[H2UpstreamConnection], None] | None = None

    def __repr__(self) -> str:
        return (f"<H2UpstreamConnection {self.key.host}:{self.key.port} streams={sorted(self.streams)} "
                f"reserved={self.reserved} goaway={self.goaway} closed={self.closed}>")

    # ------------------------------------------------------------------ used by the pool

    @property
    def idle(self) -> bool:
        return not self.streams and not self.reserved

    def room(self) -> int:
        """How many more streams it may carry now."""
        if self.closed or self.goaway:
            return 0
        limit = min(self.conn.remote_settings.max_concurrent_streams, self.limits.upstream_max_streams)
        return limit - len(self.streams) - self.reserved

    def reserve(self) -> H2Stream:
        self.reserved += 1
        return H2Stream(self)

    def close(self, code: h2.errors.ErrorCodes = h2.errors.ErrorCodes.NO_ERROR) -> None:
        """Close (GOAWAY, then the socket); streams still open fail as on a lost connection."""
        if self.closed:
            return
        try:
            self.conn.close_connection(error_code=code)
        except h2.exceptions.ProtocolError:
            pass  # (it was closed from the other side already)
        self._send()
        self.closed = True
        self.transport.close()
        self._gone()

    def _gone(self) -> None:
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            on_close(self)

    def _room_changed(self) -> None:
        if self.goaway and not self.streams and not self.closed:
            self.close()  # (its on_close tells the pool)
        elif self.on_capacity is not None:
            self.on_capacity(self)

    # ------------------------------------------------------------------ used by the streams

    def open_stream(self, stream: H2Stream, sink: ResponseSink, request: UpstreamRequest) -> None:
        """Send the request's HEADERS (with END_STREAM when it has no body)."""
        self.reserved -= 1
        stream.sink = sink
        bodiless = not request.chunked and not request.content_length
        try:
            if self.closed or self.goaway:
                raise h2.exceptions.TooManyStreamsError("the connection takes no new stream")
            sid = stream.id = self.conn.get_next_available_stream_id()
            self.conn.send_headers(sid, http2_headers(request, self.scheme), end_stream=bodiless)
        except h2.exceptions.TooManyStreamsError:
            self._fail_later(stream, UpstreamRefused())
            return
        except h2.exceptions.ProtocolError as exc:
            log.warning("request refused by HTTP/2 towards %s:%d: %s", self.key.host, self.key.port, exc)
            self._fail_later(stream, UpstreamProtocolError(f"request refused by HTTP/2: {exc}"))
            return
        self.streams[sid] = stream
        stream.sent_end = stream.ending = bodiless
        self._send()

    def _fail_later(self, stream: H2Stream, error: ProxyError) -> None:
        """A stream that could not start fails on the next loop pass, not inside ``start``
        (whose caller goes on with it)."""
        stream.finished = True
        sink = stream.sink
        stream.sink = None
        self._room_changed()
        if sink is not None:
            asyncio.get_running_loop().call_soon(sink.upstream_failed, error)

    def pump(self, stream: H2Stream) -> None:
        """Send what the server's windows take of the stream's request body; END_STREAM once
        it is all out. Past ``buffer_limit`` waiting, the client's side is paused."""
        if self.closed or stream.finished or not stream.id:
            return
        conn = self.conn
        sid = stream.id
        try:
            stream.out_size -= send_within_window(conn, sid, stream.out)
            if stream.ending and not stream.out and not stream.sent_end:
                conn.end_stream(sid)
                stream.sent_end = True
        except h2.exceptions.StreamClosedError:
            stream.out.clear()  # the server is done with it (its reset or answer is on the way)
            stream.out_size = 0
        self._send()
        self._pace(stream)

    def _pace(self, stream: H2Stream) -> None:
        """Pause the client's side of the request while its body waits here, or resume it."""
        paused = stream.out_size > self.limits.buffer_limit or self.write_paused
        if paused != stream.request_paused and stream.sink is not None:
            stream.request_paused = paused
            if paused:
                stream.sink.upstream_pause()
            else:
                stream.sink.upstream_resume()

    def acknowledge(self, stream: H2Stream) -> None:
        acks, stream.acks = stream.acks, 0
        if not self.closed:
            self.conn.acknowledge_received_data(acks, stream.id)
            self._send()

    def finish(self, stream: H2Stream, code: h2.errors.ErrorCodes) -> None:
        """The stream is given back or abandoned: reset it if it is still open (either way)."""
        if stream.finished:
            return
        stream.finished = True
        stream.sink = None
        if not stream.id:
            self.reserved -= 1
        elif self.streams.pop(stream.id, None) is not None and not self.closed:
            try:
                self.conn.reset_stream(stream.id, code)
            except h2.exceptions.StreamClosedError:
                pass
            self._send()
        if stream.acks and not self.closed:
            self.conn.acknowledge_received_data(stream.acks, stream.id)  # (the connection's window)
            stream.acks = 0
            self._send()
        self._room_changed()

    def _over(self, stream: H2Stream) -> None:
        """Both sides of the stream ended: it no longer counts."""
        stream.finished = True
        self.streams.pop(stream.id, None)
        self._room_changed()

    def _send(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.closed:
            self.transport.write(data)

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() != "h2":
            self.negotiated = False  # the pool hands the transport to an HTTP/1.1 connection
            return
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(CONNECTION_WINDOW - _DEFAULT_WINDOW)
        self._send()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.debug("%s:%d: HTTP/2 protocol error: %s", self.key.host, self.key.port, exc)
            self.close(h2.errors.ErrorCodes.PROTOCOL_ERROR)  # (first: retries must not pick it)
            self._fail_all(UpstreamProtocolError(f"HTTP/2 protocol error: {exc}"))
            return
        touched: dict[int, H2Stream] = {}
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                self._data(event.stream_id, event.data, event.flow_controlled_length, touched)
            elif isinstance(event, h2.events.ResponseReceived):
                self._head(event.stream_id, event.headers, touched)
            elif isinstance(event, h2.events.TrailersReceived):
                self._trailers(event.stream_id, event.headers)
            elif isinstance(event, h2.events.StreamEnded):
                self._ended(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self._reset(event.stream_id, event.error_code)
            elif isinstance(event, h2.events.WindowUpdated):
                self._window_opened(event.stream_id)
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                self._window_opened(0)  # (a new initial window size)
                self._room_changed()
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._goaway(event.last_stream_id or 0)
            if self.closed:
                break
        self._send()
        for stream in touched.values():
            if stream.sink is not None:
                stream.sink.flush()

    def _head(self, sid: int, headers: Headers, touched: dict[int, H2Stream]) -> None:
        stream = self.streams.get(sid)
        if stream is None or stream.sink is None:
            return
        status = b""
        fields: Headers = []
        size = 0
        for name, value in headers:
            if name == b":status":
                status = value
            elif name[:1] != b":":
                fields.append((name, value))
                size += len(name) + len(value) + 4
        limits = self.limits
        if len(fields) > limits.max_response_headers or size > limits.max_response_header_bytes:
            self._fail(stream, UpstreamProtocolError("response headers too large"))
            return
        if not status.isdigit() or len(status) != 3:
            self._fail(stream, UpstreamProtocolError("invalid :status"))
            return
        touched[sid] = stream
        stream.sink.response_head(int(status), b"", fields)

    def _data(self, sid: int, data: bytes, flow_controlled: int, touched: dict[int, H2Stream]) -> None:
        stream = self.streams.get(sid)
        if stream is None or stream.sink is None:
            self.conn.acknowledge_received_data(flow_controlled, sid)  # nobody wants it: reopen the windows
            return
        touched[sid] = stream
        if data:
            stream.sink.response_body(data)
        if stream.response_paused and not stream.finished:
            stream.acks += flow_controlled  # acknowledged when the client's side takes more
        else:
            self.conn.acknowledge_received_data(flow_controlled, sid)

    def _trailers(self, sid: int, headers: Headers) -> None:
        stream = self.streams.get(sid)
        if stream is None or stream.sink is None:
            return
        limits = self.limits
        if len(headers) > limits.max_response_headers or (
                sum(len(n) + len(v) + 4 for n, v in headers) > limits.max_response_header_bytes):
            self._fail(stream, UpstreamProtocolError("response trailers too large"))
            return
        stream.sink.response_trailers(headers)

    def _ended(self, sid: int) -> None:
        """The server ended its side: the response is complete."""
        stream = self.streams.get(sid)
        if stream is None:
            return
        sink, stream.sink = stream.sink, None
        if stream.sent_end:
            self._over(stream)
        # else the request is still going: whoever holds the stream gives it back (close)
        if sink is not None:
            sink.response_end(True)

    def _reset(self, sid: int, code: int) -> None:
        stream = self.streams.get(sid)
        if stream is None:
            return
        sink, stream.sink = stream.sink, None
        self._over(stream)
        if sink is not None:  # (a reset after a complete response, NO_ERROR, only stops our body)
            sink.upstream_failed(UpstreamRefused() if code == h2.errors.ErrorCodes.REFUSED_STREAM
                                 else UpstreamStreamReset())

    def _window_opened(self, sid: int) -> None:
        streams = list(self.streams.values()) if sid == 0 else [s for s in (self.streams.get(sid),) if s]
        for stream in streams:
            if stream.out or (stream.ending and not stream.sent_end):
                self.pump(stream)

    def _goaway(self, last_stream_id: int) -> None:
        """No new stream; those the server never processed are refused (safe to send again)."""
        self.goaway = True
        for stream in [s for sid, s in self.streams.items() if sid > last_stream_id]:
            self._fail(stream, UpstreamRefused())
        self._room_changed()

    def _fail(self, stream: H2Stream, error: ProxyError) -> None:
        sink = stream.sink
        self.finish(stream, h2.errors.ErrorCodes.CANCEL)
        if sink is not None:
            sink.upstream_failed(error)

    def _fail_all(self, error: ProxyError) -> None:
        streams = list(self.streams.values())
        self.streams.clear()
        for stream in streams:
            stream.finished = True
            sink, stream.sink = stream.sink, None
            if sink is not None:
                sink.upstream_failed(error)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._gone()
        self._fail_all(UpstreamReset("connection closed by upstream"))

    def pause_writing(self) -> None:
        self.write_paused = True
        for stream in list(self.streams.values()):
            self._pace(stream)

    def resume_writing(self) -> None:
        self.write_paused = False
        for stream in list(self.streams.values()):
            self._pace(stream)

"""A scripted HTTP/2 upstream (the h2 library, server side, prior knowledge in clear or ALPN h2
over TLS): each complete request is answered by what ``script(request)`` returns, so tests
can make an upstream reset a stream, refuse it, send GOAWAY, answer with trailers only, or
hold its answer until the test lets it go. It counts connections and the most streams it
saw open at once on one connection."""
from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame

Headers = list[tuple[bytes, bytes]]


@dataclass
class H2Request:
    conn: int  # index of the connection it arrived on (0-based, in accept order)
    stream_id: int
    headers: Headers
    body: bytes = b""

    def header(self, name: str) -> str | None:
        value = dict(self.headers).get(name.encode())
        return value.decode() if value is not None else None


@dataclass
class H2Reply:
    """``status``/``headers``/``body``/``trailers`` to answer with; ``reset``: RST_STREAM with
    this code instead; ``goaway``: send GOAWAY with this last stream id first (and answer
    nothing on this stream); ``release``: answer only once it is set."""

    status: int = 200
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    trailers: Headers | None = None
    reset: h2.errors.ErrorCodes | None = None
    goaway: int | None = None
    release: asyncio.Event | None = None


Script = Callable[[H2Request], H2Reply]


class _Connection(asyncio.Protocol):
    def __init__(self, server: H2Upstream) -> None:
        self.server = server
        self.index = server.connections
        server.connections += 1
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.conn = h2.connection.H2Connection(config)
        if server.max_streams is not None:
            self.conn.local_settings = h2.settings.Settings(client=False, initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: server.max_streams})
        self.requests: dict[int, H2Request] = {}
        self.windows: dict[int, asyncio.Event] = {}
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server.open.add(self)
        self.conn.initiate_connection()
        self.flush()

    def connection_lost(self, exc) -> None:
        self.server.open.discard(self)
        for event in self.windows.values():
            event.set()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                self.requests[event.stream_id] = H2Request(self.index, event.stream_id, event.headers)
                self.server.peak = max(self.server.peak, len(self.requests))
            elif isinstance(event, h2.events.DataReceived):
                self.requests[event.stream_id].body += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                request = self.requests[event.stream_id]
                self.server.requests.append(request)
                self.server.arrived.set()
                task = asyncio.get_running_loop().create_task(self.answer(request))
                self.server.tasks.add(task)
                task.add_done_callback(self.server.tasks.discard)
            elif isinstance(event, h2.events.StreamReset):
                self.requests.pop(event.stream_id, None)
                self.server.resets.append(event.stream_id)
            elif isinstance(event, h2.events.WindowUpdated):
                for waiting in self.windows.values():
                    waiting.set()
        self.flush()

    async def answer(self, request: H2Request) -> None:
        reply = self.server.script(request)
        sid = request.stream_id
        if reply.release is not None:
            await reply.release.wait()
        if self.transport is None or self.transport.is_closing():
            return
        try:
            if reply.goaway is not None:
                # written past h2, which would take its own GOAWAY for the end of every stream
                frame = GoAwayFrame(0)
                frame.last_stream_id = reply.goaway
                self.flush()
                self.transport.write(frame.serialize())
            elif reply.reset is not None:
                self.conn.reset_stream(sid, reply.reset)
            else:
                only_head = not reply.body and reply.trailers is None
                self.conn.send_headers(sid, [(b":status", b"%d" % reply.status), *reply.headers],
                                       end_stream=only_head)
                await self.send_body(sid, reply.body)
                if reply.trailers is not None:
                    self.conn.send_headers(sid, reply.trailers, end_stream=True)
                elif not only_head:
                    self.conn.end_stream(sid)
        except h2.exceptions.StreamClosedError:
            pass  # the proxy reset it meanwhile
        self.requests.pop(sid, None)
        self.flush()

    async def send_body(self, sid: int, body: bytes) -> None:
        while body:
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                waiting = self.windows[sid] = asyncio.Event()
                self.flush()
                await asyncio.wait_for(waiting.wait(), 10)
                self.windows.pop(sid, None)
                if self.transport is None or self.transport.is_closing():
                    return
                continue
            self.conn.send_data(sid, body[:window])
            body = body[window:]
        self.flush()


@dataclass
class H2Upstream:
    script: Script
    max_streams: int | None = None  # the MAX_CONCURRENT_STREAMS it announces
    port: int = 0
    connections: int = 0
    peak: int = 0  # the most streams open at once on one connection
    requests: list[H2Request] = field(default_factory=list)
    resets: list[int] = field(default_factory=list)  # stream ids the proxy reset
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    open: set[_Connection] = field(default_factory=set)
    tasks: set[asyncio.Task] = field(default_factory=set)
    _server: asyncio.base_events.Server | None = None

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> H2Upstream:
        if ssl_context is not None:
            ssl_context.set_alpn_protocols(["h2"])
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Connection(self), "127.0.0.1", 0, ssl=ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def wait_arrived(self, count: int, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while len(self.requests) < count:
                self.arrived.clear()
                await self.arrived.wait()

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for conn in list(self.open):
            if conn.transport is not None:
                conn.transport.close()
        assert self._server is not None
        self._server.close()
        await asyncio.wait_for(self._server.wait_closed(), 5)

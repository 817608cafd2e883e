"""A small HTTP/2 client (the h2 library over an asyncio connection, prior knowledge in clear)
for tests that need what curl does not show: trailers, empty DATA frames, END_STREAM on
HEADERS, several streams at once."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
from hyperframe.frame import Frame

from tests.helpers.http import close_writer

Headers = list[tuple[bytes, bytes]]


@dataclass
class H2Response:
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    trailers: Headers | None = None
    frames: list[str] = field(default_factory=list)  # what arrived for the stream, in order
    reset: int | None = None  # the RST_STREAM error code, if the stream was reset

    @property
    def status(self) -> int:
        return int(dict(self.headers)[b":status"])

    def header(self, name: str) -> str | None:
        value = dict(self.headers).get(name.encode())
        return value.decode() if value is not None else None


class H2Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.responses: dict[int, H2Response] = {}
        self.done: dict[int, asyncio.Event] = {}

    @classmethod
    async def connect(cls, port: int) -> H2Client:
        client = cls(*await asyncio.open_connection("127.0.0.1", port))
        client.conn.initiate_connection()
        await client._flush()
        return client

    async def _flush(self) -> None:
        self.writer.write(self.conn.data_to_send())
        await self.writer.drain()

    async def start(self, path: str, method: str = "GET", headers: Headers | None = None,
                    end: bool = True, authority: bytes = b"test") -> int:
        """Send a request's HEADERS (with END_STREAM when ``end``); returns its stream id."""
        sid = self.conn.get_next_available_stream_id()
        self.responses[sid] = H2Response()
        self.done[sid] = asyncio.Event()
        self.conn.send_headers(sid, [(b":method", method.encode()), (b":scheme", b"http"),
                                     (b":authority", authority), (b":path", path.encode()), *(headers or [])],
                               end_stream=end)
        await self._flush()
        return sid

    async def send(self, sid: int, data: bytes, end: bool = False) -> None:
        self.conn.send_data(sid, data, end_stream=end)
        await self._flush()

    async def response(self, sid: int, timeout: float = 10) -> H2Response:
        async with asyncio.timeout(timeout):
            while not self.done[sid].is_set():
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("the proxy closed the connection")
                self._receive(data)
                await self._flush()
        return self.responses[sid]

    def _receive(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            sid = getattr(event, "stream_id", None)
            response = self.responses.get(sid) if sid else None
            if response is None:
                continue
            if isinstance(event, h2.events.ResponseReceived):
                response.headers = event.headers
                response.frames.append("headers+end" if event.stream_ended else "headers")
            elif isinstance(event, h2.events.DataReceived):
                response.body += event.data
                response.frames.append("data")
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.TrailersReceived):
                response.trailers = event.headers
                response.frames.append("trailers")
            elif isinstance(event, h2.events.StreamEnded):
                self.done[event.stream_id].set()
            elif isinstance(event, h2.events.StreamReset):
                response.reset = event.error_code
                self.done[event.stream_id].set()

    async def request(self, path: str, method: str = "GET", headers: Headers | None = None,
                      body: list[bytes] | None = None) -> H2Response:
        """One request, its body sent in the given DATA frames (the last one ends it)."""
        sid = await self.start(path, method, headers, end=not body)
        for i, piece in enumerate(body or ()):
            await self.send(sid, piece, end=i == len(body or ()) - 1)
        return await self.response(sid)

    async def close(self) -> None:
        await close_writer(self.writer)


def parse_frames(data: bytes) -> Iterator[Frame]:
    """The whole frames in ``data`` (read raw, for tests that must see frames h2 would refuse
    to take, such as a response after the GOAWAY that announced it)."""
    while len(data) >= 9:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        if len(data) < 9 + length:
            return
        frame.parse_body(memoryview(data[9:9 + length]))
        yield frame
        data = data[9 + length:]

"""A recording upstream for retry, mirror and CORS tests: parses every request with httptools
(chunked bodies decoded), records it with its arrival time, and answers the n-th request
(counted across all its connections) as a test function says: bytes, a reset (RST), a close
(FIN), no answer at all, or any of those after a delay or once the test releases it. Tests
wait for arrivals with bounded waits on events (``wait_requests``), never by sleeping."""
from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import httptools


def free_port() -> int:
    """A port nobody listens on (bound and released: connecting to it is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def response(status: int = 200, body: bytes = b"", headers: tuple[tuple[str, str], ...] = (),
             reason: str = "") -> bytes:
    """A complete HTTP/1.1 response with Content-Length."""
    head = f"HTTP/1.1 {status} {reason or 'X'}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    return head.encode("latin-1") + b"content-length: %d\r\n\r\n" % len(body) + body


def chunked_response(status: int, chunks: list[bytes], headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    head = f"HTTP/1.1 {status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    out = head.encode("latin-1") + b"transfer-encoding: chunked\r\n\r\n"
    for c in chunks:
        out += b"%x\r\n%s\r\n" % (len(c), c)
    return out + b"0\r\n\r\n"


@dataclass(frozen=True)
class Reset:
    """Send ``data`` (maybe nothing), then reset the connection (SO_LINGER 0: an RST)."""

    data: bytes = b""


@dataclass(frozen=True)
class Close:
    """Send ``data`` (maybe nothing), then close the connection (FIN)."""

    data: bytes = b""


@dataclass(frozen=True)
class Hang:
    """Never answer; the connection stays open until the proxy closes it."""


@dataclass(frozen=True)
class Delay:
    seconds: float
    then: Answer


@dataclass(frozen=True)
class Held:
    """Answer ``then`` once the test resolves ``gate`` (an asyncio Future): an upstream that
    is slow for exactly as long as the test needs, without sleeping."""

    gate: asyncio.Future
    then: Answer


Answer = bytes | Reset | Close | Hang | Delay | Held


@dataclass
class Seen:
    index: int  # 0-based, across connections, in order of completion
    conn: int  # 0-based connection index, in accept order
    method: str
    target: str
    headers: list[tuple[str, str]]  # names lower-case, in order
    body: bytes  # decoded (de-chunked)
    at: float  # loop time when the request was complete

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


class _Conn(asyncio.Protocol):
    def __init__(self, rec: Recorder, index: int) -> None:
        self.rec = rec
        self.index = index
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()
        self.timers: list[asyncio.TimerHandle] = []

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.rec._transports.add(transport)

    def connection_lost(self, exc) -> None:
        self.rec._transports.discard(self.transport)
        for t in self.timers:
            t.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.abort()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body = bytearray()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.rec.heads += 1
        self.rec._notify()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        rec = self.rec
        seen = Seen(len(rec.requests), self.index, self.parser.get_method().decode(), self.url.decode("latin-1"),
                    self.headers, bytes(self.body), asyncio.get_running_loop().time())
        rec.requests.append(seen)
        rec._notify()
        self._act(rec.answer(seen.index, seen))

    def _act(self, answer: Answer) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        if isinstance(answer, bytes):
            t.write(answer)
        elif isinstance(answer, Reset):
            if answer.data:
                t.write(answer.data)
            sock = t.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            t.abort()
        elif isinstance(answer, Close):
            if answer.data:
                t.write(answer.data)
            t.close()
        elif isinstance(answer, Delay):
            self.timers.append(asyncio.get_running_loop().call_later(answer.seconds, self._act, answer.then))
        elif isinstance(answer, Held):
            answer.gate.add_done_callback(lambda _: self._act(answer.then))
        # Hang: nothing


@dataclass
class Recorder:
    """``answer(index, seen)`` chooses the answer to the index-th request (0-based)."""

    answer: Callable[[int, Seen], Answer] = lambda i, seen: response(200, b"ok")
    port: int = 0
    requests: list[Seen] = field(default_factory=list)
    heads: int = 0  # request heads received (a request counts here before its body is complete)
    connections: int = 0
    _server: asyncio.base_events.Server | None = None
    _transports: set = field(default_factory=set)
    _waiters: list = field(default_factory=list)

    @classmethod
    def sequence(cls, *answers: Answer) -> Recorder:
        """Answer request i with ``answers[i]``, the last one repeating."""
        return cls(lambda i, seen: answers[min(i, len(answers) - 1)])

    async def start(self) -> Recorder:
        def factory() -> _Conn:
            index = self.connections
            self.connections += 1
            return _Conn(self, index)

        self._server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for t in list(self._transports):
            t.abort()
        self._server.close()
        await asyncio.wait_for(self._server.wait_closed(), 5)

    def _notify(self) -> None:
        for waiter in list(self._waiters):
            predicate, fut = waiter
            if predicate() and not fut.done():
                fut.set_result(None)
                self._waiters.remove(waiter)

    async def _wait(self, predicate: Callable[[], bool], timeout: float) -> None:
        if predicate():
            return
        fut = asyncio.get_running_loop().create_future()
        waiter = (predicate, fut)
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(fut, timeout)
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    async def wait_requests(self, n: int, timeout: float = 5.0) -> list[Seen]:
        """Wait (bounded) until at least ``n`` complete requests have arrived."""
        await self._wait(lambda: len(self.requests) >= n, timeout)
        return self.requests

    async def wait_heads(self, n: int, timeout: float = 5.0) -> None:
        await self._wait(lambda: self.heads >= n, timeout)


async def mirror_tasks_done(timeout: float = 5.0) -> None:
    """Wait (bounded) for the proxy's mirror tasks of this loop to finish: every copy that was
    going to be sent has been answered (or failed) by then. The data plane names these
    tasks ``pyproxy-mirror``."""
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current and t.get_name() == "pyproxy-mirror"]
    if tasks:
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout)


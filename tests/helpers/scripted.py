"""A scripted raw upstream: reads each request off the socket and answers with bytes a test
chose, so tests can produce responses no real server library would send (bad status lines,
NUL bytes, ambiguous framing, early closes, extra bytes after a response)."""
from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.I)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:\s*chunked", re.I)


@dataclass
class Reply:
    """What to do with one request: send ``data``, then close if ``close``; ``hang`` sends
    ``data`` and then keeps the connection open without answering further."""

    data: bytes = b""
    close: bool = False
    hang: bool = False


@dataclass
class Request:
    conn: int  # index of the connection it arrived on (0-based, in accept order)
    head: bytes
    body: bytes

    @property
    def request_line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]


Script = Callable[[Request], Reply | bytes]


def ok(body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


@dataclass
class ScriptedUpstream:
    """``script(request)`` returns the bytes to send (keeping the connection) or a ``Reply``."""

    script: Script
    port: int = 0
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.base_events.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def start(self) -> ScriptedUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        self._server.close()
        await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.connections
        self.connections += 1
        self._writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                body = b""
                if _CHUNKED.search(head):
                    body = await reader.readuntil(b"0\r\n\r\n")
                else:
                    found = _CONTENT_LENGTH.search(head)
                    if found:
                        body = await reader.readexactly(int(found.group(1)))
                request = Request(index, head, body)
                self.requests.append(request)
                self.arrived.set()
                reply = self.script(request)
                if isinstance(reply, bytes):
                    reply = Reply(reply)
                writer.write(reply.data)
                await writer.drain()
                if reply.hang:
                    await reader.read()  # until the peer goes away
                    return
                if reply.close:
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            return
        finally:
            writer.close()

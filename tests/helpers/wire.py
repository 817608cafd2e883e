"""A raw downstream connection for protocol tests: sends bytes whole or one at a time, and
parses responses strictly from its own buffer, so pipelined responses, 1xx responses and
bodiless HEAD responses are read exactly as they are on the wire. Every wait is bounded."""
from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

from tests.helpers.http import Response, close_writer

_STATUS = re.compile(rb"HTTP/(\d\.\d) (\d{3})(?: [^\r\n]*)?")


@dataclass
class WireResponse(Response):
    raw: bytes = b""  # the response exactly as received, head and framed body
    informational: list[int] = field(default_factory=list)  # 1xx statuses before it
    trailers: list[tuple[str, str]] = field(default_factory=list)  # the chunked body's trailer section

    def headers_named(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]


class Truncated(Exception):
    """The connection ended inside a response; ``partial`` holds the bytes received."""

    def __init__(self, partial: bytes) -> None:
        super().__init__(f"connection closed inside a response after {len(partial)} bytes")
        self.partial = partial


class Wire:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self.buf = bytearray()
        self.eof = False

    @classmethod
    async def open(cls, port: int, timeout: float = 5) -> Wire:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, limit=1 << 20), timeout)
        return cls(reader, writer, timeout)

    async def send(self, data: bytes, split: bool = False) -> None:
        """Write ``data``; ``split`` writes one byte at a time and yields to the event loop
        after each, so the proxy (same loop) reads them in separate ``data_received`` calls."""
        if not split:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), self.timeout)
            return
        for i in range(len(data)):
            self.writer.write(data[i:i + 1])
            await asyncio.wait_for(self.writer.drain(), self.timeout)
            await asyncio.sleep(0)

    async def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            chunk = await asyncio.wait_for(self.reader.read(1 << 16), self.timeout)
        except ConnectionError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    async def _until(self, marker: bytes, start: int = 0) -> int:
        while True:
            at = self.buf.find(marker, start)
            if at >= 0:
                return at
            if not await self._fill():
                raise Truncated(bytes(self.buf))

    async def _need(self, n: int) -> None:
        while len(self.buf) < n:
            if not await self._fill():
                raise Truncated(bytes(self.buf))

    async def read_response(self, head: bool = False) -> WireResponse:
        """The next final response (1xx responses before it are recorded on it)."""
        informational = []
        while True:
            resp = await self.read_one(head)
            if resp.status >= 200:
                resp.informational = informational
                return resp
            informational.append(resp.status)

    async def read_one(self, head: bool = False) -> WireResponse:
        """The next response, interim (1xx) ones included."""
        end = await self._until(b"\r\n\r\n")
        lines = bytes(self.buf[:end]).split(b"\r\n")
        m = _STATUS.fullmatch(lines[0])
        assert m, f"bad status line {lines[0]!r}"
        version, status = m.group(1).decode(), int(m.group(2))
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            assert sep and name and name == name.strip(), f"bad header line {line!r}"
            headers.append((name.decode("latin-1").lower(), value.strip().decode("latin-1")))
        pos = end + 4
        body = bytearray()
        trailers = []
        names = {k: v for k, v in headers}
        if head or status < 200 or status in (204, 304):
            pass
        elif "chunked" in names.get("transfer-encoding", ""):
            while True:
                eol = await self._until(b"\r\n", pos)
                size = int(bytes(self.buf[pos:eol]), 16)
                pos = eol + 2
                if size == 0:
                    while (eol := await self._until(b"\r\n", pos)) > pos:  # the trailer section
                        name, _, value = bytes(self.buf[pos:eol]).partition(b":")
                        trailers.append((name.decode("latin-1").lower(), value.strip().decode("latin-1")))
                        pos = eol + 2
                    pos += 2
                    break
                await self._need(pos + size + 2)
                body += self.buf[pos:pos + size]
                assert self.buf[pos + size:pos + size + 2] == b"\r\n"
                pos += size + 2
        elif "content-length" in names:
            n = int(names["content-length"])
            await self._need(pos + n)
            body += self.buf[pos:pos + n]
            pos += n
        else:
            while await self._fill():
                pass
            body += self.buf[pos:]
            pos = len(self.buf)
        raw = bytes(self.buf[:pos])
        del self.buf[:pos]
        return WireResponse(status, headers, bytes(body), version, raw=raw, trailers=trailers)

    async def closed(self) -> bool:
        """True when the peer closes without sending anything more (within the timeout)."""
        if self.buf:
            return False
        try:
            return not await self._fill()
        except TimeoutError:
            return False

    async def close(self) -> None:
        await close_writer(self.writer)

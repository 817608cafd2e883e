"""Test-side HTTP: a raw keep-alive client (so tests see exactly the bytes on the wire) and
recording upstream servers (aiohttp, plain or TLS)."""
from __future__ import annotations

import asyncio
import json
import ssl
import weakref
from dataclasses import dataclass, field

import httptools
from aiohttp import web


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    version: str = "1.1"

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body)


class _ResponseReader:
    def __init__(self, head_request: bool = False) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()
        self.done = False
        self.head_request = head_request
        self.headers_done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        if self.head_request:
            self.done = True

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True


class Client:
    """One keep-alive HTTP/1.1 connection; every wait is bounded."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None,
                      server_hostname: str | None = None) -> Client:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ssl_context, server_hostname=server_hostname), 5)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_response(self, head_request: bool = False, timeout: float = 10) -> Response:
        rr = _ResponseReader(head_request)

        async def run() -> None:
            while not rr.done:
                chunk = await self.reader.read(65536)
                if not chunk:
                    raise ConnectionError("connection closed before the response completed")
                rr.parser.feed_data(chunk)
        await asyncio.wait_for(run(), timeout)
        status = rr.parser.get_status_code()
        return Response(status, rr.headers, bytes(rr.body), rr.parser.get_http_version())

    async def request(self, method: str, path: str, headers: dict[str, str] | list[tuple[str, str]] | None = None,
                      body: bytes = b"", host: str = "example.com") -> Response:
        items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        if host is not None and not any(k.lower() == "host" for k, _ in items):
            items.insert(0, ("Host", host))
        if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in items):
            items.append(("Content-Length", str(len(body))))
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in items) + "\r\n"
        await self.send(head.encode("latin-1") + body)
        return await self.read_response(head_request=method == "HEAD")

    async def closed(self, timeout: float = 5) -> bool:
        """True when the server closes the connection (EOF) within ``timeout``."""
        try:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return data == b""

    async def close(self) -> None:
        await close_writer(self.writer)


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close a client connection, waiting (bounded) for it to go."""
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 2)
    except (TimeoutError, ConnectionError, ssl.SSLError):
        pass


async def raw_exchange(port: int, data: bytes, timeout: float = 5, host: str = "127.0.0.1") -> bytes:
    """Send bytes, read everything until the server closes (or ``timeout``)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(data)
    await writer.drain()
    out = bytearray()
    try:
        async def run() -> None:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                out.extend(chunk)
        await asyncio.wait_for(run(), timeout)
    except (TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()
    return bytes(out)


@dataclass
class Seen:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    sni: str | None
    tls_version: str | None = None  # the TLS version negotiated, over TLS
    client_cert: dict | None = None  # the certificate the client presented (getpeercert()), if any


@dataclass
class Upstream:
    """A recording aiohttp upstream. Paths: ``/status/<code>``, ``/bytes/<n>`` (n bytes),
    ``/delay/<seconds>``, ``/stream/<n>`` (n bytes written in 64 KiB chunks, progress in
    ``streamed``), ``/sink`` (reads the body without keeping it, size in ``sunk``); anything
    else echoes the request as JSON."""

    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    runner: web.AppRunner | None = None
    streamed: int = 0
    sunk: int = 0
    # server-side SSLObjects do not expose the SNI they received; an sni_callback records it
    _sni: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/stream/"):
            return await self._stream(request, int(request.path.split("/")[2]))
        if request.path == "/sink":
            async for chunk in request.content.iter_any():
                self.sunk += len(chunk)
            return web.json_response({"received": self.sunk})
        body = await request.read()
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        sni = self._sni.get(ssl_object) if ssl_object is not None else None
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in request.raw_headers]
        self.seen.append(Seen(request.method, request.path_qs, headers, body, sni,
                              ssl_object.version() if ssl_object is not None else None,
                              (ssl_object.getpeercert() or None) if ssl_object is not None else None))
        parts = request.path.split("/")
        if len(parts) > 2 and parts[1] == "status":
            return web.Response(status=int(parts[2]), text="status")
        if len(parts) > 2 and parts[1] == "bytes":
            return web.Response(body=b"x" * int(parts[2]))
        if len(parts) > 2 and parts[1] == "delay":
            await asyncio.sleep(float(parts[2]))
        return web.json_response({
            "method": request.method,
            "path": request.path_qs,
            "headers": headers,
            "body": body.decode("latin-1"),
            "sni": sni,
        }, headers={"x-upstream": "yes"})

    async def _stream(self, request: web.Request, size: int) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-length": str(size)})
        await response.prepare(request)
        chunk = b"x" * 65536
        self.streamed = 0
        while self.streamed < size:
            piece = chunk[: size - self.streamed]
            await response.write(piece)
            self.streamed += len(piece)
        await response.write_eof()
        return response

    async def start(self, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None) -> Upstream:
        if ssl_context is not None:
            def record_sni(ssl_object: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
                self._sni[ssl_object] = server_name
            ssl_context.sni_callback = record_sni
        app = web.Application(client_max_size=1 << 31)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, ssl_context=ssl_context, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

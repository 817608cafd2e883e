"""The admin interface's HTTP/1.1 server: an ``asyncio.Protocol`` over httptools (llhttp, as
in the data plane), so that a serving process needs no web framework for a few small
endpoints (aiohttp cost about 11 MiB of RSS in every process).

The ``Handler`` answers each request synchronously (the endpoints only read the runtime):
no task per request, nothing to cancel. Parser callbacks only collect requests; after each
read the queued ones are answered in order, and while the client does not read what it was
sent, reading stops, so answers cannot pile up. Against a hostile client, as the data plane:
a bounded head (431), a bounded body (413, else read and ignored), 400 for anything
malformed, each answered with ``Connection: close``; a request must arrive whole within
``request_timeout`` of its first byte (408) and an idle connection closes after
``idle_timeout``. HEAD gets GET's head and no body. After the last answer the write side is
shut and what the client still sends is dropped for ``linger_timeout``, so that the answer
is not lost to a reset.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import parse_qsl, unquote_to_bytes

import httptools

from .dataplane.http import DATE, REASONS
from .startup import bind_host

log = logging.getLogger("pyproxy")

Response = tuple[int, list[tuple[str, str]], bytes]  # status, headers, body
TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Limits:
    """Sizes in bytes, timeouts in seconds (see the module docstring); tests pass their own."""

    max_head_bytes: int = 64 * 1024
    max_headers: int = 100
    max_body_bytes: int = 64 * 1024
    request_timeout: float = 10.0
    idle_timeout: float = 60.0
    linger_timeout: float = 2.0


DEFAULT = Limits()

@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # percent-decoded: what routes match
    query: list[tuple[str, str]]  # decoded, in order, blank values kept
    headers: list[tuple[str, str]]  # names lower-cased

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    def param(self, name: str) -> str | None:
        return next((value for key, value in self.query if key == name), None)


Handler = Callable[[Request], Response]


def error(status: int, headers: list[tuple[str, str]] | None = None) -> Response:
    """A plain answer with aiohttp's body for an HTTP error: ``404: Not Found``."""
    return status, [("Content-Type", TEXT), *(headers or [])], b"%d: %s" % (status, REASONS[status])


class _Refused(Exception):
    """Raised in a parser callback: answer ``status`` and close."""

    def __init__(self, status: int) -> None:
        self.status = status


class AdminProtocol(asyncio.Protocol):
    transport: asyncio.Transport  # from connection_made on

    def __init__(self, handler: Handler, limits: Limits, loop: asyncio.AbstractEventLoop,
                 connections: set[AdminProtocol]) -> None:
        self.handler = handler
        self.limits = limits
        self.loop = loop
        self.connections = connections
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.queue: deque[tuple[Request, bytes]] = deque()  # to answer, each with its Connection value
        self.failure: int | None = None  # once parser is None: the status to answer after the queue
        self.paused = False  # the client does not read what it was sent
        self.ended = False  # the last answer is written
        self.timer: asyncio.TimerHandle | None = None
        # the request being received
        self.in_message = False
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.request: Request | None = None
        self.connection = b""  # the answer's Connection value: b"close", b"keep-alive" (HTTP/1.0) or none
        self.expect_continue = False
        self.head_bytes = 0
        self.body_bytes = 0
        self.unparsed = 0  # bytes read while this message was unfinished, body bytes excepted

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's do not subclass asyncio's
        self.connections.add(self)
        self._arm(self.limits.idle_timeout, self.close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()

    def data_received(self, data: bytes) -> None:
        if self.parser is None:
            return  # ending: dropped
        body = self.body_bytes
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._stop(None)  # what follows is another protocol: answer, then close
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if cause is not None and not isinstance(cause, _Refused):
                raise cause from None  # a bug in a callback
            self._stop(cause.status if cause is not None else 400)
        if self.parser is not None and self.in_message:
            # httptools keeps an unfinished header line to itself: bound what it may hold
            self.unparsed += len(data) - max(self.body_bytes - body, 0)
            if self.unparsed > self.limits.max_head_bytes:
                self._stop(431)
            elif self.expect_continue and not self.queue:
                self.expect_continue = False
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._answer()

    def eof_received(self) -> None:
        self._stop(None)
        self._answer()  # then the transport closes, once what is written is sent

    def pause_writing(self) -> None:
        self.paused = True
        self.transport.pause_reading()
        self._arm(self.limits.idle_timeout, self.close)  # the client must read

    def resume_writing(self) -> None:
        self.paused = False
        self._answer()
        if not self.paused and not self.ended:
            self.transport.resume_reading()
            if self.in_message:
                self._arm(self.limits.request_timeout, self._timed_out)
            else:
                self._arm(self.limits.idle_timeout, self.close)

    # ------------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        self.in_message = True
        self.url = b""
        self.headers = []
        self.request = None
        self.head_bytes = self.body_bytes = self.unparsed = 0
        self._arm(self.limits.request_timeout, self._timed_out)

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        if self.request is None:  # not a trailer: those are read and ignored
            if len(self.headers) >= self.limits.max_headers:
                raise _Refused(431)
            self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1").strip(" \t")))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        version = self.parser.get_http_version()
        hosts = sum(1 for name, _ in self.headers if name == "host")
        if version not in ("1.0", "1.1") or hosts > 1 or (version == "1.1" and not hosts):
            raise _Refused(400)
        for name, value in self.headers:
            if name == "content-length" and int(value) > self.limits.max_body_bytes:  # llhttp checked the digits
                raise _Refused(413)
        method = self.parser.get_method().decode("ascii")
        try:
            url = httptools.parse_url(self.url)
        except httptools.HttpParserInvalidURLError:
            raise _Refused(400) from None
        if self.url == b"*" and method != "OPTIONS":
            raise _Refused(400)
        self.request = Request(method,
                               unquote_to_bytes(url.path or b"/").decode("utf-8", "replace"),
                               parse_qsl((url.query or b"").decode("utf-8", "replace"), keep_blank_values=True),
                               self.headers)
        if not self.parser.should_keep_alive():
            self.connection = b"close"
        else:
            self.connection = b"keep-alive" if version == "1.0" else b""
        self.expect_continue = version == "1.1" and ("expect", "100-continue") in self.headers

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes > self.limits.max_body_bytes:
            raise _Refused(413)

    def on_message_complete(self) -> None:
        assert self.request is not None
        self.queue.append((self.request, self.connection))
        self.in_message = self.expect_continue = False
        self._arm(self.limits.idle_timeout, self.close)

    def _count(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > self.limits.max_head_bytes:
            raise _Refused(431)

    # ------------------------------------------------------------------ answers

    def _answer(self) -> None:
        """Answer what is queued, in order, while the client reads; then, once nothing more
        will be parsed, the failure if there is one, and end the connection."""
        while self.queue and not self.paused:
            request, connection = self.queue.popleft()
            try:
                response = self.handler(request)
            except Exception:
                log.exception("admin: %s %s failed", request.method, request.path)
                response = error(500)
            self._send(response, connection, request.method == "HEAD")
            if connection == b"close":
                self._stop(None)
                self._end()
                return
        if not self.queue and self.parser is None and not self.ended:
            if self.failure is not None:
                self._send(error(self.failure), b"close", False)
            self._end()

    def _send(self, response: Response, connection: bytes, head_only: bool) -> None:
        status, headers, body = response
        lines = [b"HTTP/1.1 %d %s" % (status, REASONS.get(status, b"")),
                 *(f"{name}: {value}".encode("latin-1") for name, value in headers),
                 b"Content-Length: %d" % len(body), b"Date: " + DATE.get()]
        if connection:
            lines.append(b"Connection: " + connection)
        head = b"\r\n".join(lines) + b"\r\n\r\n"
        self.transport.write(head if head_only else head + body)

    def _stop(self, failure: int | None) -> None:
        """Parse nothing more; answer ``failure`` after the queue."""
        if self.parser is not None:
            self.parser = None
            self.failure = failure
            self.in_message = False

    def _end(self) -> None:
        """After the last answer: shut the write side, and read and drop what the client
        still sends for a moment, so that it is not reset before it reads the answer."""
        self.ended = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.transport.resume_reading()
            self._arm(self.limits.linger_timeout, self.close)
        else:
            self.close()

    def _timed_out(self) -> None:
        self._stop(408)
        self._answer()

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(delay, callback)

    def close(self) -> None:
        """Close once what is written is sent, or at once after another ``idle_timeout``."""
        if self.transport.is_closing():
            return
        self.transport.close()
        self._arm(self.limits.idle_timeout, self.transport.abort)


class AdminServer:
    """A listening admin server: the addresses it is bound to, and ``cleanup`` to close it
    and its connections."""

    def __init__(self, server: asyncio.Server, connections: set[AdminProtocol]) -> None:
        self.server = server
        self.connections = connections

    @property
    def addresses(self) -> list:
        return [sock.getsockname() for sock in self.server.sockets]

    async def cleanup(self) -> None:
        self.server.close()
        for connection in list(self.connections):
            connection.transport.abort()
        await self.server.wait_closed()


async def start(handler: Handler, host: str, port: int, limits: Limits = DEFAULT) -> AdminServer:
    loop = asyncio.get_running_loop()
    connections: set[AdminProtocol] = set()
    server = await loop.create_server(lambda: AdminProtocol(handler, limits, loop, connections),
                                      bind_host(host), port,  # type: ignore[arg-type]  # bytes: see bind_host
                                      reuse_address=True)
    return AdminServer(server, connections)

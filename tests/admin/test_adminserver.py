"""The admin's HTTP/1.1 server fed real bytes in memory, whole and one byte at a time: a
transport that records what is written and a loop whose timers the test fires itself."""
from __future__ import annotations

import asyncio
import json
import logging
from typing import cast

import pytest

from pyproxy.adminserver import DEFAULT, TEXT, AdminProtocol, Limits, Request, Response
from tests.helpers.fakes import FakeLoop, FakeTransport

SPLIT = pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
H = b"Host: 127.0.0.1\r\n"


class SlowReader(FakeTransport):
    """A client that reads only when the test ``take``s: anything written pauses the
    protocol's writing (as a transport over its high-water mark does) until then."""

    def __init__(self, protocol: AdminProtocol) -> None:
        super().__init__()
        self.protocol = protocol
        self.writing_paused = False

    def write(self, data: bytes) -> None:
        super().write(data)
        if not self.writing_paused:
            self.writing_paused = True
            self.protocol.pause_writing()

    def take(self) -> bytes:
        data = super().take()
        if self.writing_paused:
            self.writing_paused = False
            self.protocol.resume_writing()
        return data


def echo(request: Request) -> Response:
    body = json.dumps({"method": request.method, "path": request.path, "query": request.query,
                       "headers": request.headers}).encode()
    return 200, [("Content-Type", "application/json")], body


def connect(handler=echo, limits: Limits = DEFAULT, slow: bool = False
            ) -> tuple[AdminProtocol, FakeTransport, FakeLoop]:
    """A connection on a fake transport and clock (``connection_made`` done)."""
    loop = FakeLoop()
    protocol = AdminProtocol(handler, limits, cast(asyncio.AbstractEventLoop, loop), set())
    transport = SlowReader(protocol) if slow else FakeTransport()
    protocol.connection_made(cast(asyncio.Transport, transport))
    return protocol, transport, loop


def expires_after(loop: FakeLoop, seconds: float, happened) -> bool:
    """Nothing happens until ``seconds`` have passed, then ``happened()`` holds."""
    loop.advance(seconds - 0.001)
    if happened():
        return False
    loop.advance(0.001)
    return bool(happened())


def feed(protocol: AdminProtocol, data: bytes, split: bool) -> None:
    if split:
        for i in range(len(data)):
            protocol.data_received(data[i:i + 1])
    else:
        protocol.data_received(data)


def responses(out: bytes, head_only: int = 0) -> list[tuple[int, dict[str, str], bytes]]:
    """The responses in ``out``: (status, headers, body); the first ``head_only`` have no body."""
    found = []
    while out:
        head, _, out = out.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        assert status_line.startswith("HTTP/1.1 "), status_line
        headers = dict(line.split(": ", 1) for line in lines)
        length = 0 if len(found) < head_only else int(headers.get("Content-Length", 0))
        found.append((int(status_line.split()[1]), headers, out[:length]))
        out = out[length:]
    return found


@SPLIT
def test_keep_alive_and_pipelined_requests_are_answered_in_order(split):
    protocol, transport, loop = connect()
    feed(protocol, b"GET /a HTTP/1.1\r\n" + H + b"\r\nGET /b?x=1 HTTP/1.1\r\n" + H + b"\r\n", split)
    first, second = responses(transport.take())
    assert [json.loads(r[2])["path"] for r in (first, second)] == ["/a", "/b"]
    assert json.loads(second[2])["query"] == [["x", "1"]]
    assert "Connection" not in first[1] and first[1]["Content-Length"] == str(len(first[2]))
    assert not transport.eof
    feed(protocol, b"GET /c HTTP/1.1\r\n" + H + b"\r\n", split)
    assert json.loads(responses(transport.take())[0][2])["path"] == "/c"


@SPLIT
def test_connection_close_ends_after_the_answer_and_nothing_after_it_is_parsed(split):
    protocol, transport, loop = connect()
    feed(protocol, b"GET /a HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\nGET /smuggled HTTP/1.1\r\n" + H + b"\r\n",
         split)
    [(status, headers, body)] = responses(transport.take())
    assert status == 200 and headers["Connection"] == "close" and b"smuggled" not in body
    assert transport.eof and not transport.closed  # lingering: what still comes is read and dropped
    assert expires_after(loop, DEFAULT.linger_timeout, lambda: transport.closed)


@pytest.mark.parametrize(("request_head", "connection"), [
    (b"GET / HTTP/1.0\r\n\r\n", "close"),
    (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "keep-alive"),
])
def test_http_1_0_is_answered_in_http_1_1_with_its_connection(request_head, connection):
    protocol, transport, _ = connect()
    feed(protocol, request_head, False)
    [(status, headers, _)] = responses(transport.take())
    assert status == 200 and headers["Connection"] == connection
    assert transport.eof == (connection == "close")


def test_head_gets_the_head_of_get_without_the_body():
    protocol, transport, _ = connect(lambda _request: (200, [("Content-Type", TEXT)], b"twelve bytes"))
    feed(protocol, b"HEAD /x HTTP/1.1\r\n" + H + b"\r\nGET /x HTTP/1.1\r\n" + H + b"\r\n", False)
    out = transport.take()
    head, get = responses(out, head_only=1)
    assert head[:2] == get[:2] and head[1]["Content-Length"] == "12"
    assert out.count(b"twelve bytes") == 1 and out.endswith(b"\r\n\r\ntwelve bytes")


MALFORMED = {
    "garbage": b"garbage\r\n\r\n",
    "lowercase-method": b"get / HTTP/1.1\r\n" + H + b"\r\n",
    "header-without-colon": b"GET / HTTP/1.1\r\n" + H + b"Bad Header\r\n\r\n",
    "space-before-colon": b"GET / HTTP/1.1\r\n" + H + b"X-A : b\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\n" + H + b"X-A: b\r\n c\r\n\r\n",
    "bare-lf": b"GET / HTTP/1.1\n" + H.replace(b"\r", b"") + b"\n",
    "http-1.2": b"GET / HTTP/1.2\r\n" + H + b"\r\n",
    "http-2.0": b"GET / HTTP/2.0\r\n" + H + b"\r\n",
    "http-0.9": b"GET /\r\n\r\n",
    "no-host": b"GET / HTTP/1.1\r\n\r\n",
    "two-hosts": b"GET / HTTP/1.1\r\n" + H + H + b"\r\n",
    "cl-and-te": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "cl-plus": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello",
    "cl-differ": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "te-gzip": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n",
    "bad-chunk": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    "asterisk-get": b"GET * HTTP/1.1\r\n" + H + b"\r\n",
    "control-in-value": b"GET / HTTP/1.1\r\n" + H + b"X-A: b\x01c\r\n\r\n",
}


@SPLIT
@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_request_is_400_and_closes_without_echoing_it(data, split):
    protocol, transport, _ = connect()
    feed(protocol, data + b"GET /next HTTP/1.1\r\n" + H + b"\r\n", split)
    [(status, headers, body)] = responses(transport.take())
    assert (status, body) == (400, b"400: Bad Request")
    assert (headers["Content-Type"], headers["Connection"]) == (TEXT, "close")
    assert transport.eof


@SPLIT
def test_a_head_over_the_limit_is_431(split):
    protocol, transport, _ = connect(limits=Limits(max_head_bytes=1024))
    feed(protocol, b"GET / HTTP/1.1\r\n" + H + b"X-Long: " + b"a" * 1100 + b"\r\n\r\n", split)
    assert [r[0] for r in responses(transport.take())] == [431] and transport.eof


def test_a_header_line_that_never_ends_is_431_once_past_the_limit():
    """httptools keeps an unfinished header to itself: it must not grow without bound."""
    protocol, transport, _ = connect(limits=Limits(max_head_bytes=1024))
    feed(protocol, b"GET / HTTP/1.1\r\n" + H + b"X-Long: ", False)
    for _ in range(1100):
        protocol.data_received(b"a")
    assert [r[0] for r in responses(transport.take())] == [431]


def test_too_many_headers_is_431():
    protocol, transport, _ = connect(limits=Limits(max_headers=5))
    feed(protocol, b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-%d: v\r\n" % i for i in range(5)) + b"\r\n", False)
    assert [r[0] for r in responses(transport.take())] == [431]


def test_a_content_length_over_the_limit_is_413_before_the_body_arrives():
    protocol, transport, _ = connect(limits=Limits(max_body_bytes=10))
    feed(protocol, b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 11\r\n\r\n", False)
    assert [r[0] for r in responses(transport.take())] == [413] and transport.eof


@SPLIT
def test_a_chunked_body_over_the_limit_is_413(split):
    protocol, transport, _ = connect(limits=Limits(max_body_bytes=10))
    feed(protocol, b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n6\r\nabcdef\r\n",
         split)
    assert [r[0] for r in responses(transport.take())] == [413]


@SPLIT
def test_a_body_is_read_and_ignored_and_its_trailers_are_not_headers(split):
    seen = []

    def handler(request: Request) -> Response:
        seen.append(request)
        return echo(request)

    protocol, transport, _ = connect(handler)
    feed(protocol, b"POST /a HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
         b"Host: evil.example\r\n\r\nPOST /b HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhelloGET /c HTTP/1.1\r\n"
         + H + b"\r\n", split)
    assert [r[0] for r in responses(transport.take())] == [200, 200, 200]
    assert [r.path for r in seen] == ["/a", "/b", "/c"]
    assert seen[0].header("host") == ["127.0.0.1"]


def test_expect_100_continue_is_answered_before_the_body():
    protocol, transport, _ = connect()
    feed(protocol, b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n", False)
    assert transport.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    feed(protocol, b"hello", False)
    assert [r[0] for r in responses(transport.take())] == [200]


@SPLIT
def test_path_and_query_are_decoded_as_aiohttp_did(split):
    protocol, transport, _ = connect()
    feed(protocol, b"GET /re%61dy?level=info+&x&level=%C3%A9&=v#frag HTTP/1.1\r\n" + H + b"\r\n"
         b"GET http://other.example/p?q=1 HTTP/1.1\r\n" + H + b"\r\n", split)
    first, second = (json.loads(r[2]) for r in responses(transport.take()))
    assert first["path"] == "/ready"
    assert first["query"] == [["level", "info "], ["x", ""], ["level", "\u00e9"], ["", "v"]]
    assert (second["path"], second["query"]) == ("/p", [["q", "1"]])


def test_header_values_lose_surrounding_whitespace():
    protocol, transport, _ = connect()
    feed(protocol, b"GET / HTTP/1.1\r\nHost: \t localhost \t\r\n\r\n", False)
    assert json.loads(responses(transport.take())[0][2])["headers"] == [["host", "localhost"]]


def test_a_partial_request_times_out_with_408():
    protocol, transport, loop = connect()
    feed(protocol, b"GET / HTTP/1.1\r\nHo", False)
    assert expires_after(loop, DEFAULT.request_timeout, lambda: transport.out)
    assert [r[0] for r in responses(transport.take())] == [408] and transport.eof


@pytest.mark.parametrize("requests", [0, 1])
def test_an_idle_connection_is_closed_without_a_word(requests):
    protocol, transport, loop = connect()
    feed(protocol, (b"GET / HTTP/1.1\r\n" + H + b"\r\n") * requests, False)
    transport.take()
    assert expires_after(loop, DEFAULT.idle_timeout, lambda: transport.closed)
    assert transport.take() == b""


def test_a_client_that_does_not_read_stops_the_reading_until_it_does():
    protocol, transport, loop = connect(slow=True)
    feed(protocol, b"".join(b"GET /%d HTTP/1.1\r\n" % i + H + b"\r\n" for i in range(3)), False)
    assert not transport.reading
    paths = []
    for _ in range(3):
        paths += [json.loads(r[2])["path"] for r in responses(transport.take())]
    assert paths == ["/0", "/1", "/2"] and transport.reading


def test_a_client_that_never_reads_is_closed_after_the_idle_timeout():
    protocol, transport, loop = connect(slow=True)
    feed(protocol, b"GET / HTTP/1.1\r\n" + H + b"\r\nGET / HTTP/1.1\r\n" + H + b"\r\n", False)
    assert expires_after(loop, DEFAULT.idle_timeout, lambda: transport.closed)
def test_an_endpoint_that_fails_is_500_and_the_connection_goes_on(caplog):
    def failing(request: Request) -> Response:
        if request.path == "/fail":
            raise RuntimeError("boom")
        return echo(request)

    protocol, transport, _ = connect(failing)
    with caplog.at_level(logging.ERROR, logger="pyproxy"):
        feed(protocol, b"GET /fail HTTP/1.1\r\n" + H + b"\r\nGET /ok HTTP/1.1\r\n" + H + b"\r\n", False)
    assert [r[0] for r in responses(transport.take())] == [500, 200]
    assert "admin: GET /fail failed" in caplog.text and not transport.eof


def test_an_upgrade_request_is_answered_then_the_connection_ends():
    protocol, transport, _ = connect()
    feed(protocol, b"GET / HTTP/1.1\r\n" + H + b"Connection: upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x00", False)
    assert [r[0] for r in responses(transport.take())] == [200] and transport.eof


def test_the_client_half_closing_after_its_request_still_gets_the_answer():
    protocol, transport, _ = connect()
    feed(protocol, b"GET / HTTP/1.1\r\n" + H + b"\r\nGET /partial HTTP/1.1\r\n", False)
    protocol.eof_received()
    assert [r[0] for r in responses(transport.take())] == [200] and transport.eof

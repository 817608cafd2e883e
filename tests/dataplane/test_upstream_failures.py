"""Upstreams that fail, hang or lie (hardening.md §3.2), scripted at the byte level."""
from __future__ import annotations

import asyncio
import socket

import pytest

from pyproxy import ir
from pyproxy.dataplane.limits import Limits
from tests.helpers.http import Upstream
from tests.helpers.proxy import proxy_to
from tests.helpers.scripted import Reply, ok
from tests.helpers.wire import Truncated, Wire

GET = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
RESET_BODY = b"upstream connect error or disconnect/reset before headers. reset reason: connection termination"
PROTOCOL_BODY = b"upstream connect error or disconnect/reset before headers. reset reason: protocol error"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_connection_refused_is_503_with_envoy_body():
    async with proxy_to(free_port()) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(GET)
        resp = await wire.read_response()
        assert resp.status == 503
        assert resp.body == (b"upstream connect error or disconnect/reset before headers. reset reason: "
                             b"connection failure, transport failure reason: delayed connect error: 111")
        # a local 503 keeps the downstream connection
        await wire.send(GET)
        assert (await wire.read_response()).status == 503
        await wire.close()


async def test_upstream_closes_before_any_byte(scripted):
    up = await scripted(lambda req: Reply(close=True))
    async with proxy_to(up.port) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(GET)
        resp = await wire.read_response()
        assert (resp.status, resp.body) == (503, RESET_BODY)
        assert len(up.requests) == 1  # a fresh connection is not retried
        await wire.close()


@pytest.mark.parametrize("response", [
    b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 OK\r\nContent-Length: 0\r\n\r\n",
    b"ICY 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
    b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(300)) + b"Content-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70000 + b"\r\nContent-Length: 0\r\n\r\n",
], ids=["2000", "no-code", "icy", "nul", "cl-te", "cl-cl", "cl-plus", "obs-fold", "101-upgrade",
        "101-bare", "300-headers", "70k-header"])
async def test_invalid_response_is_502_and_connection_discarded(scripted, response):
    up = await scripted(lambda req: response if req.conn == 0 else ok())
    async with proxy_to(up.port) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(GET)
        resp = await wire.read_response()
        assert (resp.status, resp.body) == (502, PROTOCOL_BODY)
        await wire.send(GET)
        assert (await wire.read_response()).status == 200
        assert up.connections == 2
        await wire.close()


@pytest.mark.parametrize("headers, limits, status", [
    (4, Limits(max_response_headers=5), 200),
    (6, Limits(max_response_headers=5), 502),
    (4, Limits(max_response_header_bytes=100), 200),
    (12, Limits(max_response_header_bytes=100), 502),
], ids=["count-under", "count-over", "bytes-under", "bytes-over"])
async def test_response_header_limits_come_from_limits(scripted, headers, limits, status):
    extra = b"".join(b"X-%d: v\r\n" % i for i in range(headers))
    up = await scripted(lambda req: ok(extra=extra))
    async with proxy_to(up.port, limits=limits) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(GET)
        assert (await wire.read_response()).status == status
        await wire.close()


async def test_small_upstream_read_buffer_relays_everything(scripted):
    body = bytes(range(256)) * 40
    up = await scripted(lambda req: ok(body))
    async with proxy_to(up.port, limits=Limits(upstream_read_buffer=7)) as (rt, port):
        wire = await Wire.open(port)
        for _ in range(2):
            await wire.send(GET)
            assert (await wire.read_response()).body == body
        await wire.close()


async def test_early_hints_then_final_response(scripted):
    up = await scripted(lambda req: b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n" + ok(b"final"))
    async with proxy_to(up.port) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(GET)
        resp = await wire.read_response()
        assert (resp.status, resp.body) == (200, b"final")
        await wire.send(GET)
        assert (await wire.read_response()).body == b"final"
        assert up.connections == 1
        await wire.close()


async def test_http10_client_never_gets_1xx(scripted):
    up = await scripted(lambda req: b"HTTP/1.1 103 Early Hints\r\n\r\n" + ok(b"final"))
    async with proxy_to(up.port) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(b"GET / HTTP/1.0\r\nHost: a\r\n\r\n")
        resp = await wire.read_response()
        assert resp.status == 200 and resp.informational == []


@pytest.mark.parametrize("timeouts", [ir.Timeouts(request=0.3), ir.Timeouts(request=10, backend_request=0.3)])
async def test_slow_upstream_times_out(scripted, timeouts):
    up = await scripted(lambda req: Reply(hang=True) if req.conn == 0 else ok())
    async with proxy_to(up.port, timeouts=timeouts) as (rt, port):
        wire = await Wire.open(port)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await wire.send(GET)
        resp = await wire.read_response()
        assert (resp.status, resp.body) == (504, b"upstream request timeout")
        assert 0.25 < loop.time() - started < 2
        await wire.send(GET)  # the hung connection was dropped, not reused
        assert (await wire.read_response()).status == 200
        assert up.connections == 2
        await wire.close()


async def test_timeout_disabled(upstream: Upstream):
    async with proxy_to(upstream.port, timeouts=ir.Timeouts(request=None)) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(b"GET /delay/0.4 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (await wire.read_response()).status == 200
        await wire.close()
    async with proxy_to(upstream.port, timeouts=ir.Timeouts(request=0.2)) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(b"GET /delay/0.4 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (await wire.read_response()).status == 504
        await wire.close()


@pytest.mark.parametrize("response, close", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345", True),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n", True),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\nzz\r\n", False),
], ids=["content-length", "chunked", "bad-chunk"])
async def test_response_broken_after_headers_truncates_downstream(scripted, response, close):
    """Once the head went out, a failure can only cut the downstream response short: no
    terminal chunk, fewer bytes than Content-Length, never appended error text."""
    up = await scripted(lambda req: Reply(response, close=close, hang=not close) if req.conn == 0 else ok())
    async with proxy_to(up.port) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(GET)
        with pytest.raises(Truncated) as info:
            await wire.read_response()
        assert info.value.partial.startswith(b"HTTP/1.1 200 OK\r\n")
        assert info.value.partial.endswith(b"12345") or info.value.partial.endswith(b"abcde\r\n")
        wire = await Wire.open(port)
        await wire.send(GET)
        assert (await wire.read_response()).body == b"ok"
        assert up.connections == 2
        await wire.close()


async def test_upstream_connection_close_is_not_reused(scripted):
    up = await scripted(lambda req: ok(extra=b"Connection: close\r\n"))
    async with proxy_to(up.port) as (rt, port):
        wire = await Wire.open(port)
        for _ in range(3):
            await wire.send(GET)
            resp = await wire.read_response()
            assert resp.status == 200 and resp.header("connection") is None
        assert rt.pool.connects == 3 and up.connections == 3
        await wire.close()


async def test_keepalive_connection_is_reused(scripted):
    up = await scripted(lambda req: ok())
    async with proxy_to(up.port) as (rt, port):
        wire = await Wire.open(port)
        for _ in range(3):
            await wire.send(GET)
            assert (await wire.read_response()).status == 200
        assert rt.pool.connects == 1 and up.connections == 1
        await wire.close()


def stale_after_first(req):
    """The first connection answers one request, then dies on the next (the stale keep-alive
    race: the request was written to a connection the upstream had already given up)."""
    if req.conn == 0:
        return ok(b"first") if req.request_line.startswith(b"GET /first") else Reply(close=True)
    return ok(b"retried")


async def test_dead_pooled_connection_retried_once_for_get(scripted):
    up = await scripted(stale_after_first)
    async with proxy_to(up.port) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (await wire.read_response()).body == b"first"
        await wire.send(GET)
        resp = await wire.read_response()
        assert (resp.status, resp.body) == (200, b"retried")
        assert up.connections == 2
        await wire.close()


async def test_dead_pooled_connection_not_retried_for_post_with_body(scripted):
    up = await scripted(stale_after_first)
    async with proxy_to(up.port) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (await wire.read_response()).body == b"first"
        await wire.send(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
        resp = await wire.read_response()
        assert (resp.status, resp.body) == (503, RESET_BODY)
        assert up.connections == 1 and len(up.requests) == 2
        await wire.close()


async def test_upstream_closing_idle_connections_is_transparent(scripted):
    """An upstream that closes every connection after one response without saying so."""
    up = await scripted(lambda req: Reply(ok(), close=True))
    async with proxy_to(up.port) as (rt, port):
        wire = await Wire.open(port)
        for _ in range(3):
            await wire.send(GET)
            assert (await wire.read_response()).status == 200
        await wire.close()


@pytest.mark.parametrize("extra", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL",
    b"EVIL",
    b"HTTP/1.1 200 OK\r\nX-Partial",
], ids=["whole-response", "garbage", "partial-head"])
async def test_bytes_after_response_poison_the_connection(scripted, extra):
    up = await scripted(lambda req: ok(b"one") + extra if req.conn == 0 else ok(b"two"))
    async with proxy_to(up.port) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(GET)
        assert (await wire.read_response()).body == b"one"
        await wire.send(GET)
        resp = await wire.read_response()
        assert (resp.status, resp.body) == (200, b"two")
        assert up.connections == 2
        await wire.close()


@pytest.mark.parametrize("method, response", [
    (b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nBODY"),
    (b"GET", b"HTTP/1.1 204 No Content\r\n\r\nBODY"),
    (b"GET", b"HTTP/1.1 304 Not Modified\r\n\r\nBODY"),
], ids=["head", "204", "304"])
async def test_body_on_bodiless_response_is_dropped(scripted, method, response):
    up = await scripted(lambda req: response if req.conn == 0 else ok(b"clean"))
    async with proxy_to(up.port) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(method + b" /x HTTP/1.1\r\nHost: a\r\n\r\n")
        resp = await wire.read_response(head=method == b"HEAD")
        assert resp.status in (200, 204, 304)
        await wire.send(GET)
        resp = await wire.read_response()
        assert (resp.status, resp.body) == (200, b"clean")
        assert up.connections == 2
        await wire.close()


async def test_response_headers_are_stripped_and_reframed(scripted):
    response = (b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n"
                b"Proxy-Connection: x\r\nUpgrade: h2\r\nTrailer: x\r\nX-End: 2\r\nContent-Length: 2\r\n\r\nok")
    up = await scripted(lambda req: response)
    async with proxy_to(up.port) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(GET)
        resp = await wire.read_response()
        names = {k for k, _ in resp.headers}
        assert resp.header("x-end") == "2" and resp.header("content-length") == "2"
        assert not names & {"connection", "x-hop", "keep-alive", "proxy-connection", "upgrade", "trailer"}
        await wire.close()


async def test_bare_lf_in_response_is_never_forwarded_raw(scripted):
    up = await scripted(lambda req: b"HTTP/1.1 200 OK\r\nX-A: a\nSet-Cookie: x\r\nContent-Length: 2\r\n\r\nok")
    async with proxy_to(up.port) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(GET)
        resp = await wire.read_response()
        assert resp.status in (200, 502)
        assert b"a\nSet-Cookie" not in resp.raw
        await wire.close()

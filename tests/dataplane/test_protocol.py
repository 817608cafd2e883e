"""The downstream HTTP/1.1 protocol fed real bytes over a real socket, whole and one byte at
a time, with a real upstream behind the proxy."""
from __future__ import annotations

import pytest

from pyproxy import ir
from tests.helpers.http import Upstream
from tests.helpers.proxy import proxy_routes, proxy_to
from tests.helpers.scripted import Reply, ScriptedUpstream, ok
from tests.helpers.wire import Wire

SPLIT = pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])


@pytest.fixture
async def proxy(upstream: Upstream):
    async with proxy_to(upstream.port) as (rt, port):
        yield port


def echoed(resp) -> dict[str, str]:
    return dict(resp.json()["headers"])


@SPLIT
async def test_get(proxy, upstream, split):
    wire = await Wire.open(proxy)
    await wire.send(b"GET /get?a=1 HTTP/1.1\r\nHost: example.com\r\nX-Test: v\r\n\r\n", split)
    resp = await wire.read_response()
    assert resp.status == 200
    assert resp.json()["path"] == "/get?a=1"
    headers = echoed(resp)
    assert headers["host"] == "example.com"
    assert headers["x-test"] == "v"
    assert "content-length" not in headers and "transfer-encoding" not in headers
    assert resp.header("x-upstream") == "yes"
    await wire.send(b"GET /again HTTP/1.1\r\nHost: example.com\r\n\r\n", split)
    assert (await wire.read_response()).json()["path"] == "/again"
    await wire.close()


@SPLIT
async def test_post_with_content_length(proxy, upstream, split):
    wire = await Wire.open(proxy)
    await wire.send(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world", split)
    resp = await wire.read_response()
    assert resp.status == 200
    assert resp.json()["body"] == "hello world"
    assert echoed(resp)["content-length"] == "11"
    await wire.close()


@SPLIT
async def test_chunked_upload_is_rechunked_without_extensions(split):
    up = await ScriptedUpstream(lambda req: ok()).start()
    try:
        async with proxy_to(up.port) as (rt, port):
            wire = await Wire.open(port)
            await wire.send(b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"5;ext=1\r\nhello\r\n6;a=\"b\"\r\n world\r\n0\r\n\r\n", split)
            resp = await wire.read_response()
            assert (resp.status, resp.body) == (200, b"ok")
            await wire.close()
    finally:
        await up.stop()
    (req,) = up.requests
    assert b"transfer-encoding: chunked" in req.head.lower()
    assert b"content-length" not in req.head.lower()
    assert b";" not in req.body
    decoded, rest = b"", req.body
    while True:
        size, _, rest = rest.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        decoded, rest = decoded + rest[:n], rest[n + 2:]
    assert decoded == b"hello world"


@SPLIT
async def test_pipelined_requests_answered_in_order(proxy, upstream, split):
    wire = await Wire.open(proxy)
    await wire.send(
        b"GET /delay/0.2 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n", split)
    paths = [(await wire.read_response()).json() for _ in range(3)]
    assert [p["path"] for p in paths] == ["/delay/0.2", "/2", "/3"]
    assert paths[1]["body"] == "abc"
    await wire.close()


@SPLIT
async def test_http10_without_keepalive_closes(proxy, upstream, split):
    wire = await Wire.open(proxy)
    await wire.send(b"GET /a HTTP/1.0\r\nHost: a\r\n\r\n", split)
    resp = await wire.read_response()
    assert resp.status == 200
    assert resp.header("connection") == "close"
    assert await wire.closed()


@SPLIT
async def test_http10_keepalive(proxy, upstream, split):
    wire = await Wire.open(proxy)
    for path in (b"/a", b"/b"):
        await wire.send(b"GET %s HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n" % path, split)
        resp = await wire.read_response()
        assert resp.status == 200 and resp.json()["path"] == path.decode()
        assert resp.header("connection") == "keep-alive"
    await wire.close()


async def test_http10_client_gets_close_delimited_body_for_chunked_upstream():
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    up = await ScriptedUpstream(lambda req: chunked).start()
    try:
        async with proxy_to(up.port) as (rt, port):
            wire = await Wire.open(port)
            await wire.send(b"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
            resp = await wire.read_response()
            assert resp.body == b"abc"
            assert resp.header("transfer-encoding") is None and resp.header("connection") == "close"
            assert wire.eof
            # an HTTP/1.1 client gets it re-chunked on a kept connection
            wire = await Wire.open(port)
            await wire.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            resp = await wire.read_response()
            assert resp.body == b"abc" and resp.header("transfer-encoding") == "chunked"
            await wire.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            assert (await wire.read_response()).body == b"abc"
            await wire.close()
    finally:
        await up.stop()


@SPLIT
async def test_head_keeps_content_length_without_body(proxy, upstream, split):
    wire = await Wire.open(proxy)
    await wire.send(b"HEAD /bytes/1000 HTTP/1.1\r\nHost: a\r\n\r\n", split)
    resp = await wire.read_response(head=True)
    assert resp.status == 200
    assert resp.header("content-length") == "1000"
    # nothing follows the head: the next response on the connection is parsed cleanly
    await wire.send(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n", split)
    assert (await wire.read_response()).json()["path"] == "/next"
    await wire.close()


@SPLIT
@pytest.mark.parametrize("status", [204, 304])
async def test_bodiless_statuses(proxy, upstream, split, status):
    wire = await Wire.open(proxy)
    await wire.send(b"GET /status/%d HTTP/1.1\r\nHost: a\r\n\r\n" % status, split)
    resp = await wire.read_response()
    assert resp.status == status
    assert resp.header("transfer-encoding") is None
    if status == 204:
        assert resp.header("content-length") is None
    await wire.send(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n", split)
    assert (await wire.read_response()).json()["path"] == "/next"
    await wire.close()


@SPLIT
async def test_expect_100_continue(proxy, upstream, split):
    wire = await Wire.open(proxy)
    await wire.send(b"POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n", split)
    interim = await wire.read_one()
    assert interim.status == 100
    await wire.send(b"body", split)
    resp = await wire.read_response()
    assert resp.status == 200 and resp.json()["body"] == "body"
    assert "expect" not in echoed(resp)  # the proxy answered it
    await wire.close()


async def test_expect_100_continue_with_local_reply_closes():
    """A local reply to a request whose body was never sent: the connection cannot be reused."""
    route = ir.Route("direct", ir.Match(ir.PathMatch("PathPrefix", "/")), ir.DirectResponse(403, "no"))
    async with proxy_routes(route) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        resp = await wire.read_response()
        assert resp.status == 403 and resp.informational == []
        assert await wire.closed()


async def test_upstream_close_delimited_response():
    up = await ScriptedUpstream(lambda req: Reply(b"HTTP/1.0 200 OK\r\n\r\nuntil-close", close=True)).start()
    try:
        async with proxy_to(up.port) as (rt, port):
            wire = await Wire.open(port)
            await wire.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            resp = await wire.read_response()
            assert resp.body == b"until-close" and resp.header("transfer-encoding") == "chunked"
            await wire.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            assert (await wire.read_response()).body == b"until-close"
            await wire.close()
    finally:
        await up.stop()

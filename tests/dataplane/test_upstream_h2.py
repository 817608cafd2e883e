"""HTTP/2 to backends (``dataplane/upstream_h2.py`` and the pool's streams): HTTP/1.1 and
HTTP/2 clients forwarded to a scripted HTTP/2 upstream (h2c with prior knowledge, or ALPN h2
over TLS), requests sharing connections within MAX_CONCURRENT_STREAMS, flow control both ways,
trailers, and the upstream's stream resets, refusals and GOAWAY."""
from __future__ import annotations

import asyncio

import h2.errors
import pytest

from pyproxy import ir
from pyproxy.dataplane.limits import Limits
from tests.conftest import destination, server_context
from tests.helpers.h2client import H2Client
from tests.helpers.h2server import H2Reply, H2Request
from tests.helpers.proxy import proxy_to
from tests.helpers.recorder import free_port
from tests.helpers.wire import Wire

REMOTE_RESET = b"upstream connect error or disconnect/reset before headers. reset reason: remote reset"


def echo(request: H2Request) -> H2Reply:
    """What the upstream saw: method, path, authority, scheme and body."""
    said = b"%s %s %s %s %s" % (request.header(":method").encode(), request.header(":path").encode(),
                                 request.header(":authority").encode(), request.header(":scheme").encode(),
                                 request.body)
    return H2Reply(headers=[(b"content-type", b"text/plain"), (b"x-upstream", b"h2")], body=said)


def held(release: asyncio.Event, script=echo):
    """Answers wait for ``release``: requests stay open together."""
    def answer(request: H2Request) -> H2Reply:
        reply = script(request)
        reply.release = release
        return reply
    return answer


async def get(port: int, path: str = "/x", extra: bytes = b"") -> tuple[int, bytes, dict]:
    wire = await Wire.open(port)
    await wire.send(b"GET %s HTTP/1.1\r\nHost: app.test\r\n%s\r\n" % (path.encode(), extra))
    resp = await wire.read_response()
    await wire.close()
    return resp.status, resp.body, dict(resp.headers)


# ------------------------------------------------------------------ requests and responses


async def test_http1_requests_reach_an_h2c_upstream_as_http2(h2_upstream):
    up = await h2_upstream(echo)
    async with proxy_to(up.port, http2=True) as (_, port):
        wire = await Wire.open(port)
        await wire.send(b"GET /a?q=1 HTTP/1.1\r\nHost: app.test\r\nConnection: keep-alive\r\nTE: trailers\r\n\r\n")
        first = await wire.read_response()
        await wire.send(b"POST /form HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nhello")
        posted = await wire.read_response()
        await wire.send(b"POST /chunks HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        chunked = await wire.read_response()
        await wire.close()
    assert (first.status, first.body) == (200, b"GET /a?q=1 app.test http ")
    assert first.header("x-upstream") == "h2" and first.header("transfer-encoding") == "chunked"
    assert posted.body == b"POST /form app.test http hello"
    assert chunked.body == b"POST /chunks app.test http abcde"
    seen = {r.header(":path"): dict(r.headers) for r in up.requests}
    assert seen["/a?q=1"][b"te"] == b"trailers" and seen["/a?q=1"][b"x-forwarded-for"] == b"127.0.0.1"
    assert b"connection" not in seen["/a?q=1"] and b"host" not in seen["/a?q=1"]
    assert seen["/form"][b"content-length"] == b"5" and b"content-length" not in seen["/chunks"]
    assert up.connections == 1


async def test_http2_requests_reach_an_h2c_upstream(h2_upstream):
    up = await h2_upstream(echo)
    async with proxy_to(up.port, http2=True) as (_, port):
        client = await H2Client.connect(port)
        got = await client.request("/get")
        posted = await client.request("/post", "POST", body=[b"abc", b"def", b""])
        await client.close()
    assert (got.status, got.body) == (200, b"GET /get test http ")
    assert (posted.status, posted.body) == (200, b"POST /post test http abcdef")


async def test_concurrent_requests_share_one_upstream_connection(h2_upstream):
    release = asyncio.Event()
    up = await h2_upstream(held(release))
    async with proxy_to(up.port, http2=True) as (rt, port):
        client = await H2Client.connect(port)
        sids = [await client.start(f"/r{i}") for i in range(30)]
        await up.wait_arrived(30)
        assert "streams=30" in repr(rt.pool)
        release.set()
        answers = [await client.response(sid) for sid in sids]
        await client.close()
        assert rt.pool.connects == 1
    assert [a.status for a in answers] == [200] * 30
    assert (up.connections, up.peak) == (1, 30)


async def test_another_connection_opens_when_max_concurrent_streams_is_reached(h2_upstream):
    release = asyncio.Event()
    up = await h2_upstream(lambda r: echo(r) if r.header(":path") == "/warm" else held(release)(r), max_streams=2)
    async with proxy_to(up.port, http2=True) as (rt, port):
        assert (await get(port, "/warm"))[0] == 200  # (the server's SETTINGS are known from here on)
        waiting = [asyncio.ensure_future(get(port, f"/r{i}")) for i in range(5)]
        await up.wait_arrived(6)
        release.set()
        statuses = [(await w)[0] for w in waiting]
        assert rt.pool.connects == 3
    assert statuses == [200] * 5
    assert up.connections == 3 and up.peak == 2


async def test_the_pool_limits_connections_and_queues_the_rest(h2_upstream):
    """With one connection allowed per key and one stream per connection, requests queue."""
    release = asyncio.Event()
    up = await h2_upstream(held(release), max_streams=1)
    limits = Limits(pool_max_per_key=1)
    async with proxy_to(up.port, http2=True, limits=limits) as (rt, port):
        waiting = [asyncio.ensure_future(get(port, f"/r{i}")) for i in range(3)]
        await up.wait_arrived(1)
        release.set()
        statuses = [(await w)[0] for w in waiting]
        assert rt.pool.connects == 1
    assert statuses == [200] * 3 and up.peak == 1


# ------------------------------------------------------------------ trailers


async def test_trailers_from_an_h2_upstream_reach_both_kinds_of_client(h2_upstream):
    up = await h2_upstream(lambda r: H2Reply(headers=[(b"content-type", b"application/grpc")], body=b"\0\0\0\0\0",
                                             trailers=[(b"grpc-status", b"0"), (b"grpc-message", b"ok")]))
    async with proxy_to(up.port, http2=True) as (_, port):
        client = await H2Client.connect(port)
        over_h2 = await client.request("/svc/Method", "POST", headers=[(b"content-type", b"application/grpc"),
                                                                       (b"te", b"trailers")], body=[b"\0\0\0\0\0"])
        await client.close()
        wire = await Wire.open(port)
        await wire.send(b"POST /svc/Method HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
        over_h1 = await wire.read_response()
        await wire.close()
    assert over_h2.frames == ["headers", "data", "trailers"]
    assert over_h2.trailers == [(b"grpc-status", b"0"), (b"grpc-message", b"ok")]
    assert over_h1.body == b"\0\0\0\0\0" and over_h1.trailers == [("grpc-status", "0"), ("grpc-message", "ok")]


async def test_a_trailers_only_answer_stays_one_headers_frame(h2_upstream):
    up = await h2_upstream(lambda r: H2Reply(headers=[(b"content-type", b"application/grpc"),
                                                      (b"grpc-status", b"5"), (b"grpc-message", b"missing")]))
    async with proxy_to(up.port, http2=True) as (_, port):
        client = await H2Client.connect(port)
        resp = await client.request("/svc/Method", "POST", body=[b"\0\0\0\0\0"])
        await client.close()
    assert resp.frames == ["headers+end"]
    assert (resp.status, resp.header("grpc-status"), resp.header("grpc-message")) == (200, "5", "missing")


# ------------------------------------------------------------------ flow control


async def test_bodies_larger_than_every_window_go_both_ways(h2_upstream):
    big = bytes(range(256)) * 4096 * 3  # 3 MiB
    up = await h2_upstream(lambda r: H2Reply(body=r.body[::-1]))
    async with proxy_to(up.port, http2=True) as (_, port):
        wire = await Wire.open(port, timeout=20)
        await wire.send(b"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s" % (len(big), big))
        resp = await wire.read_response()
        await wire.close()
    assert resp.status == 200 and resp.body == big[::-1]
    assert up.requests[0].body == big


async def test_a_client_that_does_not_read_stops_the_upstream_at_its_window(h2_upstream):
    """The proxy acknowledges response DATA only as the client takes it: while the client reads
    nothing the upstream runs out of window and waits; then everything arrives."""
    size = 16 << 20
    up = await h2_upstream(lambda r: H2Reply(body=b"z" * size))
    async with proxy_to(up.port, http2=True) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        async with asyncio.timeout(10):
            while not any(conn.windows for conn in up.open):  # the upstream waits for a WINDOW_UPDATE
                await asyncio.sleep(0.01)
        received = 0
        async with asyncio.timeout(30):
            while received < size:
                received += len(await reader.read(1 << 20))
        writer.close()
    assert received >= size


# ------------------------------------------------------------------ failures


def first_attempt(code: h2.errors.ErrorCodes):
    """Resets the first attempt of every path with ``code``, answers the next ones."""
    tried: set[str | None] = set()

    def answer(request: H2Request) -> H2Reply:
        path = request.header(":path")
        if path in tried:
            return echo(request)
        tried.add(path)
        return H2Reply(reset=code)
    return answer


async def test_a_stream_reset_by_the_upstream_is_503_then_retried_when_the_route_says_so(h2_upstream):
    up = await h2_upstream(first_attempt(h2.errors.ErrorCodes.INTERNAL_ERROR))
    async with proxy_to(up.port, http2=True) as (_, port):
        status, body, _ = await get(port, "/once")
    assert (status, body) == (503, REMOTE_RESET)
    async with proxy_to(up.port, http2=True, retry=ir.Retry(retries=1)) as (_, port):
        status, body, _ = await get(port, "/again")
    assert (status, body) == (200, b"GET /again app.test http ")
    assert len(up.requests) == 3


async def test_a_refused_stream_is_sent_again(h2_upstream):
    up = await h2_upstream(first_attempt(h2.errors.ErrorCodes.REFUSED_STREAM))
    async with proxy_to(up.port, http2=True) as (_, port):
        status, body, _ = await get(port, "/refused")
    assert (status, body) == (200, b"GET /refused app.test http ")
    assert len(up.requests) == 2


async def test_goaway_lets_earlier_streams_finish_and_sends_later_ones_again(h2_upstream):
    release = asyncio.Event()

    def script(request: H2Request) -> H2Reply:
        if request.header(":path") == "/first":
            return held(release)(request)
        if request.conn == 0:
            return H2Reply(goaway=request.stream_id - 2)  # this stream was not processed
        return echo(request)

    up = await h2_upstream(script)
    async with proxy_to(up.port, http2=True) as (rt, port):
        first = asyncio.ensure_future(get(port, "/first"))
        await up.wait_arrived(1)
        second = await get(port, "/second")
        release.set()
        assert (await first)[:2] == (200, b"GET /first app.test http ")
        async with asyncio.timeout(5):
            while len(up.open) != 1:  # the proxy closes the first connection once its last stream ended
                await asyncio.sleep(0.01)
        assert rt.pool.connects == 2
    assert second[:2] == (200, b"GET /second app.test http ")
    assert [r.conn for r in up.requests] == [0, 0, 1]


async def test_an_upstream_that_goes_away_fails_its_open_streams_with_503(h2_upstream):
    def script(request: H2Request) -> H2Reply:
        for conn in up.open:
            conn.transport.close()
        return H2Reply()

    up = await h2_upstream(script)
    async with proxy_to(up.port, http2=True) as (_, port):
        status, body, _ = await get(port, "/gone")
    assert status == 503
    assert body == b"upstream connect error or disconnect/reset before headers. reset reason: connection termination"


async def test_an_unreachable_h2c_upstream_is_503():
    async with proxy_to(free_port(), http2=True) as (_, port):
        status, body, _ = await get(port)
    assert status == 503 and b"reset reason: connection failure" in body


# ------------------------------------------------------------------ TLS


async def test_alpn_h2_over_tls(ca, h2_upstream):
    up = await h2_upstream(echo, ssl_context=server_context(ca, "backend.test"))
    tls = ir.UpstreamTLS(sni="backend.test", ca=ca.cert_pem.bytes().decode())
    async with proxy_to(up.port, tls=tls, http2=True) as (_, port):
        status, body, _ = await get(port, "/tls")
    assert (status, body) == (200, b"GET /tls app.test https ")


async def test_a_tls_upstream_that_selects_http1_is_spoken_to_in_http1(tls_upstream, ca):
    tls = ir.UpstreamTLS(sni="backend.test", ca=ca.cert_pem.bytes().decode())
    async with proxy_to(tls_upstream.port, tls=tls, http2=True) as (rt, port):
        results = [await get(port, f"/hello/{i}") for i in range(3)]
        assert rt.pool.connects == 1
    assert [r[0] for r in results] == [200] * 3
    assert [s.path for s in tls_upstream.seen] == ["/hello/0", "/hello/1", "/hello/2"]


@pytest.mark.parametrize("http2", [False, True])
async def test_the_alpn_offered_follows_the_destination(ca, http2):
    """h2 is offered only to destinations that speak HTTP/2."""
    from pyproxy.dataplane.tls import client_context
    tls = ir.UpstreamTLS(sni="backend.test", ca=ca.cert_pem.bytes().decode())
    offered = client_context(tls, http2)
    assert offered is not client_context(tls, not http2)
    assert offered is client_context(tls, http2)


async def test_idle_upstream_connections_close_after_the_idle_timeout(h2_upstream):
    up = await h2_upstream(echo)
    async with proxy_to(up.port, http2=True, limits=Limits(pool_idle_timeout=0.2)) as (rt, port):
        assert (await get(port))[0] == 200
        async with asyncio.timeout(5):
            while up.open:
                await asyncio.sleep(0.01)
        assert repr(rt.pool) == "<Pool []>"


async def test_a_request_mirrored_to_an_h2c_destination(upstream, h2_upstream):
    shadow = await h2_upstream(echo)
    mirror = ir.Mirror(destination(shadow.port, name="backend/default/shadow", http2=True))
    async with proxy_to(upstream.port, mirrors=(mirror,)) as (_, port):
        wire = await Wire.open(port)
        await wire.send(b"POST /m HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
        assert (await wire.read_response()).status == 200
        await wire.close()
        await shadow.wait_arrived(1)
    assert (shadow.requests[0].header(":path"), shadow.requests[0].body) == ("/m", b"abc")


async def test_a_head_request_gets_the_length_without_a_body(h2_upstream):
    up = await h2_upstream(lambda r: H2Reply(headers=[(b"content-length", b"5")]))
    async with proxy_to(up.port, http2=True) as (_, port):
        wire = await Wire.open(port)
        await wire.send(b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n")
        resp = await wire.read_response(head=True)
        await wire.send(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
        after = await wire.read_response(head=True)
        await wire.close()
    assert (resp.status, resp.header("content-length"), after.status) == (200, "5", 200)

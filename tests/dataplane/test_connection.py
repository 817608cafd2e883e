"""Connection management: deadlines, pipelining floods, answers that end a request early,
and closes that do not destroy the last response."""
from __future__ import annotations

import asyncio
import ssl

import pytest

from pyproxy import ir
from pyproxy.dataplane.limits import Limits
from tests.conftest import destination, serve_ir
from tests.helpers.http import Upstream
from tests.helpers.proxy import proxy_routes, proxy_to
from tests.helpers.scripted import Reply, ScriptedUpstream
from tests.helpers.wire import Wire

SHORT_DEADLINES = Limits(header_timeout=0.3, idle_timeout=0.3)
SHORT_BODY_DEADLINE = Limits(body_timeout=0.3)


@pytest.mark.parametrize("data", [b"", b"GET / HTTP/1.1\r\nHost: a\r\n", b"GE"],
                         ids=["silent", "slowloris", "partial-line"])
async def test_header_deadline(upstream: Upstream, data):
    async with proxy_to(upstream.port, limits=SHORT_DEADLINES) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(data)
        if data:
            resp = await wire.read_response()
            assert resp.status == 408 and resp.header("connection") == "close"
        assert await wire.closed()
        assert upstream.seen == []


async def test_idle_keepalive_connection_closes(upstream: Upstream):
    async with proxy_to(upstream.port, limits=SHORT_DEADLINES) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (await wire.read_response()).status == 200
        assert await wire.closed()
        await wire.close()
        await gone(rt)


async def gone(rt, timeout: float = 2) -> None:
    """Wait until the proxy has no downstream connection left."""
    for _ in range(int(timeout / 0.01)):
        if not rt.context.connections:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(rt.context.connections)} connections left")


async def test_pipelining_flood_behind_a_slow_request(upstream: Upstream):
    """Thousands of pipelined requests answered locally, queued behind one forwarded request
    (one read holds them all): answered in order, without recursion."""
    slow = ir.Route("slow", ir.Match(ir.PathMatch("PathPrefix", "/delay")),
                    ir.Forward((ir.WeightedBackend(1, destination(upstream.port)),)))
    n = 3000
    async with proxy_routes(slow) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(b"GET /delay/0.1 HTTP/1.1\r\nHost: a\r\n\r\n"
                        + b"".join(b"GET /n%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in range(n))
                        + b"GET /delay/0 HTTP/1.1\r\nHost: a\r\n\r\n")
        first = await wire.read_response()
        statuses = [(await wire.read_response()).status for _ in range(n)]
        last = await wire.read_response()
        assert first.json()["path"] == "/delay/0.1" and last.json()["path"] == "/delay/0"
        assert statuses == [404] * n
        await wire.close()


async def test_local_reply_before_the_body_closes():
    """An answer before the body arrived ends the connection rather than reading a body of
    any size to throw it away."""
    r = ir.Route("deny", ir.Match(ir.PathMatch("PathPrefix", "/")), ir.DirectResponse(403))
    async with proxy_routes(r) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\npartial")
        resp = await wire.read_response()
        assert resp.status == 403 and resp.header("connection") == "close"
        assert await wire.closed()
        # ...but a bodiless request keeps its connection
        wire = await Wire.open(port)
        await wire.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert [(await wire.read_response()).status for _ in range(2)] == [403, 403]
        await wire.close()


async def test_connect_failure_with_large_body_is_answered_and_closed():
    async with proxy_to(1) as (rt, port):  # nothing listens on port 1
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        size = 4 << 20
        writer.write(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size)
        wire = Wire(reader, writer, 5)

        async def push():
            chunk = b"x" * 65536
            for _ in range(size // len(chunk)):
                writer.write(chunk)
                await writer.drain()

        pushing = asyncio.create_task(push())
        resp = await wire.read_response()
        assert resp.status == 503 and resp.header("connection") == "close"
        assert await wire.closed()
        pushing.cancel()
        await asyncio.gather(pushing, return_exceptions=True)
        writer.close()


async def test_upstream_answering_before_reading_the_body():
    """The response goes back as soon as it arrives; the rest of the upload is not read and
    the connection closes after the response."""
    async def serve(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbig!")
        await writer.drain()
        writer.close()

    upstream = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        async with proxy_to(upstream.sockets[0].getsockname()[1]) as (rt, port):
            wire = await Wire.open(port)
            await wire.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000)
            resp = await wire.read_response()
            assert (resp.status, resp.body) == (413, b"big!")
            assert resp.header("connection") == "close"
            assert await wire.closed()
    finally:
        upstream.close()


async def test_client_disconnect_aborts_the_upstream_request():
    up = await ScriptedUpstream(lambda req: Reply(hang=True)).start()
    try:
        async with proxy_to(up.port) as (rt, port):
            wire = await Wire.open(port)
            await wire.send(b"GET /hang HTTP/1.1\r\nHost: a\r\n\r\n")
            await asyncio.wait_for(up.arrived.wait(), 5)
            (proto,) = rt.context.connections
            conn = proto.queue[0].forwarder.conn
            await wire.close()
            await gone(rt)
            assert conn.closed and rt.pool.connects == 1
    finally:
        await up.stop()


async def test_https_listener_keeps_alive_and_closes_after_errors(ca, upstream: Upstream):
    leaf = ca.issue_cert("front.test")
    cert = ir.Certificate("front", "".join(b.bytes().decode() for b in leaf.cert_chain_pems),
                          leaf.private_key_pem.bytes().decode())
    route = ir.Route("r", ir.Match(ir.PathMatch("PathPrefix", "/")),
                     ir.Forward((ir.WeightedBackend(1, destination(upstream.port)),)))
    lst = ir.Listener("listener/tls", "127.0.0.1", 0, "HTTPS", (ir.VirtualHost("vhost/front", "*", (route,)),),
                      tls=ir.ListenerTLS((cert,)))
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    async with serve_ir(ir.Config((lst,))) as rt:
        port = rt.ports[("127.0.0.1", 0)]
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname="front.test"), 5)
        wire = Wire(reader, writer, 5)
        for _ in range(2):
            await wire.send(b"GET /x HTTP/1.1\r\nHost: front.test\r\n\r\n")
            resp = await wire.read_response()
            assert resp.status == 200
            assert dict(resp.json()["headers"])["x-forwarded-proto"] == "https"
        await wire.send(b"GET /x HTTP/1.1\r\nHost: front.test\r\nX: a\x00b\r\n\r\n" + b"GET /smuggled HTTP/1.1\r\n")
        resp = await wire.read_response()
        assert resp.status == 400 and resp.header("connection") == "close"
        assert await wire.closed()
        await wire.close()
    assert [s.path for s in upstream.seen] == ["/x", "/x"]


async def test_silent_request_body_gets_408_and_close(upstream: Upstream):
    """A client that stops in the middle of its body (slow-body attack) is cut off."""
    async with proxy_to(upstream.port, limits=SHORT_BODY_DEADLINE) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        resp = await wire.read_response()
        assert resp.status == 408 and resp.header("connection") == "close"
        assert await wire.closed()


async def test_a_body_that_keeps_coming_is_not_cut(upstream: Upstream):
    """The body deadline measures silence, not the whole upload: 10 pieces 0.1 s apart
    (1 s in all) pass with a 0.3 s deadline."""
    async with proxy_to(upstream.port, limits=SHORT_BODY_DEADLINE) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n")
        for _ in range(10):
            await asyncio.sleep(0.1)
            await wire.send(b"x")
        resp = await wire.read_response()
        assert resp.status == 200
        assert upstream.seen[-1].body == b"x" * 10

"""Response trailers from an HTTP/1.1 upstream (the trailer section of its chunked body),
relayed to HTTP/1.1 clients in the last chunk of a chunked response (dropped when the
response to the client is not chunked) and to HTTP/2 clients as a trailers HEADERS frame;
fields that frame or route a message are never relayed. Upstreams are scripted at the byte
level; the HTTP/2 client is the h2 library."""
from __future__ import annotations

import pytest

from tests.helpers.h2client import H2Client
from tests.helpers.http import raw_exchange
from tests.helpers.proxy import proxy_to
from tests.helpers.scripted import ok
from tests.helpers.wire import Truncated, Wire

TRAILED = (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: application/grpc\r\n\r\n"
           b"5\r\nhello\r\n0\r\ngrpc-status: 0\r\ngrpc-message: all%20good\r\nkeep-alive: timeout=5\r\n"
           b"connection: x\r\n\r\n")


async def test_an_http1_client_gets_the_trailers_in_the_last_chunk(scripted):
    up = await scripted(lambda req: TRAILED)
    async with proxy_to(up.port) as (_, port):
        wire = await Wire.open(port)
        await wire.send(b"GET /t HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n")
        resp = await wire.read_response()
        assert resp.status == 200 and resp.body == b"hello"
        assert resp.raw.endswith(b"5\r\nhello\r\n0\r\ngrpc-status: 0\r\ngrpc-message: all%20good\r\n\r\n")
        assert resp.trailers == [("grpc-status", "0"), ("grpc-message", "all%20good")]
        await wire.send(b"GET /again HTTP/1.1\r\nHost: a\r\n\r\n")  # the connection goes on
        assert (await wire.read_response()).status == 200
        await wire.close()


async def test_an_http10_client_gets_the_body_without_them(scripted):
    up = await scripted(lambda req: TRAILED)
    async with proxy_to(up.port) as (_, port):
        data = await raw_exchange(port, b"GET /t HTTP/1.0\r\nHost: a\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"connection: close" in data
    assert data.endswith(b"\r\n\r\nhello")  # close-delimited: no chunk, no trailer


async def test_an_http2_client_gets_them_as_the_last_headers_frame(scripted):
    up = await scripted(lambda req: TRAILED)
    async with proxy_to(up.port) as (_, port):
        client = await H2Client.connect(port)
        resp = await client.request("/t")
        await client.close()
    assert resp.status == 200 and resp.body == b"hello"
    assert resp.trailers == [(b"grpc-status", b"0"), (b"grpc-message", b"all%20good")]
    assert resp.frames == ["headers", "data", "trailers"]


async def test_an_http2_request_body_ended_by_an_empty_data_frame_is_chunked_once(scripted):
    """An empty DATA frame (gRPC clients end their requests so) is no chunk: the body reaches
    the upstream whole, its framing intact, and the connection serves the next request."""
    up = await scripted(lambda req: ok(b"got"))
    async with proxy_to(up.port) as (rt, port):
        client = await H2Client.connect(port)
        first = await client.request("/a", "POST", body=[b"abc", b"de", b""])
        second = await client.request("/b", "POST", body=[b"xyz", b""])
        await client.close()
    assert (first.status, first.body, second.status) == (200, b"got", 200)
    assert [r.body for r in up.requests] == [b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", b"3\r\nxyz\r\n0\r\n\r\n"]
    assert up.connections == 1 and rt.pool.connects == 1


async def test_trailers_over_the_response_header_limits_cut_the_response(scripted):
    many = b"".join(b"x-t%d: v\r\n" % i for i in range(101))  # max_response_headers is 100
    up = await scripted(lambda req: b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n" + many
                        + b"\r\n")
    async with proxy_to(up.port) as (_, port):
        wire = await Wire.open(port)
        await wire.send(b"GET /t HTTP/1.1\r\nHost: a\r\n\r\n")
        with pytest.raises(Truncated) as cut:
            await wire.read_response()
        await wire.close()
    assert cut.value.partial.endswith(b"2\r\nok\r\n")  # the body so far, then the connection closed

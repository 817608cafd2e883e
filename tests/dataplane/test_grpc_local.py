"""The proxy's own answers to gRPC calls (``dataplane/grpc.py``): a gRPC status with HTTP 200,
as Envoy sends, in one HEADERS frame to HTTP/2 clients and in the head to HTTP/1.1 ones."""
from __future__ import annotations

import asyncio

import pytest

from pyproxy import ir
from pyproxy.dataplane import grpc
from tests.conftest import destination, forward
from tests.helpers.h2client import H2Client, H2Response
from tests.helpers.h2server import H2Reply
from tests.helpers.proxy import proxy_routes, proxy_to
from tests.helpers.recorder import free_port
from tests.helpers.wire import Wire

GRPC = [(b"content-type", b"application/grpc"), (b"te", b"trailers")]
MESSAGE = b"\0\0\0\0\0"  # an empty protobuf message, length-prefixed


@pytest.mark.parametrize(("status", "code"), [
    (400, 13), (401, 16), (403, 7), (404, 12), (429, 14), (502, 14), (503, 14), (504, 4), (500, 2), (408, 2),
])
def test_http_statuses_map_to_grpc_codes_as_in_envoy_but_timeouts(status, code):
    assert grpc.status_headers(status, b"")[1] == (b"grpc-status", b"%d" % code)


@pytest.mark.parametrize(("content_type", "expected"), [
    (b"application/grpc", True), (b"application/grpc+proto", True), (b"application/grpc;charset=utf-8", True),
    (b"application/grpc-web", False), (b"application/json", False), (None, False),
])
def test_what_is_a_grpc_call(content_type, expected):
    headers = [(b"content-type", content_type)] if content_type is not None else []
    assert grpc.is_grpc([(b"host", b"a"), *headers]) is expected


def test_the_message_is_percent_encoded():
    assert grpc.percent_encode("100% ok, naïve\n".encode()) == b"100%25 ok, na%C3%AFve%0A"


async def call(port: int, path: str = "/pkg.Svc/Method") -> H2Response:
    client = await H2Client.connect(port)
    resp = await client.request(path, "POST", headers=GRPC, body=[MESSAGE])
    await client.close()
    return resp


async def test_no_route_is_unimplemented_in_one_headers_frame(upstream):
    match = ir.Match(ir.PathMatch("PathPrefix", "/other"))
    async with proxy_routes(forward("r", destination(upstream.port), match=match)) as (_, port):
        resp = await call(port)
    assert resp.frames == ["headers+end"]
    assert (resp.status, resp.header("content-type"), resp.header("grpc-status")) == (200, "application/grpc", "12")
    assert resp.header("grpc-message") is None and resp.header("content-length") is None  # (404 has no body)


async def test_an_unreachable_backend_is_unavailable_with_envoys_reason():
    async with proxy_to(free_port(), http2=True) as (_, port):
        resp = await call(port)
    assert (resp.status, resp.header("grpc-status")) == (200, "14")
    assert resp.header("grpc-message").startswith(
        "upstream connect error or disconnect/reset before headers. reset reason: connection failure")


async def test_a_route_timeout_is_deadline_exceeded(h2_upstream):
    never = asyncio.Event()
    up = await h2_upstream(lambda r: H2Reply(release=never))
    async with proxy_to(up.port, http2=True, timeouts=ir.Timeouts(request=0.2)) as (_, port):
        resp = await call(port)
    assert (resp.status, resp.header("grpc-status"), resp.header("grpc-message")) == (
        200, "4", "upstream request timeout")


async def test_an_http1_grpc_request_gets_the_status_in_the_head():
    async with proxy_to(free_port()) as (_, port):
        wire = await Wire.open(port)
        await wire.send(b"POST /pkg.Svc/Method HTTP/1.1\r\nHost: a\r\nContent-Type: application/grpc\r\n"
                        b"Content-Length: 5\r\n\r\n\0\0\0\0\0")
        resp = await wire.read_response()
        await wire.close()
    assert (resp.status, resp.header("grpc-status"), resp.body) == (200, "14", b"")
    assert resp.header("content-type") == "application/grpc"


async def test_other_requests_keep_their_local_replies():
    async with proxy_to(free_port(), http2=True) as (_, port):
        client = await H2Client.connect(port)
        resp = await client.request("/x", "POST", headers=[(b"content-type", b"application/json")], body=[b"{}"])
        await client.close()
    assert resp.status == 503 and resp.header("grpc-status") is None

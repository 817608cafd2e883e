"""gRPC through the proxy with grpcio on both sides: a grpcio server behind a Backend with
``appProtocols: [gateway.envoyproxy.io/h2c]`` (an HTTPRoute routes to it by path prefix), a
grpcio client in front, and the runtime loading the YAML. The service is generic handlers on
raw bytes, so no .proto is compiled. grpcio's synchronous API runs in threads."""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from pyproxy.runtime import Runtime, Settings
from tests.helpers.recorder import free_port
from tests.helpers.wire import Wire

CONCURRENT = 20


class Service:
    """``test.Echo``: Unary echoes, Stream sends the number of messages asked for, Fail
    answers NOT_FOUND, Slow waits until its caller gives up, Gather waits until CONCURRENT
    calls are in it at once."""

    def __init__(self) -> None:
        self.gathered = threading.Barrier(CONCURRENT)
        self.deadlines: list[float | None] = []
        self.cancelled = threading.Event()

    def unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        context.set_trailing_metadata((("x-served-by", "grpcio"),))
        return b"echo:" + request

    def stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        for i in range(int(request)):
            yield b"message %d" % i

    def fail(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        context.set_trailing_metadata((("x-reason", "missing"),))
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")

    def slow(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.deadlines.append(context.time_remaining())
        until = time.monotonic() + 10
        while context.is_active() and time.monotonic() < until:
            time.sleep(0.01)
        if not context.is_active():
            self.cancelled.set()
        return b"late"

    def gather(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.gathered.wait(timeout=10)  # BrokenBarrierError unless CONCURRENT calls are here at once
        return request

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler("test.Echo", {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
            "Stream": grpc.unary_stream_rpc_method_handler(self.stream),
            "Fail": grpc.unary_unary_rpc_method_handler(self.fail),
            "Slow": grpc.unary_unary_rpc_method_handler(self.slow),
            "Gather": grpc.unary_unary_rpc_method_handler(self.gather),
        })


@pytest.fixture
def service() -> Iterator[tuple[Service, int]]:
    svc = Service()
    server = grpc.server(ThreadPoolExecutor(max_workers=CONCURRENT + 8))
    server.add_generic_rpc_handlers((svc.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield svc, port
    server.stop(grace=None)


HTTPROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: echo
spec:
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /test.Echo
    backendRefs:
    - group: gateway.envoyproxy.io
      kind: Backend
      name: echo
"""
H2C = "  appProtocols: [gateway.envoyproxy.io/h2c]\n"


def config(backend_port: int, route: str = HTTPROUTE, app_protocols: str = H2C) -> str:
    return f"""\
{route}---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata:
  name: echo
spec:
{app_protocols}  endpoints:
  - ip:
      address: 127.0.0.1
      port: {backend_port}
"""


@asynccontextmanager
async def proxy(tmp_path: Path, backend_port: int, text: str = ""):
    """The runtime serving ``text`` (default: ``config(backend_port)``) on 127.0.0.1; yields
    (runtime, port)."""
    (tmp_path / "grpc.yaml").write_text(text or config(backend_port))
    runtime = Runtime(Settings(config_paths=(str(tmp_path),), listen=("127.0.0.1", 0), access_log="off"))
    await runtime.start()
    try:
        yield runtime, runtime.ports[("127.0.0.1", 0)]
    finally:
        await runtime.stop()


def channel(port: int) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{port}")


def rpc_error(port: int, method: str, timeout: float = 10) -> grpc.RpcError:
    """The error a unary call of ``method`` through the proxy ends with (it must fail)."""
    with channel(port) as ch, pytest.raises(grpc.RpcError) as failed:
        ch.unary_unary(method)(b"x", timeout=timeout)
    return failed.value


async def test_unary_and_server_streaming_calls(service, tmp_path):
    _, backend = service

    def calls(port: int):
        with channel(port) as ch:
            answer, call = ch.unary_unary("/test.Echo/Unary").with_call(b"hello", timeout=10)
            streamed = list(ch.unary_stream("/test.Echo/Stream")(b"3", timeout=10))
            return answer, call.code(), dict(call.trailing_metadata()), streamed

    async with proxy(tmp_path, backend) as (rt, port):
        answer, code, trailing, streamed = await asyncio.to_thread(calls, port)
        assert rt.pool.connects == 1  # both calls on one upstream connection
    assert (answer, code) == (b"echo:hello", grpc.StatusCode.OK)
    assert trailing["x-served-by"] == "grpcio"
    assert streamed == [b"message 0", b"message 1", b"message 2"]


async def test_an_error_status_from_the_server_is_relayed(service, tmp_path):
    _, backend = service
    async with proxy(tmp_path, backend) as (_, port):
        error = await asyncio.to_thread(rpc_error, port, "/test.Echo/Fail")
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, "no such thing")
    assert dict(error.trailing_metadata())["x-reason"] == "missing"


async def test_an_unavailable_backend_is_unavailable(tmp_path):
    async with proxy(tmp_path, free_port()) as (_, port):
        error = await asyncio.to_thread(rpc_error, port, "/test.Echo/Unary")
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error.details().startswith(
        "upstream connect error or disconnect/reset before headers. reset reason: connection failure")


async def test_a_deadline_reaches_the_server_and_ends_the_call(service, tmp_path):
    """The client's deadline travels as grpc-timeout; when it passes the client gets
    DEADLINE_EXCEEDED and the server sees the call cancelled (the proxy resets its stream)."""
    svc, backend = service
    async with proxy(tmp_path, backend) as (_, port):
        error = await asyncio.to_thread(rpc_error, port, "/test.Echo/Slow", 0.5)
        assert await asyncio.to_thread(svc.cancelled.wait, 10)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert svc.deadlines and svc.deadlines[0] is not None and 0 < svc.deadlines[0] <= 0.5


async def test_a_route_timeout_is_deadline_exceeded(service, tmp_path):
    """The proxy's own timeout (the route's ``timeouts.request``, shorter than the client's
    deadline) answers DEADLINE_EXCEEDED, and the server sees the call cancelled."""
    svc, backend = service
    route = HTTPROUTE.replace("    backendRefs:", "    timeouts:\n      request: 300ms\n    backendRefs:")
    async with proxy(tmp_path, backend, config(backend, route)) as (_, port):
        error = await asyncio.to_thread(rpc_error, port, "/test.Echo/Slow", 10)
        assert await asyncio.to_thread(svc.cancelled.wait, 10)
    assert (error.code(), error.details()) == (grpc.StatusCode.DEADLINE_EXCEEDED, "upstream request timeout")


async def test_a_grpcroute_reaches_its_backend_over_http2_without_h2c(service, tmp_path):
    """A GRPCRoute's backend is reached over HTTP/2 even when the Backend lists no
    appProtocols, as Envoy Gateway does for every GRPCRoute cluster."""
    _, backend = service
    route = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: echo
spec:
  rules:
  - matches:
    - method:
        service: test.Echo
    backendRefs:
    - group: gateway.envoyproxy.io
      kind: Backend
      name: echo
"""

    def calls(port: int):
        with channel(port) as ch:
            return ch.unary_unary("/test.Echo/Unary")(b"hello", timeout=10), list(
                ch.unary_stream("/test.Echo/Stream")(b"2", timeout=10))

    async with proxy(tmp_path, backend, config(backend, route, app_protocols="")) as (_, port):
        answer, streamed = await asyncio.to_thread(calls, port)
    assert (answer, streamed) == (b"echo:hello", [b"message 0", b"message 1"])


async def test_concurrent_calls_share_one_upstream_connection(service, tmp_path):
    _, backend = service

    def many(port: int) -> list[bytes]:
        with channel(port) as ch:
            gather = ch.unary_unary("/test.Echo/Gather")
            futures = [gather.future(b"%d" % i, timeout=20) for i in range(CONCURRENT)]
            return [f.result() for f in futures]

    async with proxy(tmp_path, backend) as (rt, port):
        answers = await asyncio.to_thread(many, port)
        assert rt.pool.connects == 1
        assert "streams=0" in repr(rt.pool)
    assert sorted(answers) == sorted(b"%d" % i for i in range(CONCURRENT))


async def test_an_http1_client_reaches_the_grpc_backend(service, tmp_path):
    """HTTP/1.1 in front, HTTP/2 behind: the gRPC answer comes back chunked, its status in
    the trailers."""
    _, backend = service
    message = b"hi"
    framed = b"\0" + len(message).to_bytes(4, "big") + message
    async with proxy(tmp_path, backend) as (_, port):
        wire = await Wire.open(port)
        await wire.send(b"POST /test.Echo/Unary HTTP/1.1\r\nHost: a\r\nContent-Type: application/grpc\r\n"
                        b"TE: trailers\r\nContent-Length: %d\r\n\r\n%s" % (len(framed), framed))
        resp = await wire.read_response()
        await wire.close()
    assert resp.status == 200 and resp.header("content-type") == "application/grpc"
    assert resp.body == b"\0\0\0\0\x07echo:hi"
    assert ("grpc-status", "0") in resp.trailers

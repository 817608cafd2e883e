"""A destination's circuit breaker (``ir.CircuitBreaker``) and upstream idle timeout over real
sockets: requests in flight, requests pending and connections, each at its threshold and one
past it, with Envoy's 503 ``UO`` body, flag and counters; the pool's state asserted through
its ``repr``."""
from __future__ import annotations

import asyncio
import dataclasses

from prometheus_client import generate_latest

from pyproxy import ir, metrics
from tests.conftest import destination, forward
from tests.helpers import accesslog
from tests.helpers.proxy import proxy_routes
from tests.helpers.recorder import Held, response
from tests.helpers.wire import Wire

pytest_plugins = ["tests.helpers.recorder_fixture"]  # the ``recorder`` fixture

OVERFLOW = b"upstream connect error or disconnect/reset before headers. reset reason: overflow"
NAME = "backend/default/test"


def guarded(port: int, **thresholds) -> ir.Route:
    dest = dataclasses.replace(destination(port), circuit_breaker=ir.CircuitBreaker(**thresholds))
    return forward("httproute/default/test/rule/0/match/0", dest)


def key(port: int, state: str) -> str:
    return f"<Pool [127.0.0.1:{port}: {state}]>"


async def until(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def send(port: int, path: str) -> Wire:
    wire = await Wire.open(port)
    await wire.send(b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % path.encode())
    return wire


def held_first(gate: asyncio.Future, count: int = 1):
    """The first ``count`` requests are answered once ``gate`` is set, the others at once."""
    return lambda i, seen: (Held(gate, response(200, seen.target.encode())) if i < count
                            else response(200, seen.target.encode()))


async def test_a_request_over_max_parallel_requests_is_503_uo(recorder, caplog):
    accesslog.capture(caplog)
    gate = asyncio.get_running_loop().create_future()
    up = await recorder(held_first(gate))
    async with proxy_routes(guarded(up.port, max_parallel_requests=1)) as (rt, port):
        stats = rt.stats.cluster(NAME)
        first = await send(port, "/first")
        await up.wait_heads(1)
        second = await send(port, "/second")
        resp = await second.read_response()
        assert (resp.status, resp.body) == (503, OVERFLOW)
        assert (stats.rq_active, stats.rq_pending_overflow) == (1, 1)
        gate.set_result(None)
        assert (await first.read_response()).body == b"/first"
        await second.send(b"GET /third HTTP/1.1\r\nHost: a\r\n\r\n")  # room again; the connection was kept
        assert (await second.read_response()).body == b"/third"
        for wire in (first, second):
            await wire.close()
        text = generate_latest(metrics.registry(rt)).decode()
        assert f'envoy_cluster_upstream_rq_pending_overflow{{envoy_cluster_name="{NAME}"}} 1.0' in text
    assert [seen.target for seen in up.requests] == ["/first", "/third"]
    assert [(s, f, d) for s, f, d in accesslog.entries(caplog) if s == 503] == [
        (503, "UO", "upstream_reset_before_response_started{overflow}")]


async def test_max_connections_makes_requests_wait_and_max_pending_requests_bounds_them(recorder):
    """One connection allowed: the second request waits for it (``cx_overflow``), the third
    finds one request pending already and is refused; the second is then served on the
    first one's connection."""
    gate = asyncio.get_running_loop().create_future()
    up = await recorder(held_first(gate))
    async with proxy_routes(guarded(up.port, max_connections=1, max_pending_requests=1)) as (rt, port):
        stats = rt.stats.cluster(NAME)
        first = await send(port, "/first")
        await up.wait_heads(1)
        second = await send(port, "/second")
        await until(lambda: "waiting=1" in repr(rt.pool))
        assert repr(rt.pool) == key(up.port, "busy=1 idle=0 connecting=0 waiting=1")
        assert (stats.cx_open, stats.rq_pending, stats.cx_overflow) == (1, 1, 1)
        third = await send(port, "/third")
        resp = await third.read_response()
        assert (resp.status, resp.body) == (503, OVERFLOW)
        assert stats.rq_pending_overflow == 1
        gate.set_result(None)
        assert (await first.read_response()).body == b"/first"
        assert (await second.read_response()).body == b"/second"
        for wire in (first, second, third):
            await wire.close()
        assert up.connections == 1 and [seen.conn for seen in up.requests] == [0, 0]
        assert repr(rt.pool) == key(up.port, "busy=0 idle=1 connecting=0 waiting=0")
        assert (stats.cx_open, stats.rq_pending, stats.rq_active) == (1, 0, 0)


async def test_connections_up_to_max_connections(recorder):
    gate = asyncio.get_running_loop().create_future()
    up = await recorder(held_first(gate, count=3))
    async with proxy_routes(guarded(up.port, max_connections=2)) as (rt, port):
        wires = [await send(port, f"/{i}") for i in range(3)]
        await up.wait_heads(2)
        await until(lambda: "waiting=1" in repr(rt.pool))
        assert repr(rt.pool) == key(up.port, "busy=2 idle=0 connecting=0 waiting=1")
        gate.set_result(None)
        bodies = [(await wire.read_response()).body for wire in wires]
        for wire in wires:
            await wire.close()
    assert sorted(bodies) == [b"/0", b"/1", b"/2"]
    assert up.connections == 2


async def test_each_destination_has_its_own_idle_timeout(recorder):
    """``idle_timeout`` 0.05 s on one destination, the pool's 60 s on the other: only the
    first one's connection is closed."""
    short, default = await recorder(), await recorder()
    quick = dataclasses.replace(destination(short.port, name="backend/default/quick"), idle_timeout=0.05)
    routes = (forward("r/quick", quick, match=ir.Match(ir.PathMatch("PathPrefix", "/quick"))),
              forward("r/default", destination(default.port, name="backend/default/slow")))
    async with proxy_routes(*routes) as (rt, port):
        for path in ("/quick", "/other"):
            wire = await send(port, path)
            assert (await wire.read_response()).status == 200
            await wire.close()
        await until(lambda: f"127.0.0.1:{short.port}" not in repr(rt.pool))
        assert repr(rt.pool) == key(default.port, "busy=0 idle=1 connecting=0 waiting=0")
        assert rt.stats.cluster("backend/default/quick").cx_open == 0

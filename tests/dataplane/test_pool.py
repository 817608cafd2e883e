"""The upstream connection pool (``dataplane/pool.py``): its keys, its per-key bookkeeping
asserted through ``repr`` as httpcore's tests do, and its circuit breaker (connections per key,
requests waiting) driven directly and through the proxy. Upstreams are real sockets."""
from __future__ import annotations

import asyncio
import dataclasses
import ssl

import pytest

from pyproxy.dataplane.compile import CompiledDestination
from pyproxy.dataplane.limits import Limits
from pyproxy.dataplane.pool import Pool, PoolKey
from pyproxy.errors import UpstreamConnectError, UpstreamOverflow
from pyproxy.stats import ClusterStats
from tests.conftest import destination
from tests.helpers.proxy import proxy_to
from tests.helpers.recorder import Held, free_port, response
from tests.helpers.wire import Wire

pytest_plugins = ["tests.helpers.recorder_fixture"]  # the ``recorder`` fixture

OVERFLOW_BODY = b"upstream connect error or disconnect/reset before headers. reset reason: overflow"
GET = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"


def compiled(port: int, connect_timeout: float = 5.0) -> CompiledDestination:
    return CompiledDestination(dataclasses.replace(destination(port), connect_timeout=connect_timeout), None, ClusterStats())


def slots(pool: Pool, port: int, state: str) -> str:
    """The repr of a pool whose only key is 127.0.0.1:``port``."""
    return f"<Pool [127.0.0.1:{port}: {state}]>"


async def until(predicate, timeout: float = 5.0) -> None:
    """Wait (bounded) until ``predicate()`` holds: for states reached by other tasks."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


def test_key_holds_the_ssl_context_itself():
    """Contexts compare by identity: two contexts with the same settings are two keys, and the
    key keeps its context alive (an ``id()`` could be reused by a later context)."""
    first, second = ssl.create_default_context(), ssl.create_default_context()
    a = CompiledDestination(destination(443), first, ClusterStats())
    b = CompiledDestination(destination(443), second, ClusterStats())
    key = Pool.key(a, "127.0.0.1", 443, False)
    assert key == PoolKey("127.0.0.1", 443, False, first, None)
    assert key.ssl_context is first
    assert key != Pool.key(b, "127.0.0.1", 443, False)
    assert key == Pool.key(CompiledDestination(destination(443), first, ClusterStats()), "127.0.0.1", 443, False)


# ------------------------------------------------------------------ the pool alone


async def test_connections_counted_busy_then_idle_then_gone(recorder):
    up = await recorder()
    pool = Pool(Limits())
    dest = compiled(up.port)
    conn, reused = await pool.acquire(dest, "127.0.0.1", up.port, False)
    assert not reused
    assert repr(pool) == slots(pool, up.port, "busy=1 idle=0 connecting=0 waiting=0")
    pool.release(conn)
    assert repr(pool) == slots(pool, up.port, "busy=0 idle=1 connecting=0 waiting=0")
    assert pool.take(pool.key(dest, "127.0.0.1", up.port, False)) is conn
    assert repr(pool) == slots(pool, up.port, "busy=1 idle=0 connecting=0 waiting=0")
    conn.close()
    assert repr(pool) == "<Pool []>"


async def test_released_connection_goes_to_the_oldest_waiter(recorder):
    up = await recorder()
    pool = Pool(Limits(pool_max_per_key=1, pool_max_pending=2))
    dest = compiled(up.port)
    first, _ = await pool.acquire(dest, "127.0.0.1", up.port, False)
    second = asyncio.create_task(pool.acquire(dest, "127.0.0.1", up.port, False))
    third = asyncio.create_task(pool.acquire(dest, "127.0.0.1", up.port, False))
    await until(lambda: "waiting=2" in repr(pool))
    assert repr(pool) == slots(pool, up.port, "busy=1 idle=0 connecting=0 waiting=2")
    pool.release(first)
    assert await asyncio.wait_for(second, 5) == (first, True)
    assert repr(pool) == slots(pool, up.port, "busy=1 idle=0 connecting=0 waiting=1")
    pool.release(first)
    assert await asyncio.wait_for(third, 5) == (first, True)
    assert pool.connects == 1 and up.connections == 1


async def test_waiter_over_max_pending_overflows(recorder):
    up = await recorder()
    pool = Pool(Limits(pool_max_per_key=1, pool_max_pending=1))
    dest = compiled(up.port)
    first, _ = await pool.acquire(dest, "127.0.0.1", up.port, False)
    waiting = asyncio.create_task(pool.acquire(dest, "127.0.0.1", up.port, False))
    await until(lambda: "waiting=1" in repr(pool))
    with pytest.raises(UpstreamOverflow):
        await pool.acquire(dest, "127.0.0.1", up.port, False)
    # a caller that may not wait (a mirror) overflows at the limit with an empty queue too
    pool.release(first)
    assert await asyncio.wait_for(waiting, 5) == (first, True)
    with pytest.raises(UpstreamOverflow):
        await pool.acquire(dest, "127.0.0.1", up.port, False, wait=False)
    assert repr(pool) == slots(pool, up.port, "busy=1 idle=0 connecting=0 waiting=0")


async def test_closed_connection_lets_the_waiter_dial(recorder):
    up = await recorder()
    pool = Pool(Limits(pool_max_per_key=1))
    dest = compiled(up.port)
    first, _ = await pool.acquire(dest, "127.0.0.1", up.port, False)
    waiting = asyncio.create_task(pool.acquire(dest, "127.0.0.1", up.port, False))
    await until(lambda: "waiting=1" in repr(pool))
    first.close()
    # the slot is the waiter's before its task even runs
    assert repr(pool) == slots(pool, up.port, "busy=0 idle=0 connecting=1 waiting=0")
    second, reused = await asyncio.wait_for(waiting, 5)
    assert second is not first and not reused
    assert repr(pool) == slots(pool, up.port, "busy=1 idle=0 connecting=0 waiting=0")
    assert pool.connects == 2


async def test_upstream_closing_the_connection_frees_its_slot(recorder):
    up = await recorder()
    pool = Pool(Limits(pool_max_per_key=1))
    dest = compiled(up.port)
    conn, _ = await pool.acquire(dest, "127.0.0.1", up.port, False)
    pool.release(conn)
    await up.stop()  # aborts its side of the connection
    await until(lambda: conn.closed)
    assert repr(pool) == "<Pool []>"


async def test_wait_is_bounded_by_the_connect_timeout(recorder):
    up = await recorder()
    pool = Pool(Limits(pool_max_per_key=1))
    dest = compiled(up.port, connect_timeout=0.05)
    first, _ = await pool.acquire(dest, "127.0.0.1", up.port, False)
    with pytest.raises(UpstreamConnectError, match="connection timeout"):
        await asyncio.wait_for(pool.acquire(dest, "127.0.0.1", up.port, False), 5)
    assert repr(pool) == slots(pool, up.port, "busy=1 idle=0 connecting=0 waiting=0")
    pool.release(first)
    assert repr(pool) == slots(pool, up.port, "busy=0 idle=1 connecting=0 waiting=0")


async def test_cancelled_waiter_leaves_the_queue(recorder):
    up = await recorder()
    pool = Pool(Limits(pool_max_per_key=1))
    dest = compiled(up.port)
    first, _ = await pool.acquire(dest, "127.0.0.1", up.port, False)
    waiting = asyncio.create_task(pool.acquire(dest, "127.0.0.1", up.port, False))
    await until(lambda: "waiting=1" in repr(pool))
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert repr(pool) == slots(pool, up.port, "busy=1 idle=0 connecting=0 waiting=0")
    first.close()
    assert repr(pool) == "<Pool []>"


@pytest.mark.parametrize("closed", [False, True], ids=["released", "closed"])
async def test_waiter_cancelled_after_its_turn_passes_it_on(recorder, closed):
    """Handed a connection (or a slot to dial) and cancelled before its task ran: the next
    waiter gets it, nothing leaks."""
    up = await recorder()
    pool = Pool(Limits(pool_max_per_key=1, pool_max_pending=2))
    dest = compiled(up.port)
    first, _ = await pool.acquire(dest, "127.0.0.1", up.port, False)
    second = asyncio.create_task(pool.acquire(dest, "127.0.0.1", up.port, False))
    third = asyncio.create_task(pool.acquire(dest, "127.0.0.1", up.port, False))
    await until(lambda: "waiting=2" in repr(pool))
    if closed:
        first.close()
    else:
        pool.release(first)
    second.cancel()
    conn, reused = await asyncio.wait_for(third, 5)
    assert reused is not closed and (conn is first) is not closed
    assert second.cancelled()
    assert repr(pool) == slots(pool, up.port, "busy=1 idle=0 connecting=0 waiting=0")


async def test_failed_connect_frees_its_slot_for_the_waiter():
    port = free_port()
    pool = Pool(Limits(pool_max_per_key=1))
    dest = compiled(port)
    attempts = [asyncio.create_task(pool.acquire(dest, "127.0.0.1", port, False)) for _ in range(2)]
    for attempt in attempts:
        with pytest.raises(UpstreamConnectError):
            await asyncio.wait_for(attempt, 5)
    assert repr(pool) == "<Pool []>"


async def test_fresh_at_the_limit_closes_an_idle_connection(recorder):
    up = await recorder()
    pool = Pool(Limits(pool_max_per_key=1))
    dest = compiled(up.port)
    first, _ = await pool.acquire(dest, "127.0.0.1", up.port, False)
    pool.release(first)
    second, reused = await pool.acquire(dest, "127.0.0.1", up.port, False, fresh=True)
    assert first.closed and second is not first and not reused
    assert repr(pool) == slots(pool, up.port, "busy=1 idle=0 connecting=0 waiting=0")


async def test_idle_connections_expire(recorder):
    up = await recorder()
    pool = Pool(Limits(pool_idle_timeout=0.05))
    dest = compiled(up.port)
    conn, _ = await pool.acquire(dest, "127.0.0.1", up.port, False)
    pool.release(conn)
    await until(lambda: conn.closed)
    assert repr(pool) == "<Pool []>"


# ------------------------------------------------------------------ through the proxy


async def test_requests_queue_at_the_limit_and_one_more_gets_503_uo(recorder):
    """``pool_max_per_key=1, pool_max_pending=1`` and a slow upstream: the second request
    waits for the first one's connection, the third is refused with Envoy's overflow 503."""
    gate = asyncio.get_running_loop().create_future()
    up = await recorder(lambda i, seen: Held(gate, response(200, seen.target.encode())) if i == 0
                        else response(200, seen.target.encode()))
    async with proxy_to(up.port, limits=Limits(pool_max_per_key=1, pool_max_pending=1)) as (rt, port):
        wires = [await Wire.open(port) for _ in range(3)]
        await wires[0].send(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
        await up.wait_heads(1)
        await wires[1].send(b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n")
        await until(lambda: "waiting=1" in repr(rt.pool))
        assert repr(rt.pool) == slots(rt.pool, up.port, "busy=1 idle=0 connecting=0 waiting=1")
        await wires[2].send(b"GET /third HTTP/1.1\r\nHost: a\r\n\r\n")
        resp = await wires[2].read_response()
        assert (resp.status, resp.body) == (503, OVERFLOW_BODY)
        gate.set_result(None)
        for wire, body in ((wires[0], b"/first"), (wires[1], b"/second")):
            resp = await wire.read_response()
            assert (resp.status, resp.body) == (200, body)
        assert up.connections == 1 and [seen.target for seen in up.requests] == ["/first", "/second"]
        assert repr(rt.pool) == slots(rt.pool, up.port, "busy=0 idle=1 connecting=0 waiting=0")
        for wire in wires:
            await wire.close()


async def test_client_gone_while_waiting_leaves_the_queue(recorder):
    gate = asyncio.get_running_loop().create_future()
    up = await recorder(Held(gate, response(200, b"ok")))
    async with proxy_to(up.port, limits=Limits(pool_max_per_key=1, pool_max_pending=1)) as (rt, port):
        first, second = await Wire.open(port), await Wire.open(port)
        await first.send(GET)
        await up.wait_heads(1)
        await second.send(GET)
        await until(lambda: "waiting=1" in repr(rt.pool))
        await second.close()
        await until(lambda: "waiting=0" in repr(rt.pool))
        gate.set_result(None)
        assert (await first.read_response()).status == 200
        assert repr(rt.pool) == slots(rt.pool, up.port, "busy=0 idle=1 connecting=0 waiting=0")
        await first.close()

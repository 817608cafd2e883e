"""Every upstream fault of issue 10 answered as Envoy answers it, driven by the fault relay
(``tests/helpers/faultrelay.py``) in front of a real upstream: the status, Envoy's body, the
response flag and details of the access-log entry, and that nothing hangs or leaks (the
relay sees the proxy let go of every connection; the pool and the circuit-breaker gauges are
back to empty)."""
from __future__ import annotations

import asyncio

import pytest

from pyproxy import ir
from tests.conftest import destination, forward, server_context
from tests.helpers import accesslog
from tests.helpers.faultrelay import Delay, Drop, FaultRelay, Hang, Pass, Reset, Script, Truncate
from tests.helpers.http import Upstream
from tests.helpers.proxy import proxy_routes, proxy_to
from tests.helpers.wire import Truncated, Wire

GET = b"GET /fault HTTP/1.1\r\nHost: a\r\n\r\n"
BEFORE = b"upstream connect error or disconnect/reset before headers. reset reason: "
REFUSED = BEFORE + b"connection failure, transport failure reason: delayed connect error: 111"
TERMINATION = BEFORE + b"connection termination"
PROTOCOL = BEFORE + b"protocol error"
TIMEOUT = b"upstream request timeout"


@pytest.fixture
async def relay(upstream: Upstream):
    started = await FaultRelay(upstream.port).start()
    yield started
    await started.stop()


async def answer(port: int, request: bytes = GET):
    wire = await Wire.open(port)
    try:
        await wire.send(request)
        return await wire.read_response()
    finally:
        await wire.close()


def idle(rt) -> bool:
    """Nothing in flight towards any destination and no connection held by a request."""
    clusters = rt.stats.clusters.values()
    return all(c.rq_active == 0 and c.rq_pending == 0 and c.rq_retry_active == 0 for c in clusters)


async def settled(rt, relay: FaultRelay) -> None:
    """The proxy let go of every relayed connection (none left open, none leaked)."""
    await relay.until(lambda r: r.open == 0)
    assert idle(rt)
    assert repr(rt.pool) == "<Pool []>"


# ------------------------------------------------------------------ before the response


async def test_refused_connect_is_503_uf(relay, caplog):
    accesslog.capture(caplog)
    await relay.refuse()
    async with proxy_to(relay.port) as (rt, port):
        resp = await answer(port)
        assert (resp.status, resp.body) == (503, REFUSED)
        assert accesslog.entries(caplog) == [
            (503, "UF", "upstream_reset_before_response_started{connection_failure,delayed connect error: 111}")]
        await relay.resume()  # nothing sticks: the next request goes through
        assert (await answer(port)).status == 200
        assert idle(rt) and repr(rt.pool) == f"<Pool [127.0.0.1:{relay.port}: busy=0 idle=1 connecting=0 waiting=0]>"


@pytest.mark.parametrize("fault", [Reset(), Drop(rst=True), Drop(rst=False)], ids=["rst-after-request",
                                                                                   "rst-at-accept", "fin-at-accept"])
async def test_reset_before_headers_is_503_uc(relay, caplog, fault):
    """Envoy's HTTP/1 codec reports a connection that ends, RST or FIN, before the response
    headers as ``connection termination`` (flag UC)."""
    accesslog.capture(caplog)
    relay.fault = fault
    async with proxy_to(relay.port) as (rt, port):
        resp = await answer(port)
        assert (resp.status, resp.body) == (503, TERMINATION)
        assert accesslog.entries(caplog) == [
            (503, "UC", "upstream_reset_before_response_started{connection_termination}")]
        await settled(rt, relay)


@pytest.mark.parametrize("fault", [Drop(rst=True), Drop(rst=False), Hang()], ids=["rst", "fin", "silent"])
async def test_tls_handshake_cut_is_503_with_transport_failure_reason(ca, fault, caplog):
    """A TLS destination whose handshake the relay cuts (or never answers: bounded by the
    connect timeout, 503 ``connection timeout``)."""
    accesslog.capture(caplog)
    up = await Upstream().start(ssl_context=server_context(ca, "backend.test"))
    relay = await FaultRelay(up.port).start()
    relay.fault = fault
    tls = ir.UpstreamTLS(sni="backend.test", ca=ca.cert_pem.bytes().decode())
    dest = ir.Destination("backend/default/tls", (ir.Endpoint("ip", "127.0.0.1", relay.port),), tls=tls,
                          connect_timeout=0.3)
    try:
        async with proxy_routes(forward("httproute/default/tls/rule/0/match/0", dest)) as (rt, port):
            resp = await answer(port)
            assert resp.status == 503
            if isinstance(fault, Hang):
                assert resp.body == BEFORE + b"connection timeout"
            else:
                assert resp.body.startswith(BEFORE + b"connection failure, transport failure reason: TLS_error:")
            [(status, flags, details)] = accesslog.entries(caplog)
            assert (status, flags) == (503, "UF")
            if isinstance(fault, Hang):
                assert details == "upstream_reset_before_response_started{connection_timeout}"
            else:
                assert details.startswith("upstream_reset_before_response_started{connection_failure,TLS_error:")
            await settled(rt, relay)
    finally:
        await relay.stop()
        await up.stop()


# ------------------------------------------------------------------ invalid answers


@pytest.mark.parametrize("script", [
    b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTX/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
    b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70000 + b"\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"Content-Length: 0\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
], ids=["status-2000", "bad-version", "content-length-twice", "70k-header", "101-headers", "101-bare",
        "101-without-upgrade-request"])
async def test_invalid_response_is_502_upe(relay, caplog, script):
    accesslog.capture(caplog)
    relay.fault = Script(script, close=False)
    async with proxy_to(relay.port) as (rt, port):
        resp = await answer(port)
        assert (resp.status, resp.body) == (502, PROTOCOL)
        assert accesslog.entries(caplog) == [(502, "UPE", "upstream_reset_before_response_started{protocol_error}")]
        await settled(rt, relay)  # the connection that lied is not pooled


@pytest.mark.parametrize("fault", [
    Script(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),  # body shorter than Content-Length, then FIN
    Truncate(after=200),  # the real upstream's answer cut after its head
    Reset(after=200),  # the same with an RST
], ids=["short-body", "truncated", "reset"])
async def test_answer_cut_after_headers_resets_the_downstream(relay, caplog, fault):
    """Once the head went out only a reset is left: the client sees the response cut short
    (fewer bytes than Content-Length, no error text appended) and the connection closed."""
    accesslog.capture(caplog)
    relay.fault = fault
    async with proxy_to(relay.port) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(b"GET /bytes/5000 HTTP/1.1\r\nHost: a\r\n\r\n")
        with pytest.raises(Truncated) as info:
            await wire.read_response()
        assert info.value.partial.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"upstream connect error" not in info.value.partial
        await wire.close()
        [(status, flags, details)] = accesslog.entries(caplog)
        assert (status, flags) == (200, "UC")
        assert details == "upstream_reset_after_response_started{connection_termination}"
        await settled(rt, relay)


# ------------------------------------------------------------------ no answer in time


@pytest.mark.parametrize("fault, timeouts", [
    (Hang(), ir.Timeouts(request=0.3)),
    (Delay(5.0), ir.Timeouts(request=0.3)),
    (Hang(), ir.Timeouts(request=10, backend_request=0.3)),
], ids=["hang-route-timeout", "slow-route-timeout", "hang-per-try-timeout"])
async def test_no_answer_in_time_is_504_ut(relay, caplog, fault, timeouts):
    accesslog.capture(caplog)
    relay.fault = fault
    async with proxy_to(relay.port, timeouts=timeouts) as (rt, port):
        resp = await answer(port)
        assert (resp.status, resp.body) == (504, TIMEOUT)
        details = "upstream_per_try_timeout" if timeouts.backend_request else "upstream_response_timeout"
        assert accesslog.entries(caplog) == [(504, "UT", details)]
        await settled(rt, relay)  # the late connection was dropped, not pooled


# ------------------------------------------------------------------ one fault does not spread


async def test_a_slow_upstream_never_blocks_other_routes(relay, upstream):
    relay.fault = Hang()
    slow = forward("httproute/default/slow/rule/0/match/0", destination(relay.port, name="backend/default/slow"),
                   match=ir.Match(ir.PathMatch("PathPrefix", "/slow")))
    fast = forward("httproute/default/fast/rule/0/match/0", destination(upstream.port, name="backend/default/fast"))
    async with proxy_routes(slow, fast) as (rt, port):
        stuck = [await Wire.open(port) for _ in range(3)]
        for wire in stuck:
            await wire.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        await relay.until(lambda r: r.requests == 3)
        for _ in range(5):
            resp = await answer(port, b"GET /fast HTTP/1.1\r\nHost: a\r\n\r\n")
            assert resp.status == 200
        # meanwhile the slow ones are still in flight on their upstream connections
        assert (rt.stats.cluster("backend/default/slow").rq_active, relay.open) == (3, 3)
        for wire in stuck:
            await wire.close()
        await relay.until(lambda r: r.open == 0)  # their upstream requests were cancelled


@pytest.mark.parametrize("fault, request_bytes", [
    (Hang(), GET),
    (Pass(), b"POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 70000),
], ids=["waiting-for-the-answer", "mid-body"])
async def test_a_client_gone_mid_request_cancels_the_upstream_request(relay, fault, request_bytes):
    relay.fault = fault
    async with proxy_to(relay.port) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(request_bytes)
        await relay.until(lambda r: r.accepted == 1)
        await until(lambda: not idle(rt))  # the request is on its upstream connection
        await wire.close()
        await settled(rt, relay)  # the upstream connection was closed, nothing leaked


async def until(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)

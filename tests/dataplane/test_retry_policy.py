"""Envoy's retry triggers (``ir.Retry.on``), the per-try timeout of a retry policy, the flags
of retries not made (URX, UO) and the circuit breaker's ``max_parallel_retries``: the
decisions as a table, then each trigger over real sockets, attempts counted at the upstream."""
from __future__ import annotations

import asyncio

import h2.errors
import pytest

from pyproxy import errors, ir
from pyproxy.dataplane.retry import RetryPolicy
from tests.conftest import forward
from tests.helpers import accesslog
from tests.helpers.h2server import H2Reply, H2Request
from tests.helpers.http import Client
from tests.helpers.proxy import proxy_routes, proxy_to
from tests.helpers.recorder import Hang, Held, Reset, free_port, response

pytest_plugins = ["tests.helpers.recorder_fixture"]  # the ``recorder`` fixture

ROUTE = "httproute/default/retry/rule/0/match/0"
BEFORE = b"upstream connect error or disconnect/reset before headers. "

CONNECT = errors.UpstreamConnectError()
RESET = errors.UpstreamReset()
PROTOCOL = errors.UpstreamProtocolError()
PER_TRY = errors.UpstreamPerTryTimeout()
REFUSED = errors.UpstreamRefused()
NEVER = (errors.UpstreamOverflow(), errors.UpstreamTimeout(), errors.NoHealthyUpstream())


# ------------------------------------------------------------------ the decisions


@pytest.mark.parametrize("on, codes, retried", [
    (("5xx",), (), {500, 501, 502, 503, 504, 599}),
    (("gateway-error",), (), {502, 503, 504}),
    (("retriable-4xx",), (), {409}),
    (("retriable-status-codes",), (429, 500), {429, 500}),
    (("reset", "connect-failure"), (429, 500), set()),  # codes only count with their trigger
    (("reset", "retriable-status-codes", "retriable-4xx"), (503,), {409, 503}),
])
def test_statuses_retried_by_each_trigger(on, codes, retried):
    policy = RetryPolicy(ir.Retry(1, codes=codes, on=on))
    statuses = (200, 204, 404, 409, 429, 500, 501, 502, 503, 504, 599)
    assert {status for status in statuses if policy.retries_status(status)} == retried


@pytest.mark.parametrize("on, started, retried", [
    (("connect-failure",), True, {CONNECT}),
    (("refused-stream",), True, {REFUSED}),
    (("reset-before-request",), False, {CONNECT, RESET, PROTOCOL, PER_TRY, REFUSED}),
    (("reset-before-request",), True, set()),  # bytes went upstream: no longer "before request"
    (("reset",), True, {CONNECT, RESET, PROTOCOL, PER_TRY, REFUSED}),
    (("5xx",), True, {CONNECT, RESET, PROTOCOL, PER_TRY, REFUSED}),  # Envoy counts resets as 5xx
    (("gateway-error",), True, {CONNECT, RESET, PROTOCOL, PER_TRY, REFUSED}),
    (("retriable-status-codes", "retriable-4xx"), False, set()),
])
def test_failures_retried_by_each_trigger(on, started, retried):
    policy = RetryPolicy(ir.Retry(1, codes=(503,), on=on))
    failures = (CONNECT, RESET, PROTOCOL, PER_TRY, REFUSED, *NEVER)
    assert {error for error in failures if policy.retries_failure(error, started)} == retried


# ------------------------------------------------------------------ each trigger, end to end


async def get(port: int, path: str = "/retry"):
    client = await Client.connect(port)
    try:
        return await client.request("GET", path)
    finally:
        await client.close()


@pytest.mark.parametrize("on, answers, status, attempts", [
    (("5xx",), [response(500), response(501), response(200, b"ok")], 200, 3),
    (("5xx",), [Reset(), response(200, b"ok")], 200, 2),
    (("gateway-error",), [response(502), response(503), response(504), response(200, b"ok")], 200, 4),
    (("gateway-error",), [response(500), response(200)], 500, 1),
    (("retriable-4xx",), [response(409), response(200, b"ok")], 200, 2),
    (("retriable-4xx",), [response(429), response(200)], 429, 1),
    (("retriable-status-codes",), [Reset(), response(200)], 503, 1),  # a reset needs its trigger
    (("connect-failure",), [Reset(), response(200)], 503, 1),
    (("reset",), [b"HTTP/1.1 2000 X\r\n\r\n", response(200, b"ok")], 200, 2),  # a protocol error is a reset
    (("reset-before-request",), [Reset(), response(200)], 503, 1),  # the request had been sent
], ids=["5xx", "5xx-reset", "gateway-error", "gateway-error-500", "retriable-4xx", "retriable-4xx-429",
        "codes-no-reset", "connect-failure-no-reset", "reset-protocol-error", "reset-before-request-sent"])
async def test_each_trigger(recorder, on, answers, status, attempts):
    up = await recorder(*answers)
    async with proxy_to(up.port, retry=ir.Retry(3, codes=(503,), on=on, backoff=0.001)) as (rt, port):
        resp = await get(port)
    assert resp.status == status
    assert len(up.requests) == attempts


@pytest.mark.parametrize("on", [("connect-failure",), ("reset-before-request",), ("gateway-error",)])
async def test_a_refused_connect_is_retried_by_the_connect_triggers(recorder, on):
    live = await recorder(response(200, b"live"))
    dest = ir.Destination("backend/default/two", (ir.Endpoint("ip", "127.0.0.1", free_port()),
                                                  ir.Endpoint("ip", "127.0.0.1", live.port)),
                          load_balancer=ir.LoadBalancer("RoundRobin"))  # the retry goes to the next one
    async with proxy_routes(forward(ROUTE, dest, retry=ir.Retry(1, on=on, backoff=0.001))) as (rt, port):
        resp = await get(port)
    assert (resp.status, resp.body) == (200, b"live")


@pytest.mark.parametrize("on, status, attempts", [
    (("refused-stream",), 200, 3),
    (("connect-failure",), 503, 1),  # a policy without the trigger: not even the one resend
])
async def test_refused_streams_are_retried_by_refused_stream(h2_upstream, on, status, attempts):
    def script(request: H2Request) -> H2Reply:
        if len(up.requests) <= 2:
            return H2Reply(reset=h2.errors.ErrorCodes.REFUSED_STREAM)
        return H2Reply(body=b"third")

    up = await h2_upstream(script)
    async with proxy_to(up.port, http2=True, retry=ir.Retry(3, on=on, backoff=0.001)) as (rt, port):
        resp = await get(port)
    assert resp.status == status
    assert len(up.requests) == attempts
    if status == 503:
        assert resp.body == BEFORE + b"reset reason: remote refused stream reset"


# ------------------------------------------------------------------ per-try timeout


async def test_per_try_timeout_of_the_policy_bounds_each_attempt(recorder):
    up = await recorder(Hang(), response(200, b"second"))
    retry = ir.Retry(1, per_try_timeout=0.2)
    async with proxy_to(up.port, retry=retry, timeouts=ir.Timeouts(request=5)) as (rt, port):
        resp = await get(port)
        assert rt.stats.cluster("backend/default/test").rq_per_try_timeout == 1
    assert (resp.status, resp.body, len(up.requests)) == (200, b"second", 2)


async def test_per_try_timeout_not_retried_without_a_reset_trigger(recorder, caplog):
    """Envoy retries an attempt's timeout as a reset: under reset, 5xx or gateway-error."""
    accesslog.capture(caplog)
    up = await recorder(Hang(), response(200))
    retry = ir.Retry(1, per_try_timeout=0.2, on=("connect-failure", "retriable-status-codes"), codes=(504,))
    async with proxy_to(up.port, retry=retry, timeouts=ir.Timeouts(request=5)) as (rt, port):
        resp = await get(port)
    assert (resp.status, resp.body, len(up.requests)) == (504, b"upstream request timeout", 1)
    assert accesslog.entries(caplog) == [(504, "UT", "upstream_per_try_timeout")]


# ------------------------------------------------------------------ retries not made: URX, UO


async def test_exhausted_status_retries_flag_urx(recorder, caplog):
    accesslog.capture(caplog)
    up = await recorder(response(500, b"last"))
    async with proxy_to(up.port, retry=ir.Retry(2, codes=(500,), backoff=0.001)) as (rt, port):
        resp = await get(port)
    assert (resp.status, resp.body, len(up.requests)) == (500, b"last", 3)
    assert accesslog.entries(caplog) == [(500, "URX", "via_upstream")]


async def test_exhausted_connect_retries_say_retried_and_flag_urx(caplog):
    accesslog.capture(caplog)
    dead = ir.Destination("backend/default/dead", (ir.Endpoint("ip", "127.0.0.1", free_port()),))
    async with proxy_routes(forward(ROUTE, dead, retry=ir.Retry(1, backoff=0.001))) as (rt, port):
        resp = await get(port)
    assert resp.status == 503
    assert resp.body == BEFORE + (b"retried and the latest reset reason: connection failure, transport failure "
                                  b"reason: delayed connect error: 111")
    assert [(s, f) for s, f, _ in accesslog.entries(caplog)] == [(503, "UF,URX")]


async def test_a_retry_over_max_parallel_retries_is_not_made(recorder, caplog):
    """``max_parallel_retries=1``: the first request's retry is in flight (its answer held),
    so the second request's retry overflows and its own 500 is answered, flag UO."""
    accesslog.capture(caplog)
    gate = asyncio.get_running_loop().create_future()

    def answer(index, seen):
        if seen.target == "/first" and index > 0:
            return Held(gate, response(200, b"first retried"))
        return response(500, seen.target.encode())

    up = await recorder(answer)
    dest = ir.Destination("backend/default/test", (ir.Endpoint("ip", "127.0.0.1", up.port),),
                          circuit_breaker=ir.CircuitBreaker(max_parallel_retries=1))
    route = forward(ROUTE, dest, retry=ir.Retry(2, codes=(500,), backoff=0.001))
    async with proxy_routes(route) as (rt, port):
        stats = rt.stats.cluster("backend/default/test")
        first = asyncio.ensure_future(get(port, "/first"))
        await up.wait_requests(2)  # /first, then its retry (held)
        assert stats.rq_retry_active == 1
        second = await get(port, "/second")
        assert (second.status, second.body) == (500, b"/second")
        assert (stats.rq_retry_overflow, stats.rq_retry) == (1, 1)
        gate.set_result(None)
        assert (await first).body == b"first retried"
        assert stats.rq_retry_active == 0
    assert [seen.target for seen in up.requests] == ["/first", "/first", "/second"]
    assert sorted((s, f) for s, f, _ in accesslog.entries(caplog)) == [(200, "-"), (500, "UO")]

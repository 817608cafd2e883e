"""HTTPRoute retry (``ir.Route.retry``) over real sockets: which attempt failures are retried,
how many attempts are made (counted at the upstream), the body replayed, the backoff, and the
interplay of the per-attempt (``backend_request``) and overall (``request``) timeouts."""
from __future__ import annotations

import asyncio
import os
import time

import pytest

from pyproxy import ir
from pyproxy.dataplane import forward as forward_module
from pyproxy.dataplane.retry import RetryPolicy
from tests.conftest import forward
from tests.helpers.http import Client
from tests.helpers.proxy import proxy_routes, proxy_to
from tests.helpers.recorder import (
    Close,
    Delay,
    Hang,
    Reset,
    chunked_response,
    free_port,
    response,
)
from tests.helpers.wire import Truncated, Wire

pytest_plugins = ["tests.helpers.recorder_fixture"]  # the ``recorder`` fixture

ROUTE = "httproute/default/retry/rule/0/match/0"
RESET_BODY = b"upstream connect error or disconnect/reset before headers. reset reason: connection termination"
RETRIED_RESET_BODY = (b"upstream connect error or disconnect/reset before headers. retried and the latest reset "
                      b"reason: connection termination")
REFUSED_BODY = (b"upstream connect error or disconnect/reset before headers. reset reason: "
                b"connection failure, transport failure reason: delayed connect error: 111")
RETRIED_REFUSED_BODY = (b"upstream connect error or disconnect/reset before headers. retried and the latest reset "
                        b"reason: connection failure, transport failure reason: delayed connect error: 111")
TIMEOUT_BODY = b"upstream request timeout"


def endpoints(*ports: int, name: str = "backend/default/multi") -> ir.Destination:
    """One destination over several endpoints, picked round robin from the first one."""
    return ir.Destination(name=name, endpoints=tuple(ir.Endpoint("ip", "127.0.0.1", p) for p in ports),
                          load_balancer=ir.LoadBalancer("RoundRobin"))


async def get(port: int, path: str = "/retry", **kw):
    client = await Client.connect(port)
    try:
        return await client.request("GET", path, **kw)
    finally:
        await client.close()


# ------------------------------------------------------------------ status codes


@pytest.mark.parametrize("retry, statuses, expected, attempts", [
    # conformance HTTPRouteRetry: codes [500], attempts 3 (2 retries)
    (ir.Retry(2, codes=(500,)), [500, 500, 200], 200, 3),
    (ir.Retry(2, codes=(500,)), [500, 500, 500, 500, 200], 500, 3),
    (ir.Retry(2, codes=(500,)), [503, 200], 503, 1),  # a code not listed is relayed, not retried
    (ir.Retry(2, codes=(500,)), [200], 200, 1),
    # "all" codes, attempts 2 (1 retry)
    (ir.Retry(1, codes=(500, 502, 503, 504)), [502, 200], 200, 2),
    (ir.Retry(1, codes=(500, 502, 503, 504)), [503, 200], 200, 2),
    (ir.Retry(1, codes=(500, 502, 503, 504)), [504, 504, 200], 504, 2),
    (ir.Retry(1, codes=(500, 502, 503, 504)), [404, 200], 404, 1),
    (ir.Retry(0, codes=(500,)), [500, 200], 500, 1),
    (None, [500, 200], 500, 1),  # no policy: status codes are never retried
], ids=["500-ok-on-3rd", "500-exhausted", "503-not-listed", "first-ok", "502-ok-on-2nd", "503-ok-on-2nd",
        "504-exhausted", "404-not-listed", "zero-retries", "no-policy"])
async def test_status_codes(recorder, retry, statuses, expected, attempts):
    up = await recorder(*(response(s, b"attempt %d status %d" % (i, s)) for i, s in enumerate(statuses)))
    async with proxy_to(up.port, retry=retry) as (rt, port):
        resp = await get(port)
    assert resp.status == expected
    assert resp.body == b"attempt %d status %d" % (attempts - 1, expected)  # the last attempt's answer
    assert len(up.requests) == attempts


async def test_exhausted_retries_relay_last_answer_and_connection_stays_usable(recorder):
    up = await recorder(lambda i, seen: response(500, b"attempt %d" % i, (("x-attempt", str(i)),)))
    async with proxy_to(up.port, retry=ir.Retry(2, codes=(500,))) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
        first = await wire.read_response()
        assert (first.status, first.body, first.headers_named("x-attempt")) == (500, b"attempt 2", ["2"])
        assert len(up.requests) == 3
        await wire.send(b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n")
        second = await wire.read_response()
        assert (second.status, second.body) == (500, b"attempt 5")
        assert [s.target for s in up.requests] == ["/a"] * 3 + ["/b"] * 3
        await wire.close()


# ------------------------------------------------------------------ connection failures


@pytest.mark.parametrize("retries, dead, expected, live_requests", [
    (0, 1, 503, 0),
    (1, 1, 200, 1),
    (2, 3, 503, 0),  # 3 attempts, all refused: a 4th (to the live endpoint) is not made
    (3, 3, 200, 1),  # the 4th attempt reaches the live endpoint
])
async def test_connection_refused_is_retried(recorder, retries, dead, expected, live_requests):
    """Endpoints are picked round robin starting with the first, so ``dead`` refused
    endpoints ahead of a live one count the attempts exactly."""
    live = await recorder(response(200, b"live"))
    dest = endpoints(*[free_port() for _ in range(dead)], live.port)
    async with proxy_routes(forward(ROUTE, dest, retry=ir.Retry(retries, backoff=0.001))) as (rt, port):
        resp = await get(port)
    assert resp.status == expected
    # after a retry, Envoy's body says so
    assert resp.body == (b"live" if expected == 200 else RETRIED_REFUSED_BODY if retries else REFUSED_BODY)
    assert len(live.requests) == live_requests


@pytest.mark.parametrize("failure", [Reset(), Close()], ids=["rst", "fin"])
async def test_reset_before_response_is_retried(recorder, failure):
    up = await recorder(failure, failure, response(200, b"third"))
    async with proxy_to(up.port, retry=ir.Retry(2)) as (rt, port):
        resp = await get(port)
    assert (resp.status, resp.body) == (200, b"third")
    assert len(up.requests) == 3


@pytest.mark.parametrize("failure", [Reset(), Close()], ids=["rst", "fin"])
async def test_reset_beyond_budget_is_503(recorder, failure):
    up = await recorder(failure)
    async with proxy_to(up.port, retry=ir.Retry(1)) as (rt, port):
        resp = await get(port)
    assert (resp.status, resp.body) == (503, RETRIED_RESET_BODY)
    assert len(up.requests) == 2


async def test_reset_on_fresh_connection_without_policy_is_not_retried(recorder):
    up = await recorder(Reset(), response(200))
    async with proxy_to(up.port) as (rt, port):
        resp = await get(port)
    assert (resp.status, resp.body) == (503, RESET_BODY)
    assert len(up.requests) == 1


async def test_reset_after_response_started_is_not_retried(recorder):
    """Once the response head went to the client, the attempt cannot be replaced: the client
    connection is cut, and the upstream sees one request."""
    partial = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"
    up = await recorder(Close(partial), response(200, b"0123456789"))
    async with proxy_to(up.port, retry=ir.Retry(3)) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        with pytest.raises(Truncated) as info:
            await wire.read_response()
        assert info.value.partial.startswith(b"HTTP/1.1 200")
        await wire.close()
    assert len(up.requests) == 1


async def test_retriable_status_cut_short_is_retried(recorder):
    """A listed status whose body is cut short: the answer was being dropped anyway."""
    up = await recorder(Close(b"HTTP/1.1 500 X\r\ncontent-length: 10\r\n\r\nabc"), response(200, b"second"))
    async with proxy_to(up.port, retry=ir.Retry(1, codes=(500,))) as (rt, port):
        resp = await get(port)
    assert (resp.status, resp.body) == (200, b"second")
    assert len(up.requests) == 2


async def test_stale_pooled_connection_without_policy_is_retried_once(recorder):
    """Request 2 goes out on the pooled connection of request 1, which the upstream then
    closes without answering (the keep-alive race): retried once on a fresh connection."""
    up = await recorder(response(200, b"one"), Close(), response(200, b"three"))
    async with proxy_to(up.port) as (rt, port):
        client = await Client.connect(port)
        assert (await client.request("GET", "/1")).body == b"one"
        resp = await client.request("GET", "/2")
        assert (resp.status, resp.body) == (200, b"three")
        await client.close()
    assert [s.target for s in up.requests] == ["/1", "/2", "/2"]
    assert [s.conn for s in up.requests] == [0, 0, 1]


async def test_stale_pooled_connection_race_retried_only_once(recorder):
    up = await recorder(response(200, b"one"), Close())
    async with proxy_to(up.port) as (rt, port):
        client = await Client.connect(port)
        assert (await client.request("GET", "/1")).body == b"one"
        resp = await client.request("GET", "/2")
        assert (resp.status, resp.body) == (503, RESET_BODY)
        await client.close()
    assert [s.target for s in up.requests] == ["/1", "/2", "/2"]


async def test_stale_pooled_connection_with_body_is_not_retried_without_policy(recorder):
    up = await recorder(response(200, b"one"), Close(), response(200, b"three"))
    async with proxy_to(up.port) as (rt, port):
        client = await Client.connect(port)
        assert (await client.request("GET", "/1")).body == b"one"
        resp = await client.request("POST", "/2", body=b"payload")
        assert (resp.status, resp.body) == (503, RESET_BODY)
        await client.close()
    assert [s.target for s in up.requests] == ["/1", "/2"]


# ------------------------------------------------------------------ timeouts


async def test_per_try_timeout_is_retried(recorder):
    up = await recorder(Hang(), response(200, b"second"))
    timeouts = ir.Timeouts(request=5.0, backend_request=0.2)
    async with proxy_to(up.port, retry=ir.Retry(2), timeouts=timeouts) as (rt, port):
        start = time.monotonic()
        resp = await get(port)
        elapsed = time.monotonic() - start
    assert (resp.status, resp.body) == (200, b"second")
    assert len(up.requests) == 2
    assert 0.2 <= elapsed < 2.0


async def test_per_try_timeout_beyond_budget_is_504(recorder):
    up = await recorder(Hang())
    timeouts = ir.Timeouts(request=5.0, backend_request=0.1)
    async with proxy_to(up.port, retry=ir.Retry(2), timeouts=timeouts) as (rt, port):
        start = time.monotonic()
        resp = await get(port)
        elapsed = time.monotonic() - start
    assert (resp.status, resp.body) == (504, TIMEOUT_BODY)
    assert len(up.requests) == 3
    assert 0.3 <= elapsed < 2.0


async def test_slow_answer_with_listed_code_beyond_per_try_timeout(recorder):
    """Conformance HTTPRouteRetryWithTimeouts: the answers come after 300 ms, the per-try
    timeout is 200 ms: each attempt times out, the third would have succeeded."""
    up = await recorder(Delay(0.3, response(500)), Delay(0.3, response(500)), Delay(0.3, response(200)))
    timeouts = ir.Timeouts(request=5.0, backend_request=0.2)
    async with proxy_to(up.port, retry=ir.Retry(1, codes=(500,)), timeouts=timeouts) as (rt, port):
        resp = await get(port)
    assert (resp.status, resp.body) == (504, TIMEOUT_BODY)
    assert len(up.requests) == 2


async def test_overall_request_timeout_wins_over_retries(recorder):
    """Attempts at t=0 and t≈0.325 (per-try 0.3 s, backoff 25 ms); the overall 0.45 s
    deadline ends the request before a third attempt."""
    up = await recorder(Hang())
    timeouts = ir.Timeouts(request=0.45, backend_request=0.3)
    async with proxy_to(up.port, retry=ir.Retry(10), timeouts=timeouts) as (rt, port):
        start = time.monotonic()
        resp = await get(port)
        elapsed = time.monotonic() - start
    assert (resp.status, resp.body) == (504, TIMEOUT_BODY)
    assert 0.45 <= elapsed < 1.2
    assert len(up.requests) == 2


async def test_overall_request_timeout_wins_over_status_retries(recorder):
    """Conformance HTTPRouteRetryWithTimeouts case 3: every answer (500) takes 100 ms, the
    request timeout is 200 ms: 504, not the 500 of an attempt."""
    up = await recorder(Delay(0.1, response(500)))
    timeouts = ir.Timeouts(request=0.2)
    async with proxy_to(up.port, retry=ir.Retry(5, codes=(500,)), timeouts=timeouts) as (rt, port):
        start = time.monotonic()
        resp = await get(port)
        elapsed = time.monotonic() - start
    assert (resp.status, resp.body) == (504, TIMEOUT_BODY)
    assert 0.2 <= elapsed < 1.0
    assert len(up.requests) == 2


async def test_retries_within_request_timeout_succeed(recorder):
    up = await recorder(response(500), response(200, b"ok"))
    timeouts = ir.Timeouts(request=0.2)
    async with proxy_to(up.port, retry=ir.Retry(2, codes=(500,)), timeouts=timeouts) as (rt, port):
        resp = await get(port)
    assert (resp.status, resp.body) == (200, b"ok")
    assert len(up.requests) == 2


# ------------------------------------------------------------------ request body replay


async def test_post_body_is_replayed_identically(recorder):
    body = os.urandom(20000)
    up = await recorder(response(500), Reset(), response(200, b"stored"))
    async with proxy_to(up.port, retry=ir.Retry(2, codes=(500,))) as (rt, port):
        client = await Client.connect(port)
        resp = await client.request("POST", "/upload?x=1", headers={"X-Custom": "v",
                                                                    "Content-Type": "application/octet-stream"},
                                    body=body)
        assert (resp.status, resp.body) == (200, b"stored")
        await client.close()
    assert len(up.requests) == 3
    first = up.requests[0]
    assert (first.method, first.target, first.header("x-custom")) == ("POST", "/upload?x=1", "v")
    for seen in up.requests:
        assert seen.body == body
        # the whole head is the same on every attempt (x-request-id included)
        assert (seen.method, seen.target, seen.headers) == (first.method, first.target, first.headers)


async def test_chunked_body_is_replayed(recorder):
    pieces = [b"a" * 10, os.urandom(3000), b"z"]
    framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    up = await recorder(response(503), response(200, b"ok"))
    async with proxy_to(up.port, retry=ir.Retry(1, codes=(503,))) as (rt, port):
        client = await Client.connect(port)
        resp = await client.request("POST", "/c", headers={"Transfer-Encoding": "chunked"}, body=framed)
        assert resp.status == 200
        await client.close()
    assert [s.body for s in up.requests] == [b"".join(pieces)] * 2


async def test_body_arriving_during_first_attempt_is_replayed(recorder):
    """The first attempt is connected (its head sent) before the body has arrived: the body
    bytes streamed to it are kept and replayed whole."""
    part1, part2 = os.urandom(1000), os.urandom(30000)
    up = await recorder(response(500), response(200, b"ok"))
    async with proxy_to(up.port, retry=ir.Retry(1, codes=(500,))) as (rt, port):
        wire = await Wire.open(port)
        head = b"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (len(part1) + len(part2))
        await wire.send(head + part1)
        await up.wait_heads(1)
        await wire.send(part2)
        resp = await wire.read_response()
        assert (resp.status, resp.body) == (200, b"ok")
        await wire.close()
    assert [s.body for s in up.requests] == [part1 + part2] * 2


@pytest.mark.parametrize("size, attempts, expected", [
    (64 * 1024, 2, 200),  # kept up to 64 KiB: replayed
    (64 * 1024 + 1, 1, 500),  # one byte more: not kept, not retried, the 500 is relayed
    (300_000, 1, 500),
])
async def test_body_over_64k_is_not_retried(recorder, size, attempts, expected):
    body = os.urandom(size)
    up = await recorder(response(500, b"first"), response(200, b"second"))
    async with proxy_to(up.port, retry=ir.Retry(3, codes=(500,))) as (rt, port):
        client = await Client.connect(port)
        resp = await client.request("POST", "/big", body=body)
        await client.close()
    assert resp.status == expected
    assert len(up.requests) == attempts
    assert all(s.body == body for s in up.requests)


async def test_body_over_64k_reset_is_503_not_retried(recorder):
    body = os.urandom(100_000)
    up = await recorder(Reset(), response(200))
    async with proxy_to(up.port, retry=ir.Retry(3)) as (rt, port):
        client = await Client.connect(port)
        resp = await client.request("POST", "/big", body=body)
        await client.close()
    assert (resp.status, resp.body) == (503, RESET_BODY)
    assert len(up.requests) == 1


# ------------------------------------------------------------------ backoff


@pytest.fixture
def fixed_draw(monkeypatch):
    """The back-off's random draw made ``value`` (full jitter waits draw × interval)."""
    def fix(value: float) -> None:
        monkeypatch.setattr(forward_module, "_draw", lambda: value)
    return fix


async def test_backoff_interval_doubles_between_attempts(recorder, fixed_draw):
    """With the draw at its top, the waits are the intervals themselves: 0.1, 0.2, 0.4 s."""
    fixed_draw(0.999)
    up = await recorder(response(500), response(500), response(500), response(200, b"ok"))
    async with proxy_to(up.port, retry=ir.Retry(3, codes=(500,), backoff=0.1)) as (rt, port):
        resp = await get(port)
    assert resp.status == 200
    assert len(up.requests) == 4
    gaps = [b.at - a.at for a, b in zip(up.requests, up.requests[1:], strict=False)]
    assert [g >= 0.0999 * 2 ** i for i, g in enumerate(gaps)] == [True] * 3, gaps


async def test_backoff_is_fully_jittered_down_to_nothing(recorder, fixed_draw):
    """A draw of 0 retries at once, whatever the interval (full jitter: [0, interval))."""
    fixed_draw(0.0)
    up = await recorder(response(500), response(500), response(200, b"ok"))
    async with proxy_to(up.port, retry=ir.Retry(2, codes=(500,), backoff=30.0)) as (rt, port):
        resp = await get(port)
    assert (resp.status, len(up.requests)) == (200, 3)


@pytest.mark.parametrize("retry, intervals", [
    (ir.Retry(5), [0.025, 0.05, 0.1, 0.2, 0.25, 0.25]),  # Envoy: base 25 ms, max 10 × base
    (ir.Retry(5, backoff=0.1), [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]),
    (ir.Retry(5, backoff=0.1, backoff_max=0.3), [0.1, 0.2, 0.3, 0.3, 0.3, 0.3]),
    (ir.Retry(5, backoff=0.5, backoff_max=0.5), [0.5] * 6),
])
def test_backoff_intervals(retry, intervals):
    policy = RetryPolicy(retry)
    seen = [policy.base]
    for _ in intervals[1:]:
        seen.append(policy.next_interval(seen[-1]))
    assert seen == pytest.approx(intervals)


async def test_backoff_applies_to_connection_failures(recorder, fixed_draw):
    fixed_draw(0.999)
    live = await recorder(response(200, b"live"))
    dest = endpoints(free_port(), free_port(), live.port)
    async with proxy_routes(forward(ROUTE, dest, retry=ir.Retry(2, backoff=0.15))) as (rt, port):
        start = time.monotonic()
        resp = await get(port)
        elapsed = time.monotonic() - start
    assert (resp.status, resp.body) == (200, b"live")
    assert elapsed >= 0.149 + 0.299


# ------------------------------------------------------------------ the relayed response


async def test_response_after_retry_is_relayed_intact(recorder):
    """The dropped answer (large, with its own headers) leaves no trace: the client gets the
    retry's head and chunked body exactly, and the connection carries the next request."""
    chunks = [b"first-", os.urandom(70000), b"-last"]
    dropped = response(503, b"D" * 200_000, (("x-attempt", "1"), ("set-cookie", "a=1")))
    good = chunked_response(200, chunks, (("x-attempt", "2"), ("content-type", "application/x-test")))
    up = await recorder(dropped, good, response(200, b"next", (("x-attempt", "3"),)))
    async with proxy_to(up.port, retry=ir.Retry(1, codes=(503,))) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(b"GET /r HTTP/1.1\r\nHost: a\r\n\r\n")
        resp = await wire.read_response()
        assert resp.status == 200
        assert resp.headers_named("x-attempt") == ["2"]
        assert resp.headers_named("set-cookie") == []
        assert resp.headers_named("content-type") == ["application/x-test"]
        assert resp.body == b"".join(chunks)
        await wire.send(b"GET /n HTTP/1.1\r\nHost: a\r\n\r\n")
        nxt = await wire.read_response()
        assert (nxt.status, nxt.body, nxt.headers_named("x-attempt")) == (200, b"next", ["3"])
        assert wire.buf == b""
        await wire.close()
    assert len(up.requests) == 3


async def test_pipelined_requests_with_retry_answered_in_order(recorder):
    def answer(i, seen):
        if seen.target == "/a" and sum(s.target == "/a" for s in up.requests) == 1:
            return response(500, b"a-fail")
        return response(200, seen.target.encode())

    up = await recorder(answer)
    async with proxy_to(up.port, retry=ir.Retry(1, codes=(500,))) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n")
        first = await wire.read_response()
        second = await wire.read_response()
        assert [(first.status, first.body), (second.status, second.body)] == [(200, b"/a"), (200, b"/b")]
        await wire.close()
    assert [s.target for s in up.requests] == ["/a", "/a", "/b"]


async def test_client_gone_during_backoff_stops_the_retries(recorder):
    up = await recorder(response(500), response(200))
    async with proxy_to(up.port, retry=ir.Retry(1, codes=(500,), backoff=0.3)) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        await up.wait_requests(1)
        await wire.close()
        # the retry would have been sent 0.3 s after the first answer
        with pytest.raises(asyncio.TimeoutError):
            await up.wait_requests(2, timeout=0.6)
    assert len(up.requests) == 1


async def test_head_request_is_retried(recorder):
    up = await recorder(b"HTTP/1.1 500 X\r\ncontent-length: 5\r\n\r\n", b"HTTP/1.1 200 X\r\ncontent-length: 7\r\n\r\n",
                        response(200, b"1234567"))
    async with proxy_to(up.port, retry=ir.Retry(1, codes=(500,))) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
        head = await wire.read_response(head=True)
        assert (head.status, head.headers_named("content-length")) == (200, ["7"])
        await wire.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (await wire.read_response()).body == b"1234567"
        await wire.close()
    assert [s.method for s in up.requests] == ["HEAD", "HEAD", "GET"]


async def test_expect_continue_body_is_replayed(recorder):
    up = await recorder(response(500), response(200, b"ok"))
    async with proxy_to(up.port, retry=ir.Retry(1, codes=(500,))) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        assert (await wire.read_one()).status == 100
        await wire.send(b"hello")
        resp = await wire.read_response()
        assert (resp.status, resp.body) == (200, b"ok")
        await wire.close()
    assert [s.body for s in up.requests] == [b"hello", b"hello"]

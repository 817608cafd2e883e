"""HTTPRoute RequestMirror (``ir.Route.mirrors``) over real sockets: the copy each mirror
receives, the client answered by the primary alone, mirrors that fail or hang, percentage
sampling, several mirrors, and the interplay with bodies and retries.

Mirror copies travel on their own tasks, so a test first waits for the client's response and
then (bounded) for the copies: ``wait_requests`` on the mirror, or ``mirror_tasks_done`` when
the point is that a copy was *not* sent."""
from __future__ import annotations

import asyncio
import os
import time

import pytest

from pyproxy import ir
from pyproxy.dataplane.limits import DEFAULT, Limits
from tests.conftest import destination, forward
from tests.helpers.http import Client
from tests.helpers.proxy import proxy_routes
from tests.helpers.recorder import (
    Close,
    Delay,
    Hang,
    Reset,
    free_port,
    mirror_tasks_done,
    response,
)

pytest_plugins = ["tests.helpers.recorder_fixture"]  # the ``recorder`` fixture

ROUTE = "httproute/default/mirror/rule/0/match/0"


def mirror(port: int, percent: float = 100.0, name: str = "backend/default/mirror") -> ir.Mirror:
    return ir.Mirror(destination(port, name=name), percent)


def mirrored(primary_port: int, *mirrors: ir.Mirror, limits: Limits = DEFAULT, **kw):
    """Serve one catch-all route forwarding to ``primary_port`` with ``mirrors``."""
    route = forward(ROUTE, destination(primary_port, name="backend/default/primary"), mirrors=mirrors, **kw)
    return proxy_routes(route, limits=limits)


async def test_mirror_sees_the_same_request(recorder):
    primary = await recorder(response(200, b"from primary", (("x-from", "primary"),)))
    shadow = await recorder(response(500, b"from mirror", (("x-from", "mirror"),)))
    body = os.urandom(5000)
    async with mirrored(primary.port, mirror(shadow.port)) as (rt, port):
        client = await Client.connect(port)
        resp = await client.request("POST", "/m/path?q=1&r=2", headers={"X-Custom": "abc"}, body=body)
        # the client's answer is the primary's, whatever the mirror said
        assert (resp.status, resp.body, resp.header("x-from")) == (200, b"from primary", "primary")
        await client.close()
        (copy,) = await shadow.wait_requests(1)
    (original,) = primary.requests
    assert (copy.method, copy.target, copy.body) == ("POST", "/m/path?q=1&r=2", body)
    assert copy.header("x-custom") == "abc"
    assert copy.header("content-length") == str(len(body))
    assert copy.header("x-request-id") == original.header("x-request-id")
    assert copy.header("x-forwarded-for") == original.header("x-forwarded-for")


async def test_mirror_of_bodiless_get(recorder):
    primary = await recorder(response(200, b"p"))
    shadow = await recorder(response(200, b"m"))
    async with mirrored(primary.port, mirror(shadow.port)) as (rt, port):
        client = await Client.connect(port)
        for i in range(3):
            assert (await client.request("GET", f"/g/{i}")).body == b"p"
        await client.close()
        copies = await shadow.wait_requests(3)
    assert sorted((c.method, c.target, c.body) for c in copies) == [("GET", f"/g/{i}", b"") for i in range(3)]


async def test_mirror_of_chunked_body(recorder):
    primary = await recorder(response(200, b"p"))
    shadow = await recorder(response(200, b"m"))
    pieces = [b"x" * 7, os.urandom(4000), b"end"]
    framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    async with mirrored(primary.port, mirror(shadow.port)) as (rt, port):
        client = await Client.connect(port)
        resp = await client.request("PUT", "/chunked", headers={"Transfer-Encoding": "chunked"}, body=framed)
        assert resp.status == 200
        await client.close()
        (copy,) = await shadow.wait_requests(1)
    assert (copy.method, copy.body) == ("PUT", b"".join(pieces))
    assert primary.requests[0].body == b"".join(pieces)


async def test_mirror_gets_the_body_that_arrived_after_the_head(recorder):
    """The copy is sent once the request is complete: a body that trickles in after the
    primary attempt started is mirrored whole."""
    primary = await recorder(response(200, b"p"))
    shadow = await recorder(response(200, b"m"))
    part1, part2 = os.urandom(100), os.urandom(20000)
    async with mirrored(primary.port, mirror(shadow.port)) as (rt, port):
        client = await Client.connect(port)
        await client.send(b"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (len(part1) + len(part2))
                          + part1)
        await primary.wait_heads(1)
        await client.send(part2)
        resp = await client.read_response()
        assert resp.status == 200
        await client.close()
        (copy,) = await shadow.wait_requests(1)
    assert copy.body == part1 + part2


async def test_mirror_sees_headers_after_the_route_filter(recorder):
    """Conformance HTTPRouteRequestPercentageMirror case 2: the request header filter applies
    to the copy as to the primary request."""
    primary = await recorder(response(200, b"p"))
    shadow = await recorder(response(200, b"m"))
    mutation = ir.HeaderMutation(set=(("x-header-set", "set-overwrites-values"),),
                                 add=(("x-header-add", "header-val-1"), ("x-header-add-append", "header-val-2")),
                                 remove=("x-header-remove",))
    async with mirrored(primary.port, mirror(shadow.port), request_headers=mutation) as (rt, port):
        client = await Client.connect(port)
        resp = await client.request("GET", "/h", headers={"X-Header-Remove": "remove-val",
                                                          "X-Header-Add-Append": "append-val-1"})
        assert resp.status == 200
        await client.close()
        (copy,) = await shadow.wait_requests(1)
    for seen in (primary.requests[0], copy):
        assert seen.header("x-header-set") == "set-overwrites-values"
        assert seen.header("x-header-add") == "header-val-1"
        assert seen.header("x-header-add-append") == "append-val-1,header-val-2"
        assert seen.header("x-header-remove") is None


# ------------------------------------------------------------------ mirrors that fail


async def test_dead_mirror_does_not_affect_the_client(recorder):
    primary = await recorder(response(200, b"p"))
    async with mirrored(primary.port, mirror(free_port())) as (rt, port):
        client = await Client.connect(port)
        start = time.monotonic()
        for i in range(5):
            resp = await client.request("POST", f"/d/{i}", body=b"payload")
            assert (resp.status, resp.body) == (200, b"p")
        assert time.monotonic() - start < 2.0
        await client.close()
        await mirror_tasks_done()
    assert len(primary.requests) == 5


@pytest.mark.parametrize("answer", [
    Hang(),
    Delay(3.0, response(200, b"late")),
    Reset(),
    Close(),
    b"NOT HTTP AT ALL\r\n\r\n",
    Close(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\ncut"),
], ids=["hang", "delayed", "reset", "close", "garbage", "truncated"])
async def test_failing_or_slow_mirror_does_not_delay_or_fail_the_client(recorder, answer):
    primary = await recorder(response(200, b"p", (("x-from", "primary"),)))
    shadow = await recorder(answer)
    async with mirrored(primary.port, mirror(shadow.port)) as (rt, port):
        client = await Client.connect(port)
        start = time.monotonic()
        for i in range(3):
            resp = await client.request("GET", f"/s/{i}")
            assert (resp.status, resp.body, resp.header("x-from")) == (200, b"p", "primary")
        assert time.monotonic() - start < 1.5  # a hanging or 3 s mirror is not waited for
        await client.close()
        await shadow.wait_requests(3)  # the copies were sent all the same


async def test_mirror_is_sent_when_the_primary_fails(recorder):
    shadow = await recorder(response(200, b"m"))
    async with mirrored(free_port(), mirror(shadow.port)) as (rt, port):
        client = await Client.connect(port)
        resp = await client.request("GET", "/primary-down")
        assert resp.status == 503
        await client.close()
        (copy,) = await shadow.wait_requests(1)
    assert copy.target == "/primary-down"


# ------------------------------------------------------------------ sampling and several mirrors


@pytest.mark.parametrize("percent", [20.0, 50.0])
async def test_percent_is_sampled(recorder, percent):
    n = 300
    primary = await recorder(response(200, b"p"))
    shadow = await recorder(response(200, b"m"))
    async with mirrored(primary.port, mirror(shadow.port, percent)) as (rt, port):
        client = await Client.connect(port)
        for i in range(n):
            assert (await client.request("GET", f"/p/{i}")).status == 200
        await client.close()
        await mirror_tasks_done()
    assert len(primary.requests) == n
    expected = n * percent / 100
    sd = (n * percent / 100 * (1 - percent / 100)) ** 0.5
    # 5 standard deviations: a spurious failure is a one in a few million event
    assert abs(len(shadow.requests) - expected) < 5 * sd, len(shadow.requests)
    assert {c.target for c in shadow.requests} <= {s.target for s in primary.requests}


@pytest.mark.parametrize("percent, expected", [(100.0, 20), (0.0, 0)])
async def test_percent_bounds(recorder, percent, expected):
    primary = await recorder(response(200, b"p"))
    shadow = await recorder(response(200, b"m"))
    async with mirrored(primary.port, mirror(shadow.port, percent)) as (rt, port):
        client = await Client.connect(port)
        for i in range(20):
            assert (await client.request("GET", f"/b/{i}")).status == 200
        await client.close()
        await shadow.wait_requests(expected)
        await mirror_tasks_done()
    assert len(shadow.requests) == expected


async def test_several_mirrors(recorder):
    primary = await recorder(response(200, b"p"))
    first = await recorder(response(200, b"m1"))
    second = await recorder(Hang())
    never = await recorder(response(200, b"m3"))
    mirrors = (mirror(first.port, name="backend/default/m1"), mirror(second.port, name="backend/default/m2"),
               mirror(never.port, 0.0, name="backend/default/m3"))
    async with mirrored(primary.port, *mirrors) as (rt, port):
        client = await Client.connect(port)
        resp = await client.request("POST", "/multi", body=b"the body")
        assert (resp.status, resp.body) == (200, b"p")
        await client.close()
        (a,) = await first.wait_requests(1)
        (b,) = await second.wait_requests(1)
    request_id = primary.requests[0].header("x-request-id")
    for copy in (a, b):
        assert (copy.method, copy.target, copy.body) == ("POST", "/multi", b"the body")
        assert copy.header("x-request-id") == request_id
    assert never.requests == []


# ------------------------------------------------------------------ bodies and retries


@pytest.mark.parametrize("size, copied", [(64 * 1024, True), (64 * 1024 + 1, False), (200_000, False)])
async def test_body_over_64k_is_not_mirrored(recorder, size, copied):
    primary = await recorder(response(200, b"p"))
    shadow = await recorder(response(200, b"m"))
    body = os.urandom(size)
    async with mirrored(primary.port, mirror(shadow.port)) as (rt, port):
        client = await Client.connect(port)
        resp = await client.request("POST", "/big", body=body)
        assert resp.status == 200
        resp = await client.request("POST", "/small", body=b"tiny")
        assert resp.status == 200
        await client.close()
        await shadow.wait_requests(2 if copied else 1)
        await mirror_tasks_done()
    assert primary.requests[0].body == body  # the primary always gets the whole body
    expected = ([("/big", body)] if copied else []) + [("/small", b"tiny")]
    assert sorted((c.target, c.body) for c in shadow.requests) == sorted(expected)


async def test_mirror_is_sent_once_when_the_primary_is_retried(recorder):
    primary = await recorder(response(500), Reset(), response(200, b"third"))
    shadow = await recorder(response(200, b"m"))
    async with mirrored(primary.port, mirror(shadow.port), retry=ir.Retry(2, codes=(500,))) as (rt, port):
        client = await Client.connect(port)
        resp = await client.request("POST", "/once", body=b"abc")
        assert (resp.status, resp.body) == (200, b"third")
        await client.close()
        await shadow.wait_requests(1)
        await mirror_tasks_done()
    assert len(primary.requests) == 3
    assert [(c.target, c.body) for c in shadow.requests] == [("/once", b"abc")]


async def test_pipelined_requests_are_each_mirrored(recorder):
    primary = await recorder(lambda i, seen: response(200, seen.body))
    shadow = await recorder(response(200, b"m"))
    async with mirrored(primary.port, mirror(shadow.port)) as (rt, port):
        client = await Client.connect(port)
        await client.send(b"POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\none"
                          b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\ntwo"
                          b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n")
        bodies = [(await client.read_response()).body for _ in range(3)]
        assert bodies == [b"one", b"two", b""]
        await client.close()
        await shadow.wait_requests(3)
        await mirror_tasks_done()
    assert sorted((c.method, c.target, c.body) for c in shadow.requests) == [
        ("GET", "/3", b""), ("POST", "/1", b"one"), ("POST", "/2", b"two")]


# ------------------------------------------------------------------ bounds (defect 4)


async def test_mirrors_in_flight_are_bounded(recorder):
    """One client cannot make the proxy open a mirror connection per request: with mirrors
    that never answer, at most ``max_mirrors`` are in flight and the rest are dropped, while
    every primary request is answered."""
    primary = await recorder(response(200, b"p"))
    shadow = await recorder(Hang())
    async with mirrored(primary.port, mirror(shadow.port), limits=Limits(max_mirrors=5)) as (rt, port):
        client = await Client.connect(port)
        for i in range(50):
            resp = await client.request("GET", f"/flood/{i}")
            assert (resp.status, resp.body) == (200, b"p")
        await client.close()
        await shadow.wait_requests(5)
        assert shadow.connections == 5
        assert rt.context.mirrors.dropped >= 45
    await mirror_tasks_done()  # stopping the proxy cancelled the hanging ones
    assert len(primary.requests) == 50 and len(shadow.requests) == 5


async def test_a_mirror_that_timed_out_frees_its_place(recorder):
    primary = await recorder(response(200, b"p"))
    shadow = await recorder(Hang())
    limits = Limits(max_mirrors=2, mirror_timeout=0.1)
    async with mirrored(primary.port, mirror(shadow.port), limits=limits) as (rt, port):
        client = await Client.connect(port)
        for i in range(3):
            assert (await client.request("GET", f"/t/{i}")).status == 200
        await shadow.wait_requests(2)
        await mirror_tasks_done()
        assert repr(rt.context.mirrors) == "<Mirrors in flight 0, dropped 1>"
        assert (await client.request("GET", "/t/again")).status == 200
        await shadow.wait_requests(3)
        await client.close()
    assert [c.target for c in shadow.requests] == ["/t/0", "/t/1", "/t/again"]
    assert shadow.connections == 3  # a timed-out mirror's connection is not reused


async def test_mirrors_reuse_pooled_connections(recorder):
    primary = await recorder(response(200, b"p"))
    shadow = await recorder(response(200, b"m"))
    async with mirrored(primary.port, mirror(shadow.port)) as (rt, port):
        client = await Client.connect(port)
        for i in range(5):
            assert (await client.request("POST", f"/r/{i}", body=b"abc")).status == 200
            await shadow.wait_requests(i + 1)
            await mirror_tasks_done()
        await client.close()
    assert [c.target for c in shadow.requests] == [f"/r/{i}" for i in range(5)]
    assert shadow.connections == 1


async def test_mirror_at_the_connection_limit_is_dropped_not_queued(recorder):
    primary = await recorder(response(200, b"p"))
    shadow = await recorder(Hang())
    limits = Limits(pool_max_per_key=1)
    async with mirrored(primary.port, mirror(shadow.port), limits=limits) as (rt, port):
        client = await Client.connect(port)
        assert (await client.request("GET", "/first")).status == 200
        await shadow.wait_requests(1)
        assert (await client.request("GET", "/second")).status == 200
        async with asyncio.timeout(5):
            while rt.context.mirrors.dropped < 1:
                await asyncio.sleep(0.005)
        assert repr(rt.context.mirrors) == "<Mirrors in flight 1, dropped 1>"
        assert f"127.0.0.1:{shadow.port}: busy=1 idle=0 connecting=0 waiting=0" in repr(rt.pool)
        await client.close()
    assert shadow.connections == 1


async def test_stopping_cancels_the_mirrors_in_flight(recorder):
    primary = await recorder(response(200, b"p"))
    shadow = await recorder(Hang())
    async with mirrored(primary.port, mirror(shadow.port)) as (rt, port):
        client = await Client.connect(port)
        assert (await client.request("GET", "/stuck")).status == 200
        await shadow.wait_requests(1)
        await client.close()
        mirrors = rt.context.mirrors
    await mirror_tasks_done()
    assert repr(mirrors) == "<Mirrors in flight 0, dropped 0>"
    assert "127.0.0.1:%d" % shadow.port not in repr(rt.pool)  # its connection was closed

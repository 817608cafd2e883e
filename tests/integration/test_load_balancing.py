"""Load balancing over real endpoints on 127.0.0.1, 127.0.0.2 and 127.0.0.3: each policy's
observable distribution, ConsistentHash stickiness (header, cookie, client address) and the
cookie Envoy sets when the request has none, and slow start after a reload adds an endpoint."""
from __future__ import annotations

import asyncio
import re
import time

from pyproxy import ir
from pyproxy.translate.status import Result
from tests.conftest import forward, listener
from tests.helpers.h2client import H2Client
from tests.helpers.http import Client, close_writer
from tests.helpers.members import destination, until
from tests.helpers.proxy import proxy_routes

pytest_plugins = ["tests.helpers.members_fixture"]  # the ``members`` fixture

ROUTE = "httproute/default/lb/rule/0/match/0"


def balanced(kind: str, **kw) -> ir.LoadBalancer:
    return ir.LoadBalancer(kind, **kw)


async def names(client: Client, count: int, path: str = "/", headers: dict[str, str] | None = None) -> list[str]:
    """Who answered each of ``count`` requests, one after the other."""
    return [(await client.request("GET", path, headers=headers)).body.decode() for _ in range(count)]


async def test_round_robin_takes_the_endpoints_in_turn(members):
    pool = await members(3)
    async with proxy_routes(forward(ROUTE, destination(pool, load_balancer=balanced("RoundRobin")))) as (_, port):
        client = await Client.connect(port)
        assert await names(client, 9) == ["a", "b", "c"] * 3
        await client.close()


async def test_random_reaches_every_endpoint(members):
    pool = await members(3)
    async with proxy_routes(forward(ROUTE, destination(pool, load_balancer=balanced("Random")))) as (_, port):
        client = await Client.connect(port)
        seen = await names(client, 60)
        await client.close()
    assert set(seen) == {"a", "b", "c"}


async def test_least_request_keeps_off_the_busy_endpoint(members):
    """One endpoint holds a request: of any two endpoints drawn, the idle one is taken, so the
    busy one gets nothing more while it is busy (the default policy)."""
    pool = await members(3)
    async with proxy_routes(forward(ROUTE, destination(pool))) as (_, port):
        holder = await Client.connect(port)
        await holder.send(b"GET /hold HTTP/1.1\r\nHost: example.com\r\n\r\n")
        await until(lambda: sum(m.holding for m in pool) == 1)
        [busy] = [m for m in pool if m.holding]
        served = busy.served
        client = await Client.connect(port)
        seen = await names(client, 30)
        assert busy.served == served
        assert set(seen) == {m.name for m in pool} - {busy.name}
        busy.release.set()
        assert (await holder.read_response()).body.decode() == busy.name
        await client.close()
        await holder.close()


def hashing(on: str, **kw) -> ir.LoadBalancer:
    return balanced("ConsistentHash", consistent_hash=ir.ConsistentHash(on, **kw))


async def test_consistent_hash_on_a_header_sticks_per_value(members):
    pool = await members(3)
    async with proxy_routes(forward(ROUTE, destination(pool, load_balancer=hashing("Header", name="x-user")))) as (
            _, port):
        client = await Client.connect(port)
        chosen = {}
        for user in range(12):
            answers = await names(client, 3, headers={"X-User": f"user-{user}"})
            assert len(set(answers)) == 1, answers
            chosen[user] = answers[0]
        again = {user: (await names(client, 1, headers={"X-User": f"user-{user}"}))[0] for user in range(12)}
        without = await names(client, 30)  # no header: balanced as by Random
        await client.close()
    assert again == chosen
    assert len(set(chosen.values())) > 1
    assert len(set(without)) > 1


async def test_consistent_hash_cookie_is_made_up_once_and_then_followed(members):
    """Without the cookie the proxy picks an endpoint and sets ``name="value"; Max-Age;
    Path; HttpOnly`` as Envoy does (the value is the same for one client connection);
    requests carrying it go to that endpoint."""
    pool = await members(3)
    lb = hashing("Cookie", name="Session", cookie_ttl=60, cookie_path="/app")
    async with proxy_routes(forward(ROUTE, destination(pool, load_balancer=lb))) as (_, port):
        client = await Client.connect(port)
        first = await client.request("GET", "/app")
        set_cookie = first.header("set-cookie")
        assert set_cookie is not None
        match = re.fullmatch(r'Session="([0-9a-f]{16})"; Max-Age=60; Path=/app; HttpOnly', set_cookie)
        assert match, set_cookie
        second = await client.request("GET", "/app")
        assert (second.header("set-cookie"), second.body) == (set_cookie, first.body)

        other = await Client.connect(port)
        for _ in range(5):
            followed = await other.request("GET", "/app", headers={"Cookie": f"theme=dark; Session={match[1]}"})
            assert (followed.body, followed.header("set-cookie")) == (first.body, None)
        await other.close()
        await client.close()


async def test_consistent_hash_cookie_without_ttl_is_never_set(members):
    pool = await members(2)
    lb = hashing("Cookie", name="session")
    async with proxy_routes(forward(ROUTE, destination(pool, load_balancer=lb))) as (_, port):
        client = await Client.connect(port)
        answers = [await client.request("GET", "/") for _ in range(5)]
        await client.close()
    assert [answer.header("set-cookie") for answer in answers] == [None] * 5


async def test_consistent_hash_on_the_source_address_sticks_per_client(members):
    pool = await members(3)
    async with proxy_routes(forward(ROUTE, destination(pool, load_balancer=hashing("SourceIP")))) as (_, port):
        for source in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
            answers = []
            for _ in range(3):  # a new connection (a new client port) each time
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), 5)
                client = Client(reader, writer)
                answers += await names(client, 2)
                await close_writer(writer)
            assert len(set(answers)) == 1, (source, answers)


async def test_slow_start_ramps_up_an_endpoint_a_reload_adds(members):
    """a and b serve past their slow start window; a reload adds c, which joins at a tenth of
    their weight and ramps up: it gets fewer requests than either while in its window, and its
    full share (round robin) after. The reload keeps a's and b's join time."""
    a, b, c = await members(3)
    window = 1.0
    lb = balanced("RoundRobin", slow_start_window=window)
    async with proxy_routes(forward(ROUTE, destination((a, b), load_balancer=lb))) as (rt, port):
        client = await Client.connect(port)
        assert sorted(await names(client, 4)) == ["a", "a", "b", "b"]
        started = time.monotonic()
        await until(lambda: time.monotonic() > started + window)  # a and b are past their window
        await rt.serve(Result(ir.Config((listener(forward(ROUTE, destination((a, b, c), load_balancer=lb))),)), ()))
        joined = time.monotonic()
        ramp = await names(client, 30)
        assert ramp.count("c") < min(ramp.count("a"), ramp.count("b")), ramp
        await until(lambda: time.monotonic() > joined + window)
        full = await names(client, 30)
        await client.close()
    assert (full.count("a"), full.count("b"), full.count("c")) == (10, 10, 10)


async def test_hashing_works_for_http2_clients_too(members):
    """An HTTP/2 stream drives the same forwarding: its client address and the made-up cookie
    come from its connection."""
    pool = await members(3)
    lb = hashing("Cookie", name="session", cookie_ttl=0)
    async with proxy_routes(forward(ROUTE, destination(pool, load_balancer=lb))) as (_, port):
        client = await H2Client.connect(port)
        first = await client.request("/")
        set_cookie = first.header("set-cookie")
        assert set_cookie is not None and re.fullmatch(r'session="[0-9a-f]{16}"; HttpOnly', set_cookie)
        value = set_cookie.split('"')[1]
        again = [await client.request("/", headers=[(b"cookie", f"session={value}".encode())]) for _ in range(4)]
        await client.close()
    assert {reply.body for reply in again} == {first.body}
    assert [reply.header("set-cookie") for reply in again] == [None] * 4

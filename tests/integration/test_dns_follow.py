"""FQDN endpoints follow DNS: the proxy picks up a changed answer within the refresh interval,
keeps the last good answer when the resolver fails, and answers 503 when a name never
resolved."""
from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

import pytest

from pyproxy import ir
from tests.conftest import forward, listener, serve_ir
from tests.helpers import accesslog
from tests.helpers.dnsserver import DnsServer
from tests.helpers.http import Client, Upstream


@asynccontextmanager
async def on_one_port(first: str, second: str):
    """Two upstreams on one port of two addresses (skipped when the port is taken on the second)."""
    a = await Upstream().start(host=first)
    try:
        b = await Upstream().start(host=second, port=a.port)
    except OSError:
        await a.stop()
        pytest.skip(f"port taken on {second}")
    try:
        yield a, b
    finally:
        await a.stop()
        await b.stop()


@pytest.fixture
async def two_upstreams():
    async with on_one_port("127.0.0.2", "127.0.0.3") as pair:
        yield pair


def fqdn_config(port: int) -> ir.Config:
    dest = ir.Destination(name="backend/default/dns", endpoints=(ir.Endpoint("fqdn", "backend.test", port),))
    return ir.Config((listener(forward("r", dest)),))


async def _wait_for(predicate, timeout: float) -> bool:
    """Poll ``predicate`` (plain or async) until it holds, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return True
        await asyncio.sleep(0.05)
    return False


async def reaches(port: int, upstream: Upstream) -> bool:
    """A request through the proxy succeeds, and ``upstream`` has seen one."""
    client = await Client.connect(port)
    try:
        return (await client.request("GET", "/probe")).status == 200 and bool(upstream.seen)
    finally:
        await client.close()


async def test_follows_changed_answer_and_keeps_last_good(two_upstreams):
    a, b = two_upstreams
    async with DnsServer() as dns:
        dns.set("backend.test", ["127.0.0.2"])
        async with serve_ir(fqdn_config(a.port), nameservers=(dns.address,), dns_refresh=0.2) as rt:
            port = rt.ports[("127.0.0.1", 0)]
            client = await Client.connect(port)
            assert (await client.request("GET", "/one")).status == 200
            assert [s.path for s in a.seen] == ["/one"]

            dns.set("backend.test", ["127.0.0.3"])

            assert await _wait_for(lambda: reaches(port, b), timeout=5), "proxy did not follow the new DNS answer"

            dns.set_failure("backend.test", "SERVFAIL")
            queries = dns.queries("backend.test")
            assert await _wait_for(lambda: dns.queries("backend.test") > queries + 1, timeout=5)
            b.seen.clear()
            fresh = await Client.connect(port)
            assert (await fresh.request("GET", "/still")).status == 200
            assert [s.path for s in b.seen] == ["/still"]
            await fresh.close()
            await client.close()


async def test_unresolvable_name_answers_503():
    async with DnsServer() as dns:
        dns.set_failure("backend.test", "NXDOMAIN")
        async with serve_ir(fqdn_config(9), nameservers=(dns.address,), dns_refresh=0.2) as rt:
            client = await Client.connect(rt.ports[("127.0.0.1", 0)])
            resp = await client.request("GET", "/")
            assert resp.status == 503
            assert resp.body == b"no healthy upstream"
            await client.close()


def fqdn_destination(port: int, dns: ir.DnsSettings) -> ir.Config:
    dest = ir.Destination(name="backend/default/dns", endpoints=(ir.Endpoint("fqdn", "backend.test", port),), dns=dns)
    return ir.Config((listener(forward("r", dest)),))


async def test_respect_ttl_follows_the_answer_before_the_refresh_interval(two_upstreams):
    """The refresh interval is a minute, the record's TTL a second: with ``respect_ttl`` the
    new answer is used within seconds."""
    a, b = two_upstreams
    async with DnsServer() as dns:
        dns.set("backend.test", ["127.0.0.2"], ttl=1)
        config = fqdn_destination(a.port, ir.DnsSettings(refresh=60, respect_ttl=True))
        async with serve_ir(config, nameservers=(dns.address,), dns_refresh=60) as rt:
            port = rt.ports[("127.0.0.1", 0)]
            client = await Client.connect(port)
            assert (await client.request("GET", "/one")).status == 200
            await client.close()
            dns.set("backend.test", ["127.0.0.3"], ttl=1)

            assert await _wait_for(lambda: reaches(port, b), timeout=5), "proxy did not follow the answer's TTL"


@pytest.mark.parametrize("family, reached", [("IPv4Preferred", "v4"), ("IPv6", "v6"), ("IPv6Preferred", "v6")])
async def test_the_lookup_family_picks_the_address(family, reached):
    """``backend.test`` has an A record (127.0.0.2) and an AAAA record (::1), each address
    served by its own upstream on the same port."""
    async with on_one_port("127.0.0.2", "::1") as (v4, v6), DnsServer() as dns:
        dns.set("backend.test", ["127.0.0.2", "::1"])
        config = fqdn_destination(v4.port, ir.DnsSettings(lookup_family=family))
        async with serve_ir(config, nameservers=(dns.address,)) as rt:
            client = await Client.connect(rt.ports[("127.0.0.1", 0)])
            assert (await client.request("GET", "/which")).status == 200
            await client.close()
        assert (len(v4.seen), len(v6.seen)) == ((1, 0) if reached == "v4" else (0, 1))


async def test_a_cold_dns_failure_is_503_uh(caplog):
    accesslog.capture(caplog)
    async with DnsServer() as dns:
        dns.set_failure("backend.test", "SERVFAIL")
        async with serve_ir(fqdn_config(9), nameservers=(dns.address,), dns_refresh=0.2) as rt:
            client = await Client.connect(rt.ports[("127.0.0.1", 0)])
            resp = await client.request("GET", "/")
            await client.close()
    assert (resp.status, resp.body) == (503, b"no healthy upstream")
    assert accesslog.entries(caplog) == [(503, "UH", "no_healthy_upstream")]

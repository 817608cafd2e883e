"""FQDN endpoints follow DNS: the proxy picks up a changed answer within the refresh interval,
keeps the last good answer when the resolver fails, and answers 503 when a name never
resolved."""
from __future__ import annotations

import asyncio
import time

import pytest

from pyproxy import ir
from tests.conftest import forward, listener, serve_ir
from tests.helpers.dnsserver import DnsServer
from tests.helpers.http import Client, Upstream


@pytest.fixture
async def two_upstreams():
    a = await Upstream().start(host="127.0.0.2")
    try:
        b = await Upstream().start(host="127.0.0.3", port=a.port)
    except OSError:
        await a.stop()
        pytest.skip("port taken on 127.0.0.3")
    yield a, b
    await a.stop()
    await b.stop()


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

            async def reached_b() -> bool:
                c = await Client.connect(port)
                try:
                    return (await c.request("GET", "/probe")).status == 200 and bool(b.seen)
                finally:
                    await c.close()

            assert await _wait_for(reached_b, timeout=5), "proxy did not follow the new DNS answer"

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

"""The DNS cache against a real loopback DNS responder (UDP on 127.0.0.1, no mocks)."""
from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
from collections.abc import Callable

import pytest
import uvloop

from pyproxy.dataplane.dns import DEFAULT_FAMILY, DnsError, Resolver, Watch, parse_hosts
from pyproxy.errors import NoHealthyUpstream
from tests.helpers.dnsserver import DnsServer, ThreadedDnsServer

REFRESH = 0.2  # a shortened refresh interval, so tests see several refreshes per second


async def eventually(predicate: Callable[[], object], timeout: float = 3.0) -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)


def watch(names: dict[str, float | None]) -> dict:
    """``set_watched``'s argument for names in the default family, at these intervals."""
    return {(name, DEFAULT_FAMILY): Watch(refresh) for name, refresh in names.items()}


def dns_tasks() -> set[str]:
    return {t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("pyproxy.dns.") and not t.done()}


@pytest.fixture
async def dns_server():
    async with DnsServer() as server:
        yield server


@pytest.fixture
def hosts_file(tmp_path):
    path = tmp_path / "hosts"
    path.write_text("127.0.0.1 localhost\n")
    return path


@pytest.fixture
async def resolver(dns_server, hosts_file):
    resolver = Resolver([dns_server.address], REFRESH, hosts_file=str(hosts_file), jitter=0.0, timeout=0.5)
    yield resolver
    await resolver.close()


def rewrite(path, text: str) -> None:
    """Replace the file's content and move its mtime forward (coarse clocks would hide it)."""
    before = os.stat(path).st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 10**9, before + 10**9))


# ------------------------------------------------------------------ answers


async def test_resolve_returns_every_address_from_the_nameserver(dns_server, resolver):
    dns_server.set("backend.test", ["127.0.0.2", "127.0.0.3"])

    assert sorted(await resolver.resolve("backend.test")) == ["127.0.0.2", "127.0.0.3"]
    assert dns_server.queries("backend.test", "A") == 1
    assert resolver.stats["queries"] == 1


async def test_ipv4_is_preferred_and_ipv6_used_only_without_a_records(dns_server, resolver):
    dns_server.set("dual.test", ["127.0.0.2", "::2"])
    dns_server.set("v6.test", ["::3"])

    assert await resolver.resolve("dual.test") == ("127.0.0.2",)
    assert dns_server.queries("dual.test", "AAAA") == 0
    assert await resolver.resolve("v6.test") == ("::3",)


@pytest.mark.parametrize("family, dual, v4_only, v6_only, asked", [
    ("IPv4", ("127.0.0.2",), ("127.0.0.4",), None, {"A"}),
    ("IPv6", ("::2",), None, ("::3",), {"AAAA"}),
    ("IPv4Preferred", ("127.0.0.2",), ("127.0.0.4",), ("::3",), {"A"}),
    ("IPv6Preferred", ("::2",), ("127.0.0.4",), ("::3",), {"AAAA"}),
    ("IPv4AndIPv6", ("127.0.0.2", "::2"), ("127.0.0.4",), ("::3",), {"A", "AAAA"}),
])
async def test_each_lookup_family(dns_server, resolver, family, dual, v4_only, v6_only, asked):
    """``asked``: the record types queried for a name that has both."""
    dns_server.set("dual.test", ["127.0.0.2", "::2"])
    dns_server.set("v4.test", ["127.0.0.4"])
    dns_server.set("v6.test", ["::3"])

    assert await resolver.resolve("dual.test", family) == dual
    assert {t for t in ("A", "AAAA") if dns_server.queries("dual.test", t)} == asked
    for name, expected in (("v4.test", v4_only), ("v6.test", v6_only)):
        if expected is None:
            with pytest.raises(DnsError, match="no AAAA records" if family == "IPv6" else "no A records"):
                await resolver.resolve(name, family)
        else:
            assert await resolver.resolve(name, family) == expected
    assert resolver.lookup("dual.test", family) == dual


async def test_a_name_in_two_families_is_two_entries(dns_server, resolver):
    dns_server.set("dual.test", ["127.0.0.2", "::2"])

    assert await resolver.resolve("dual.test", "IPv4") == ("127.0.0.2",)
    assert resolver.lookup("dual.test", "IPv6") is None
    assert await resolver.resolve("dual.test", "IPv6") == ("::2",)
    assert resolver.lookup("dual.test", "IPv4") == ("127.0.0.2",)


async def test_the_hosts_file_answers_in_each_family(dns_server, resolver, hosts_file):
    hosts_file.write_text("127.0.0.9 pinned.test\n::9 pinned.test\n127.0.0.8 v4pinned.test\n")
    dns_server.set("v4pinned.test", ["::7"])

    assert resolver.lookup("pinned.test", "IPv6") == ("::9",)
    assert resolver.lookup("pinned.test", "IPv4AndIPv6") == ("127.0.0.9", "::9")
    assert resolver.lookup("pinned.test") == ("127.0.0.9",)
    assert resolver.lookup("localhost", "IPv6") == ("::1",)
    # the file has no IPv6 address for it: DNS is asked
    assert await resolver.resolve("v4pinned.test", "IPv6") == ("::7",)


async def test_names_are_case_insensitive(dns_server, resolver):
    dns_server.set("backend.test", ["127.0.0.2"])

    assert await resolver.resolve("Backend.TEST") == ("127.0.0.2",)
    assert resolver.lookup("backend.test") == ("127.0.0.2",)


async def test_a_large_answer_arrives_over_tcp_after_truncation(dns_server, resolver):
    addresses = [f"10.0.{i // 256}.{i % 256}" for i in range(100)]
    dns_server.set("big.test", addresses)

    assert sorted(await resolver.resolve("big.test")) == sorted(addresses)


async def test_ip_literals_and_localhost_never_reach_dns(dns_server, resolver, hosts_file):
    hosts_file.write_text("")

    assert resolver.lookup("10.1.2.3") == ("10.1.2.3",)
    assert await resolver.resolve("::1") == ("::1",)
    assert await resolver.resolve("localhost") == ("127.0.0.1",)
    assert resolver.stats["queries"] == 0


# ------------------------------------------------------------------ hosts file


async def test_hosts_file_wins_over_dns_and_is_reread_when_it_changes(dns_server, resolver, hosts_file):
    dns_server.set("backend.test", ["127.0.0.2"])
    hosts_file.write_text("127.0.0.9 other.test Backend.test  # pinned\n")

    assert await resolver.resolve("backend.test") == ("127.0.0.9",)
    assert resolver.lookup("backend.test") == ("127.0.0.9",)

    rewrite(hosts_file, "127.0.0.8 backend.test\n")
    assert await resolver.resolve("backend.test") == ("127.0.0.8",)

    rewrite(hosts_file, "127.0.0.9 other.test\n")
    assert await resolver.resolve("backend.test") == ("127.0.0.2",)
    assert dns_server.queries("backend.test") == 1


async def test_a_watched_name_follows_the_hosts_file(dns_server, resolver, hosts_file):
    hosts_file.write_text("127.0.0.9 backend.test\n")
    resolver.set_watched(watch({"backend.test": None}))
    await eventually(lambda: resolver.lookup("backend.test") == ("127.0.0.9",))

    rewrite(hosts_file, "127.0.0.8 backend.test\n")

    await eventually(lambda: resolver.lookup("backend.test") == ("127.0.0.8",))
    assert dns_server.queries("backend.test") == 0


def test_parse_hosts_keeps_both_families_and_skips_comments_and_junk():
    text = """
    # comment
    127.0.0.1   localhost
    ::1         localhost ip6-localhost
    fe80::1     v6only.test
    10.0.0.1    a.test A-Alias.test.  # trailing comment
    10.0.0.2    a.test
    not-an-ip   bad.test
    10.0.0.3
    """
    assert parse_hosts(text) == {
        "localhost": (("127.0.0.1",), ("::1",)),
        "ip6-localhost": ((), ("::1",)),
        "v6only.test": ((), ("fe80::1",)),
        "a.test": (("10.0.0.1", "10.0.0.2"), ()),
        "a-alias.test": (("10.0.0.1",), ()),
    }


# ------------------------------------------------------------------ cache


async def test_lookup_answers_a_cached_name_without_awaiting(dns_server, resolver):
    dns_server.set("backend.test", ["127.0.0.2"])
    assert resolver.lookup("backend.test") is None

    await resolver.resolve("backend.test")

    assert not inspect.iscoroutinefunction(resolver.lookup)
    assert resolver.lookup("backend.test") == ("127.0.0.2",)
    assert await resolver.resolve("backend.test") == ("127.0.0.2",)
    assert dns_server.queries("backend.test") == 1


async def test_concurrent_misses_share_one_query(dns_server, resolver):
    dns_server.set("backend.test", ["127.0.0.2"])
    dns_server.set_delay("backend.test", 0.1)

    answers = await asyncio.gather(*(resolver.resolve("backend.test") for _ in range(20)))

    assert set(answers) == {("127.0.0.2",)}
    assert dns_server.queries("backend.test") == 1


async def test_an_unwatched_answer_expires_after_the_default_refresh(dns_server, resolver):
    dns_server.set("backend.test", ["127.0.0.2"])
    await resolver.resolve("backend.test")
    dns_server.set("backend.test", ["127.0.0.3"])

    await eventually(lambda: resolver.lookup("backend.test") is None)
    assert await resolver.resolve("backend.test") == ("127.0.0.3",)


# ------------------------------------------------------------------ failures


@pytest.mark.parametrize("failure", ["NXDOMAIN", "SERVFAIL", "timeout"])
async def test_a_cold_failure_raises_dns_error_answered_503(dns_server, resolver, failure):
    dns_server.set_failure("backend.test", failure)

    with pytest.raises(DnsError) as caught:
        await resolver.resolve("backend.test")

    assert isinstance(caught.value, NoHealthyUpstream)
    assert caught.value.status == 503
    assert "backend.test" in str(caught.value)
    assert resolver.stats["failures"] == 1


async def test_a_name_without_addresses_is_a_failure(dns_server, resolver):
    dns_server.set("empty.test", [])

    with pytest.raises(DnsError, match="no A or AAAA records"):
        await resolver.resolve("empty.test")


async def test_a_cold_failure_is_remembered_briefly_instead_of_requeried(dns_server, resolver):
    with pytest.raises(DnsError):
        await resolver.resolve("backend.test")
    with pytest.raises(DnsError):
        await resolver.resolve("backend.test")
    assert dns_server.queries("backend.test", "A") == 1

    dns_server.set("backend.test", ["127.0.0.2"])

    async def resolves() -> bool:
        try:
            return await resolver.resolve("backend.test") == ("127.0.0.2",)
        except DnsError:
            return False

    deadline = time.monotonic() + 3
    while not await resolves():
        assert time.monotonic() < deadline, "negative answer not forgotten"
        await asyncio.sleep(0.01)


async def test_resolve_returns_the_last_good_answer_when_a_requery_fails(dns_server, resolver):
    dns_server.set("backend.test", ["127.0.0.2"])
    await resolver.resolve("backend.test")
    dns_server.set_failure("backend.test", "SERVFAIL")
    await eventually(lambda: resolver.lookup("backend.test") is None)  # expired

    assert await resolver.resolve("backend.test") == ("127.0.0.2",)
    assert dns_server.queries("backend.test", "A") == 2


# ------------------------------------------------------------------ background refresh


async def test_refresh_follows_a_changed_answer(dns_server, resolver, caplog):
    caplog.set_level(logging.INFO, logger="pyproxy.dns")
    dns_server.set("backend.test", ["127.0.0.2"])
    resolver.set_watched(watch({"backend.test": None}))
    await eventually(lambda: resolver.lookup("backend.test") == ("127.0.0.2",))

    dns_server.set("backend.test", ["127.0.0.3", "127.0.0.4"])

    await eventually(lambda: sorted(resolver.lookup("backend.test") or ()) == ["127.0.0.3", "127.0.0.4"], timeout=10 * REFRESH)
    assert resolver.stats["changes"] == 1
    assert any(r.levelno == logging.INFO and "changed" in r.getMessage() for r in caplog.records)


async def test_each_watched_name_refreshes_at_its_own_interval(dns_server, resolver):
    dns_server.set("fast.test", ["127.0.0.2"])
    dns_server.set("slow.test", ["127.0.0.3"])
    resolver.set_watched(watch({"fast.test": 0.05, "slow.test": 60}))

    await eventually(lambda: dns_server.queries("fast.test") >= 5)

    assert dns_server.queries("slow.test") == 1


async def test_respect_ttl_refreshes_at_the_answers_ttl(dns_server, resolver):
    """A 60 s interval, but a 1 s TTL: with ``respect_ttl`` the name follows its TTL."""
    dns_server.set("ttl.test", ["127.0.0.2"], ttl=1)
    dns_server.set("interval.test", ["127.0.0.3"], ttl=1)
    resolver.set_watched({("ttl.test", DEFAULT_FAMILY): Watch(60, respect_ttl=True),
                          ("interval.test", DEFAULT_FAMILY): Watch(60)})
    await eventually(lambda: resolver.lookup("ttl.test") == ("127.0.0.2",))

    dns_server.set("ttl.test", ["127.0.0.4"], ttl=1)

    await eventually(lambda: resolver.lookup("ttl.test") == ("127.0.0.4",), timeout=5)
    assert dns_server.queries("interval.test") == 1


async def test_a_ttl_of_zero_is_refreshed_once_a_second(dns_server, resolver):
    dns_server.set("zero.test", ["127.0.0.2"], ttl=0)
    resolver.set_watched({("zero.test", DEFAULT_FAMILY): Watch(60, respect_ttl=True)})
    await eventually(lambda: dns_server.queries("zero.test") == 1)
    first = time.monotonic()

    await eventually(lambda: dns_server.queries("zero.test") == 2, timeout=5)

    assert time.monotonic() - first >= 0.95


async def test_each_family_of_a_name_is_watched_apart(dns_server, resolver):
    dns_server.set("dual.test", ["127.0.0.2", "::2"])
    resolver.set_watched({("dual.test", "IPv4"): Watch(), ("dual.test", "IPv6"): Watch()})

    await eventually(lambda: resolver.lookup("dual.test", "IPv6") == ("::2",))
    await eventually(lambda: resolver.lookup("dual.test", "IPv4") == ("127.0.0.2",))
    assert dns_tasks() >= {"pyproxy.dns.refresh:dual.test/IPv4", "pyproxy.dns.refresh:dual.test/IPv6"}


async def test_a_failed_refresh_keeps_the_last_good_answer(dns_server, resolver, caplog):
    dns_server.set("backend.test", ["127.0.0.2"])
    resolver.set_watched(watch({"backend.test": None}))
    await eventually(lambda: resolver.lookup("backend.test") == ("127.0.0.2",))

    dns_server.set_failure("backend.test", "SERVFAIL")
    await eventually(lambda: resolver.stats["failures"] >= 2)

    assert resolver.lookup("backend.test") == ("127.0.0.2",)
    assert await resolver.resolve("backend.test") == ("127.0.0.2",)
    assert any(r.levelno == logging.WARNING and "keeping 127.0.0.2" in r.getMessage() for r in caplog.records)

    dns_server.set("backend.test", ["127.0.0.3"])
    await eventually(lambda: resolver.lookup("backend.test") == ("127.0.0.3",))


async def test_a_watched_name_that_never_resolved_is_retried(dns_server, resolver):
    dns_server.set_failure("backend.test", "SERVFAIL")
    resolver.set_watched(watch({"backend.test": None}))
    await eventually(lambda: dns_server.queries("backend.test") >= 1)

    dns_server.set("backend.test", ["127.0.0.2"])

    await eventually(lambda: resolver.lookup("backend.test") == ("127.0.0.2",))


async def test_unwatching_a_name_stops_its_refresh(dns_server, resolver):
    dns_server.set("kept.test", ["127.0.0.2"])
    dns_server.set("dropped.test", ["127.0.0.3"])
    resolver.set_watched(watch({"kept.test": 0.05, "dropped.test": 0.05}))
    await eventually(lambda: dns_server.queries("dropped.test") >= 2)

    resolver.set_watched(watch({"kept.test": 0.05}))

    await eventually(lambda: dns_tasks() == {"pyproxy.dns.refresh:kept.test"})
    assert resolver.watched == {("kept.test", DEFAULT_FAMILY)}
    dropped_count, kept_count = dns_server.queries("dropped.test"), dns_server.queries("kept.test")
    await eventually(lambda: dns_server.queries("kept.test") >= kept_count + 3)
    assert dns_server.queries("dropped.test") == dropped_count


async def test_ip_literals_are_not_watched(resolver):
    resolver.set_watched(watch({"127.0.0.5": None, "::1": None}))

    assert resolver.watched == frozenset()
    assert dns_tasks() == set()


async def test_close_cancels_every_task(dns_server, resolver):
    dns_server.set("a.test", ["127.0.0.2"])
    dns_server.set("b.test", ["127.0.0.3"])
    dns_server.set_delay("b.test", 5)
    resolver.set_watched(watch({"a.test": None, "b.test": None}))
    await eventually(lambda: dns_server.queries("b.test") == 1)
    assert dns_tasks() == {"pyproxy.dns.refresh:a.test", "pyproxy.dns.refresh:b.test", "pyproxy.dns.query:b.test"}

    await asyncio.wait_for(resolver.close(), 2)

    assert dns_tasks() == set()
    with pytest.raises(RuntimeError):
        resolver.set_watched(watch({"a.test": None}))


# ------------------------------------------------------------------ the helper itself, and both loops


def test_threaded_server_answers_a_resolver_on_another_loop():
    async def scenario(address: tuple[str, int]) -> tuple[str, ...]:
        resolver = Resolver([address], hosts_file=os.devnull)
        try:
            return await asyncio.wait_for(resolver.resolve("backend.test"), 5)
        finally:
            await resolver.close()

    with ThreadedDnsServer() as server:
        server.set("backend.test", ["127.0.0.2"])
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            assert runner.run(scenario(server.address)) == ("127.0.0.2",)
        assert server.queries("backend.test", "A") == 1
        assert server.resolver_arg == f"127.0.0.1:{server.port}"


def test_refresh_runs_on_the_default_asyncio_loop():
    """conftest runs async tests on uvloop, as production does; the plain loop works too."""
    async def scenario() -> None:
        async with DnsServer() as server:
            server.set("backend.test", ["127.0.0.2"])
            resolver = Resolver([server.address], REFRESH, hosts_file=os.devnull)
            try:
                resolver.set_watched(watch({"backend.test": None}))
                await eventually(lambda: resolver.lookup("backend.test") == ("127.0.0.2",))
                server.set("backend.test", ["127.0.0.3"])
                await eventually(lambda: resolver.lookup("backend.test") == ("127.0.0.3",))
            finally:
                await resolver.close()

    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        runner.run(scenario())

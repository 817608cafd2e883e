"""A DNS cache over dnspython's async resolver (Envoy STRICT_DNS semantics).

* ``lookup`` answers from the cache without awaiting: the request path calls it per request.
* ``resolve`` answers from the cache or asks now; concurrent misses for one name share one
  query, and a failed cold query is remembered briefly (negative cache) so a burst of
  requests for an unresolvable name does not become a burst of queries.
* ``set_watched`` names the hosts to keep fresh: one named task per name re-resolves every
  interval × (1 ± jitter); a failed refresh keeps the last good answer and retries sooner,
  with a backoff bounded by the interval.
* The hosts file is consulted before DNS (re-read when it changes); IP literals and
  ``localhost`` never reach DNS.
* Each name is resolved in a lookup family (``ir.DnsSettings.lookup_family``, Envoy's
  ``dns_lookup_family``): ``IPv4`` asks for A records only, ``IPv6`` for AAAA only,
  ``IPv4Preferred`` (the default, Envoy ``V4_PREFERRED``) for A and AAAA only when there is
  no A, ``IPv6Preferred`` the other way round, ``IPv4AndIPv6`` for both (A first). A name
  asked for in two families is two cache entries. Every address is kept, in answer order.
* A watched name whose ``Watch.respect_ttl`` is set is refreshed when its answer's TTL
  (the smallest of its records, at least 1 s) runs out instead of every interval.

Answers for names that are not watched expire after ``default_refresh`` seconds, since no
task keeps them fresh; the expired answer is still the "last good" one if a new query fails.

With the system configuration (/etc/resolv.conf) relative names go through its search list
like getaddrinfo; with explicit nameservers (``--resolver``) names are queried as given.
"""
from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pyproxy.errors import NoHealthyUpstream

if TYPE_CHECKING:
    import dns.asyncresolver

log = logging.getLogger("pyproxy.dns")

_BACKOFF_START = 1.0  # seconds before the first retry after a failed refresh
_MIN_TTL = 1.0  # with respect_ttl, a name is refreshed at most once a second

Family = Literal["IPv4", "IPv6", "IPv4Preferred", "IPv6Preferred", "IPv4AndIPv6"]
DEFAULT_FAMILY: Family = "IPv4Preferred"
Key = tuple[str, Family]  # a cache entry: (lower-case name, lookup family)


@dataclass(frozen=True, slots=True)
class Watch:
    """How a watched name is kept fresh: every ``refresh`` seconds (None: the resolver's
    ``default_refresh``), or, with ``respect_ttl``, when its answer's TTL runs out."""

    refresh: float | None = None
    respect_ttl: bool = False


def select(family: Family, v4: tuple[str, ...], v6: tuple[str, ...]) -> tuple[str, ...]:
    """The addresses a lookup family takes from a name's IPv4 and IPv6 addresses."""
    if family == "IPv4Preferred":
        return v4 or v6
    if family == "IPv4":
        return v4
    if family == "IPv6":
        return v6
    if family == "IPv6Preferred":
        return v6 or v4
    return v4 + v6


def _label(key: Key) -> str:
    name, family = key
    return name if family == DEFAULT_FAMILY else f"{name}/{family}"


class DnsError(NoHealthyUpstream):
    """A name could not be resolved and there is no previous answer (answered 503)."""


class HostsFile:
    """The hosts file as a name → (IPv4, IPv6) addresses map, re-parsed when its stat
    signature changes. A lookup takes what its family wants of them, like a DNS answer; a
    name without an address of that family is not found. A missing or unreadable file is an
    empty map."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._signature: tuple[int, int, int] | None = None
        self._names: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}

    def lookup(self, name: str, family: Family = DEFAULT_FAMILY) -> tuple[str, ...] | None:
        self._reload_if_changed()
        found = self._names.get(name.rstrip(".").lower())
        return (select(family, *found) or None) if found is not None else None

    def _reload_if_changed(self) -> None:
        try:
            st = os.stat(self.path)
            signature = (st.st_mtime_ns, st.st_size, st.st_ino)
            if signature == self._signature:
                return
            with open(self.path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            self._signature, self._names = None, {}
            return
        self._signature, self._names = signature, parse_hosts(text)


def parse_hosts(text: str) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """``addr name [alias...]  # comment`` lines → lower-case name → (IPv4, IPv6) addresses."""
    v4: dict[str, list[str]] = {}
    v6: dict[str, list[str]] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        try:
            family = v4 if ipaddress.ip_address(fields[0]).version == 4 else v6
        except ValueError:
            continue
        for name in fields[1:]:
            addresses = family.setdefault(name.rstrip(".").lower(), [])
            if fields[0] not in addresses:
                addresses.append(fields[0])
    return {name: (tuple(v4.get(name, ())), tuple(v6.get(name, ()))) for name in v4.keys() | v6.keys()}


def _ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class Resolver:
    """The data plane's DNS cache. ``set_watched`` and ``resolve`` must run inside the loop.

    ``stats`` counts ``refreshes`` (resolutions of a name: a background refresh or a cold
    lookup, from the hosts file or DNS), the ``failures`` among them, DNS ``queries`` sent
    (one per resolution that reaches DNS, A and/or AAAA as its family asks) and answer
    ``changes``, for metrics."""

    def __init__(
        self,
        nameservers: Sequence[tuple[str, int]] | None = None,
        default_refresh: float = 30.0,
        *,
        hosts_file: str = "/etc/hosts",
        jitter: float = 0.1,
        timeout: float = 5.0,
    ) -> None:
        self.default_refresh = default_refresh
        self.jitter = jitter
        self.timeout = timeout
        self.stats = {"refreshes": 0, "failures": 0, "queries": 0, "changes": 0}
        self._nameservers = tuple(nameservers) if nameservers is not None else None
        self._dns: dns.asyncresolver.Resolver | None = None
        self._hosts = HostsFile(hosts_file)
        self._answers: dict[Key, tuple[str, ...]] = {}
        self._ttls: dict[Key, float] = {}  # the TTL of the last DNS answer (none for static ones)
        self._expiry: dict[Key, float] = {}  # only for names nobody watches
        self._negative: dict[Key, tuple[str, float]] = {}  # key → (error, until)
        self._watches: dict[Key, Watch] = {}
        self._refreshers: dict[Key, asyncio.Task[None]] = {}
        self._inflight: dict[Key, asyncio.Task[tuple[str, ...]]] = {}
        self._closed = False

    # ------------------------------------------------------------------ answering

    def lookup(self, name: str, family: Family = DEFAULT_FAMILY) -> tuple[str, ...] | None:
        """The cached answer, or None when cold. Never awaits, never queries DNS."""
        key = (name.lower(), family)
        addresses = self._answers.get(key)
        if addresses is None:
            return self._static(key)
        expiry = self._expiry.get(key)
        if expiry is not None and expiry <= time.monotonic():
            return None
        return addresses

    async def resolve(self, name: str, family: Family = DEFAULT_FAMILY) -> tuple[str, ...]:
        """The cached answer, or a fresh one; the last good answer if the query fails.

        Raises DnsError when there is neither an answer nor a previous one."""
        key: Key = (name.lower(), family)
        cached = self.lookup(*key)
        if cached is not None:
            return cached
        negative = self._negative.get(key)
        if negative is not None and negative[1] > time.monotonic():
            raise DnsError(negative[0])
        try:
            return await self._update_shared(key)
        except DnsError:
            previous = self._answers.get(key)
            if previous is None:
                raise
            return previous

    def _static(self, key: Key) -> tuple[str, ...] | None:
        """Answers that never come from DNS: IP literals, the hosts file, ``localhost``."""
        name, family = key
        if _ip_literal(name):
            return (name,)
        found = self._hosts.lookup(name, family)
        if found is None and name.rstrip(".") == "localhost":
            return select(family, ("127.0.0.1",), ("::1",))
        return found

    # ------------------------------------------------------------------ watching

    def set_watched(self, watches: Mapping[Key, Watch]) -> None:
        """Keep exactly these (name, family) entries fresh, each as its ``Watch`` says."""
        if self._closed:
            raise RuntimeError("resolver is closed")
        loop = asyncio.get_running_loop()
        wanted = {(name.lower(), family): watch for (name, family), watch in watches.items() if not _ip_literal(name)}
        for key in self._refreshers.keys() - wanted.keys():
            self._refreshers.pop(key).cancel()
            if key in self._answers:
                self._expiry[key] = time.monotonic() + self.default_refresh
        self._watches = wanted
        for key in wanted:
            self._expiry.pop(key, None)
            if key not in self._refreshers:
                self._refreshers[key] = loop.create_task(
                    self._refresh_loop(key), name=f"pyproxy.dns.refresh:{_label(key)}"
                )

    @property
    def watched(self) -> frozenset[Key]:
        return frozenset(self._refreshers)

    async def _refresh_loop(self, key: Key) -> None:
        failures = 0
        while True:
            try:
                await self._update_shared(key)
                failures = 0
            except DnsError:
                failures += 1
            await asyncio.sleep(self._next_delay(key, failures))

    def _next_delay(self, key: Key, failures: int) -> float:
        """The interval (or the TTL) after a success; after failures 1 s, 2 s, 4 s … capped
        at it. The interval is jittered both ways, a TTL only downwards."""
        watch = self._watches.get(key)
        interval = self.default_refresh if watch is None or watch.refresh is None else watch.refresh
        ttl = self._ttls.get(key) if watch is not None and watch.respect_ttl else None
        if ttl is not None:
            interval = max(_MIN_TTL, ttl)
        if failures:
            interval = min(interval, _BACKOFF_START * 2 ** min(failures - 1, 30))
        if ttl is not None and not failures:
            return max(_MIN_TTL, interval * random.uniform(1 - self.jitter, 1))
        return interval * random.uniform(1 - self.jitter, 1 + self.jitter)

    async def close(self) -> None:
        """Cancel every refresh and query task and wait for them to finish."""
        self._closed = True
        tasks = [*self._refreshers.values(), *self._inflight.values()]
        self._refreshers.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ querying

    async def _update_shared(self, key: Key) -> tuple[str, ...]:
        """One query per entry at a time: later callers await the query already running."""
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._update(key), name=f"pyproxy.dns.query:{_label(key)}")
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._query_done, key))
        return await asyncio.shield(task)

    def _query_done(self, key: Key, task: asyncio.Task[tuple[str, ...]]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have been cancelled

    async def _update(self, key: Key) -> tuple[str, ...]:
        """Ask (hosts file, then DNS), store the answer and return it; on failure log and raise."""
        self.stats["refreshes"] += 1
        ttl = None
        try:
            addresses = self._static(key)
            if not addresses:
                addresses, ttl = await self._query(*key)
        except DnsError as exc:
            self.stats["failures"] += 1
            previous = self._answers.get(key)
            if previous is None:
                self._negative[key] = (str(exc), time.monotonic() + min(_BACKOFF_START, self.default_refresh))
                log.warning("dns: %s", exc)
            else:
                log.warning("dns: %s; keeping %s", exc, ", ".join(previous))
            raise
        self._store(key, addresses, ttl)
        return addresses

    def _store(self, key: Key, addresses: tuple[str, ...], ttl: float | None) -> None:
        previous = self._answers.get(key)
        label = _label(key)
        if previous is None:
            log.debug("dns: %s is %s", label, ", ".join(addresses))
        elif previous != addresses:
            self.stats["changes"] += 1
            log.info("dns: %s changed from %s to %s", label, ", ".join(previous), ", ".join(addresses))
        self._answers[key] = addresses
        if ttl is None:
            self._ttls.pop(key, None)
        else:
            self._ttls[key] = ttl
        self._negative.pop(key, None)
        if key in self._watches:
            self._expiry.pop(key, None)
        else:
            self._expiry[key] = time.monotonic() + self.default_refresh

    async def _query(self, name: str, family: Family) -> tuple[tuple[str, ...], float | None]:
        """The addresses of ``name`` in ``family`` and the smallest TTL among their records."""
        self.stats["queries"] += 1
        found: list[tuple[tuple[str, ...], float | None]] = []
        if family == "IPv4AndIPv6":
            found = [await self._ask(name, "A"), await self._ask(name, "AAAA")]
        else:
            first, second = ("AAAA", "A") if family in ("IPv6", "IPv6Preferred") else ("A", "AAAA")
            found = [await self._ask(name, first)]
            if not found[0][0] and family.endswith("Preferred"):
                found = [await self._ask(name, second)]
        addresses = tuple(address for answer, _ in found for address in answer)
        if not addresses:
            wanted = {"IPv4": "A", "IPv6": "AAAA"}.get(family, "A or AAAA")
            raise DnsError(f"{name}: no {wanted} records")
        ttls = [ttl for answer, ttl in found if answer and ttl is not None]
        return addresses, min(ttls) if ttls else None

    async def _ask(self, name: str, rdtype: str) -> tuple[tuple[str, ...], float | None]:
        """The addresses of one record type and their TTL; ((), None) when the name exists
        without such records."""
        import dns.exception  # dnspython on first use: about 4 MiB a config without FQDNs never needs
        import dns.resolver

        try:
            answer = await self._dns_resolver().resolve(
                name, rdtype, raise_on_no_answer=False, search=self._nameservers is None
            )
        except dns.resolver.NXDOMAIN as exc:
            raise DnsError(f"{name}: no such domain") from exc
        except dns.resolver.LifetimeTimeout as exc:
            raise DnsError(f"{name}: timed out after {self.timeout:g}s") from exc
        except (dns.exception.DNSException, OSError) as exc:
            raise DnsError(f"{name}: {exc}") from exc
        if answer.rrset is None:
            return (), None
        return tuple(rdata.address for rdata in answer), float(answer.rrset.ttl)

    def _dns_resolver(self) -> dns.asyncresolver.Resolver:
        """Built on first use, so a host without /etc/resolv.conf can still serve IP backends."""
        if self._dns is None:
            import dns.asyncresolver
            import dns.nameserver
            import dns.resolver

            try:
                resolver = dns.asyncresolver.Resolver(configure=self._nameservers is None)
            except dns.resolver.NoResolverConfiguration as exc:
                raise DnsError(f"no DNS configuration: {exc}") from exc
            if self._nameservers is not None:
                resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in self._nameservers]
            resolver.lifetime = self.timeout
            resolver.timeout = min(resolver.timeout, self.timeout)
            self._dns = resolver
        return self._dns

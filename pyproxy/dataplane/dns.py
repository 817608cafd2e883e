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
* IPv4 is preferred: A records, and AAAA only when there are no A records (Envoy
  ``V4_PREFERRED``). Every address is kept, in answer order.

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

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver

from pyproxy.errors import NoHealthyUpstream

log = logging.getLogger("pyproxy.dns")

_BACKOFF_START = 1.0  # seconds before the first retry after a failed refresh
_LOCALHOST = ("127.0.0.1",)


class DnsError(NoHealthyUpstream):
    """A name could not be resolved and there is no previous answer (answered 503)."""


class HostsFile:
    """The hosts file as a name → addresses map, re-parsed when its stat signature changes.

    IPv4 addresses are preferred like DNS answers: a name's IPv6 entries are used only when it
    has no IPv4 entry. A missing or unreadable file is an empty map."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._signature: tuple[int, int, int] | None = None
        self._names: dict[str, tuple[str, ...]] = {}

    def lookup(self, name: str) -> tuple[str, ...] | None:
        self._reload_if_changed()
        return self._names.get(name.rstrip(".").lower())

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


def parse_hosts(text: str) -> dict[str, tuple[str, ...]]:
    """``addr name [alias...]  # comment`` lines → lower-case name → addresses (v4 first)."""
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
    return {name: tuple(v4.get(name) or v6[name]) for name in v4.keys() | v6.keys()}


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
    (one per resolution that reaches DNS, A then maybe AAAA) and answer ``changes``, for
    metrics."""

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
        self._answers: dict[str, tuple[str, ...]] = {}
        self._expiry: dict[str, float] = {}  # only for names nobody watches
        self._negative: dict[str, tuple[str, float]] = {}  # name → (error, until)
        self._intervals: dict[str, float] = {}
        self._refreshers: dict[str, asyncio.Task[None]] = {}
        self._inflight: dict[str, asyncio.Task[tuple[str, ...]]] = {}
        self._closed = False

    # ------------------------------------------------------------------ answering

    def lookup(self, name: str) -> tuple[str, ...] | None:
        """The cached answer, or None when cold. Never awaits, never queries DNS."""
        key = name.lower()
        addresses = self._answers.get(key)
        if addresses is None:
            return self._static(key)
        expiry = self._expiry.get(key)
        if expiry is not None and expiry <= time.monotonic():
            return None
        return addresses

    async def resolve(self, name: str) -> tuple[str, ...]:
        """The cached answer, or a fresh one; the last good answer if the query fails.

        Raises DnsError when there is neither an answer nor a previous one."""
        key = name.lower()
        cached = self.lookup(key)
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

    def _static(self, name: str) -> tuple[str, ...] | None:
        """Answers that never come from DNS: IP literals, the hosts file, ``localhost``."""
        if _ip_literal(name):
            return (name,)
        found = self._hosts.lookup(name)
        if found is None and name.rstrip(".") == "localhost":
            return _LOCALHOST
        return found

    # ------------------------------------------------------------------ watching

    def set_watched(self, names: Mapping[str, float | None]) -> None:
        """Keep exactly these names fresh, each at its interval (None: ``default_refresh``)."""
        if self._closed:
            raise RuntimeError("resolver is closed")
        loop = asyncio.get_running_loop()
        wanted = {
            name.lower(): self.default_refresh if interval is None else interval
            for name, interval in names.items()
            if not _ip_literal(name)
        }
        for name in self._refreshers.keys() - wanted.keys():
            self._refreshers.pop(name).cancel()
            if name in self._answers:
                self._expiry[name] = time.monotonic() + self.default_refresh
        self._intervals = wanted
        for name in wanted:
            self._expiry.pop(name, None)
            if name not in self._refreshers:
                self._refreshers[name] = loop.create_task(
                    self._refresh_loop(name), name=f"pyproxy.dns.refresh:{name}"
                )

    @property
    def watched(self) -> frozenset[str]:
        return frozenset(self._refreshers)

    async def _refresh_loop(self, name: str) -> None:
        failures = 0
        while True:
            try:
                await self._update_shared(name)
                failures = 0
            except DnsError:
                failures += 1
            await asyncio.sleep(self._next_delay(name, failures))

    def _next_delay(self, name: str, failures: int) -> float:
        """The interval after a success; after failures 1 s, 2 s, 4 s … capped at the interval."""
        interval = self._intervals.get(name, self.default_refresh)
        if failures:
            interval = min(interval, _BACKOFF_START * 2 ** min(failures - 1, 30))
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

    async def _update_shared(self, name: str) -> tuple[str, ...]:
        """One query per name at a time: later callers await the query already running."""
        task = self._inflight.get(name)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._update(name), name=f"pyproxy.dns.query:{name}")
            self._inflight[name] = task
            task.add_done_callback(functools.partial(self._query_done, name))
        return await asyncio.shield(task)

    def _query_done(self, name: str, task: asyncio.Task[tuple[str, ...]]) -> None:
        if self._inflight.get(name) is task:
            del self._inflight[name]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have been cancelled

    async def _update(self, name: str) -> tuple[str, ...]:
        """Ask (hosts file, then DNS), store the answer and return it; on failure log and raise."""
        self.stats["refreshes"] += 1
        try:
            addresses = self._static(name) or await self._query(name)
        except DnsError as exc:
            self.stats["failures"] += 1
            previous = self._answers.get(name)
            if previous is None:
                self._negative[name] = (str(exc), time.monotonic() + min(_BACKOFF_START, self.default_refresh))
                log.warning("dns: %s", exc)
            else:
                log.warning("dns: %s; keeping %s", exc, ", ".join(previous))
            raise
        self._store(name, addresses)
        return addresses

    def _store(self, name: str, addresses: tuple[str, ...]) -> None:
        previous = self._answers.get(name)
        if previous is None:
            log.debug("dns: %s is %s", name, ", ".join(addresses))
        elif previous != addresses:
            self.stats["changes"] += 1
            log.info("dns: %s changed from %s to %s", name, ", ".join(previous), ", ".join(addresses))
        self._answers[name] = addresses
        self._negative.pop(name, None)
        if name in self._intervals:
            self._expiry.pop(name, None)
        else:
            self._expiry[name] = time.monotonic() + self.default_refresh

    async def _query(self, name: str) -> tuple[str, ...]:
        self.stats["queries"] += 1
        addresses = await self._ask(name, "A") or await self._ask(name, "AAAA")
        if not addresses:
            raise DnsError(f"{name}: no A or AAAA records")
        return addresses

    async def _ask(self, name: str, rdtype: str) -> tuple[str, ...]:
        """The addresses of one record type; () when the name exists without such records."""
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
        return tuple(rdata.address for rdata in answer)

    def _dns_resolver(self) -> dns.asyncresolver.Resolver:
        """Built on first use, so a host without /etc/resolv.conf can still serve IP backends."""
        if self._dns is None:
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

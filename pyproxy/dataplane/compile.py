"""IR → runtime objects: the only place IR values become compiled regexes, host indexes,
SSLContexts and the set of DNS names to watch. A ``Snapshot`` is immutable once built; a
reload builds a new one and swaps it in with one assignment.

Translation validates everything compiling can reject (certificates and CAs with the same
``pyproxy.pem`` loader), so compiling should never fail. If it does for one destination or
one listener socket, that is a bug: it is logged with the object's name and that part is
dropped (a dropped destination answers its backendRef's invalid status, 500; a dropped socket
is not bound) while everything else is served.
"""
from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import math
import random
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from .. import ir
from ..stats import ClusterStats, Stats, Target
from . import client, tls
from .balance import Balancer
from .client import ClientPolicy
from .cors import CompiledCors
from .dns import DnsError, Family, Resolver, Watch
from .filters import HeaderOps, compile_mutation
from .limits import DEFAULT as DEFAULT_LIMITS
from .limits import Limits
from .outlier import Outlier
from .retry import RetryPolicy
from .router import HostIndex, Matcher

FORWARD, REDIRECT, DIRECT = 0, 1, 2
log = logging.getLogger("pyproxy.compile")
Lookup = Callable[[str, Family], tuple[str, ...] | None]  # ``Resolver.lookup``


class CompiledDestination:
    """Endpoints and upstream TLS of one ``ir.Destination``. ``addresses`` flattens every
    endpoint to (host, port, is_unix); FQDN endpoints are looked up in the DNS cache (in the
    destination's ``lookup_family``) at pick time, so a refreshed answer is used by the next
    request (the tuple is rebuilt only when an answer changed, which is what tells the
    ``balancer`` to rebuild its view). ``stats`` are the runtime's counters and health of this
    destination's name (they outlive the snapshot, and so do the gauges its circuit
    ``breaker`` is checked against); ``outlier`` its outlier detector; ``probe_ssl_context``
    what active health checks speak TLS with (HTTP/1.1 only, even for an HTTP/2 destination).
    ``idle_timeout``: None means the pool's own."""

    __slots__ = ("name", "endpoints", "tls", "ssl_context", "connect_timeout", "_static", "fqdns", "stats",
                 "http2", "breaker", "idle_timeout", "family", "balancer", "outlier", "active_check",
                 "outlier_check", "probe_ssl_context", "_answers", "_resolved")

    def __init__(self, dest: ir.Destination, ssl_context: ssl.SSLContext | None, stats: ClusterStats,
                 probe_ssl_context: ssl.SSLContext | None = None) -> None:
        self.name = dest.name
        self.stats = stats
        self.endpoints = dest.endpoints
        self.tls = dest.tls
        self.ssl_context = ssl_context
        self.probe_ssl_context = probe_ssl_context or ssl_context
        self.connect_timeout = dest.connect_timeout
        self.http2 = dest.http2
        self.breaker = dest.circuit_breaker
        self.idle_timeout = dest.idle_timeout
        self.family = dest.dns.lookup_family
        self.fqdns = tuple(e for e in dest.endpoints if e.kind == "fqdn")
        self._static = tuple((e.host, e.port, e.kind == "unix") for e in dest.endpoints if e.kind != "fqdn")
        self._answers: list[tuple[str, ...] | None] = [None] * len(self.fqdns)
        self._resolved: tuple[tuple[str, int, bool], ...] = self._static
        self.balancer = Balancer(dest, stats)
        self.active_check = dest.active_health_check
        self.outlier_check = dest.passive_health_check
        self.outlier = Outlier(dest.name, dest.passive_health_check, stats) if dest.passive_health_check else None

    def addresses(self, lookup: Lookup) -> tuple[tuple[str, int, bool], ...]:
        """Every usable (host, port, is_unix) now; FQDNs not yet resolved contribute nothing."""
        if not self.fqdns:
            return self._static
        answers = self._answers
        family = self.family
        changed = False
        for i, ep in enumerate(self.fqdns):
            answer = lookup(ep.host, family)
            if answer is not answers[i]:
                answers[i] = answer
                changed = True
        if changed:
            resolved = list(self._static)
            for ep, answer in zip(self.fqdns, answers, strict=True):
                resolved.extend((addr, ep.port, False) for addr in answer or ())
            self._resolved = tuple(resolved)
        return self._resolved

    def hosts(self, lookup: Lookup) -> list[tuple[Target, str | None]]:
        """``addresses`` with the DNS name each came from (None for IP and unix endpoints)."""
        out: list[tuple[Target, str | None]] = [(target, None) for target in self._static]
        for ep in self.fqdns:
            out.extend(((addr, ep.port, False), ep.host) for addr in lookup(ep.host, self.family) or ())
        return out

    async def resolve(self, resolver: Resolver) -> tuple[tuple[str, int, bool], ...]:
        """``addresses`` after waiting for the FQDNs' answers: for the first requests, before
        the DNS cache has any (a failed lookup contributes nothing)."""
        for ep in self.fqdns:
            try:
                await resolver.resolve(ep.host, self.family)
            except DnsError:
                pass
        return self.addresses(resolver.lookup)

    def pick(self, addresses: tuple[tuple[str, int, bool], ...]) -> Target | None:
        """An endpoint for a request without a hash key (a mirrored copy); None when every
        one is unhealthy."""
        picked = self.balancer.pick(addresses)
        return picked[0] if picked is not None else None


class CompiledBackend:
    """A backendRef of a route. ``response_filters`` are the route's and then the backend's
    response header modifiers, in the order they apply."""

    __slots__ = ("destination", "invalid_status", "request_headers", "response_headers", "response_filters")

    def __init__(self, wb: ir.WeightedBackend, destination: CompiledDestination | None,
                 route_response_headers: HeaderOps | None) -> None:
        self.destination = destination
        self.invalid_status = wb.invalid_status
        self.request_headers = compile_mutation(wb.request_headers)
        self.response_headers = compile_mutation(wb.response_headers)
        self.response_filters = tuple(f for f in (route_response_headers, self.response_headers) if f is not None)


class CompiledRoute:
    """``try_timeout`` bounds one upstream attempt: the retry policy's ``per_try_timeout``,
    else ``timeouts.backend_request``."""

    __slots__ = ("name", "matcher", "kind", "backends", "_cumulative", "_total", "redirect", "direct",
                 "request_headers", "response_headers", "url_rewrite", "rewrite_host", "timeouts", "retry",
                 "try_timeout", "cors", "mirrors")

    def __init__(self, route: ir.Route, destinations: dict[str, CompiledDestination]) -> None:
        self.name = route.name
        self.matcher = Matcher(route.match)
        self.request_headers: HeaderOps | None = compile_mutation(route.request_headers)
        self.response_headers: HeaderOps | None = compile_mutation(route.response_headers)
        self.url_rewrite = route.url_rewrite
        hostname = route.url_rewrite.hostname if route.url_rewrite is not None else None
        self.rewrite_host = hostname.encode("latin-1") if hostname is not None else b""
        self.timeouts = route.timeouts
        self.retry = RetryPolicy(route.retry) if route.retry is not None else None
        per_try = self.retry.per_try_timeout if self.retry is not None else None
        self.try_timeout = per_try if per_try is not None else route.timeouts.backend_request
        self.cors = CompiledCors(route.cors) if route.cors is not None else None
        self.mirrors = tuple(
            (destinations[m.destination.name], m.percent)
            for m in route.mirrors
            if m.percent > 0 and m.destination.name in destinations
        )
        self.redirect: ir.Redirect | None = None
        self.direct: ir.DirectResponse | None = None
        self.backends: tuple[CompiledBackend, ...] = ()
        self._cumulative: list[int] = []
        self._total = 0
        action = route.action
        if isinstance(action, ir.Redirect):
            self.kind, self.redirect = REDIRECT, action
        elif isinstance(action, ir.DirectResponse):
            self.kind, self.direct = DIRECT, action
        else:
            self.kind = FORWARD
            weighted = [wb for wb in action.backends if wb.weight > 0]
            self.backends = tuple(
                CompiledBackend(wb, destinations.get(wb.destination.name) if wb.destination else None,
                                self.response_headers)
                for wb in weighted
            )
            self._cumulative = list(itertools.accumulate(wb.weight for wb in weighted))
            self._total = self._cumulative[-1] if weighted else 0
            if not weighted:
                self.kind, self.direct = DIRECT, ir.DirectResponse(500)

    def pick(self) -> CompiledBackend:
        """A backend chosen by weight (weight 0 backends were dropped at compile time)."""
        if len(self.backends) == 1:
            return self.backends[0]
        return self.backends[bisect.bisect_right(self._cumulative, random.random() * self._total)]


class CompiledVhost:
    __slots__ = ("name", "routes")

    def __init__(self, vhost: ir.VirtualHost, destinations: dict[str, CompiledDestination]) -> None:
        self.name = vhost.name
        self.routes = tuple(CompiledRoute(r, destinations) for r in vhost.routes)

    def match(self, method: str, path: str, query: str, headers: list[tuple[bytes, bytes]]) -> CompiledRoute | None:
        for route in self.routes:
            if route.matcher(method, path, query, headers):
                return route
        return None


class CompiledListener:
    __slots__ = ("name", "hostname", "vhosts", "policy")

    def __init__(self, listener: ir.Listener, destinations: dict[str, CompiledDestination],
                 policy: ClientPolicy = client.DEFAULT) -> None:
        self.name = listener.name
        self.hostname = listener.hostname
        self.policy = policy  # its ClientSettings, resolved
        self.vhosts: HostIndex[CompiledVhost] = HostIndex(
            (v.hostname, CompiledVhost(v, destinations)) for v in listener.virtual_hosts
        )


@dataclass(frozen=True, slots=True)
class PortGroup:
    """Listeners served by one socket; a request picks its listener by Host. ``first`` is
    the first listener on the port; ``tls_options`` the TLS options of the first HTTPS one (the
    handshake's versions, ciphers and ALPN are the socket's, whatever the server name)."""

    address: str
    port: int
    protocol: str
    listeners: HostIndex[CompiledListener]
    ssl_context: ssl.SSLContext | None
    first: CompiledListener
    tls_options: tls.ServerOptions | None = None

    def listener_for(self, sni: str | None) -> CompiledListener:
        """The listener whose client settings a connection takes, once, when accepted: the one
        its TLS server name selects, or without a name the one without a hostname (Envoy's
        filter chain match); else the first (Envoy Gateway's one connection manager for the
        HTTP listeners of a port)."""
        if self.tls_options is not None:
            listener = self.listeners.find(sni) if sni is not None else self.listeners.catch_all
            if listener is not None:
                return listener
        return self.first

    @property
    def h2_over_tls(self) -> bool:
        """Whether HTTP/2 is spoken over TLS here (its ALPN offers ``h2``)."""
        return self.tls_options is None or "h2" in self.tls_options.alpn


@dataclass(frozen=True, slots=True)
class Snapshot:
    config: ir.Config
    groups: dict[tuple[str, int], PortGroup]
    dns_names: dict[tuple[str, Family], Watch]  # (FQDN, lookup family) -> how it is kept fresh
    destinations: dict[str, CompiledDestination]
    shortest_timeout: float = math.inf  # the shortest client deadline a listener sets


def _destinations(config: ir.Config) -> dict[str, ir.Destination]:
    found: dict[str, ir.Destination] = {}
    for listener in config.listeners:
        for vhost in listener.virtual_hosts:
            for route in vhost.routes:
                for mirror in route.mirrors:
                    found.setdefault(mirror.destination.name, mirror.destination)
                if isinstance(route.action, ir.Forward):
                    for wb in route.action.backends:
                        if wb.destination is not None:
                            found.setdefault(wb.destination.name, wb.destination)
    return found


async def compile_config(config: ir.Config, stats: Stats, limits: Limits = DEFAULT_LIMITS) -> Snapshot:
    """Build a snapshot whose destinations count into ``stats`` (by name) and whose listeners'
    client settings apply over ``limits``. SSLContexts load CA files and keys, so they are
    built in a thread. A destination or socket that fails to compile is logged as a bug and
    left out."""
    loop = asyncio.get_running_loop()
    destinations: dict[str, CompiledDestination] = {}
    dns_names: dict[tuple[str, Family], Watch] = {}
    for name, dest in _destinations(config).items():
        try:
            ctx = await loop.run_in_executor(None, tls.client_context, dest.tls, dest.http2) if dest.tls else None
            probe_ctx = None
            if dest.tls and dest.http2 and dest.active_health_check is not None:
                probe_ctx = await loop.run_in_executor(None, tls.client_context, dest.tls, False)
            destinations[name] = CompiledDestination(dest, ctx, stats.cluster(name), probe_ctx)
        except Exception:
            log.exception("bug: destination %s failed to compile; its backendRefs answer 500", name)
            continue
        if dest.tls is not None and dest.tls.insecure_skip_verify:
            log.warning("destination %s: insecureSkipVerify is set: the certificates of its upstreams are NOT "
                        "verified (any server, or anyone in the path, is trusted)", name)
        for ep in dest.endpoints:
            if ep.kind == "fqdn":
                entry = (ep.host.lower(), dest.dns.lookup_family)
                dns_names[entry] = _watch(dns_names.get(entry), dest.dns)
    by_port: dict[tuple[str, int], list[ir.Listener]] = {}
    for listener in config.listeners:
        by_port.setdefault((listener.address, listener.port), []).append(listener)
    groups: dict[tuple[str, int], PortGroup] = {}
    policies: dict[ir.ClientSettings, ClientPolicy] = {}
    for key, listeners in by_port.items():
        try:
            groups[key] = await _compile_group(key, listeners, destinations, policies, limits)
        except Exception:
            names = ", ".join(lst.name for lst in listeners)
            log.exception("bug: listener %s failed to compile; %s:%d is not served", names, key[0], key[1])
    shortest = min((p.shortest_timeout for p in policies.values()), default=math.inf)
    return Snapshot(config=config, groups=groups, dns_names=dns_names, destinations=destinations,
                    shortest_timeout=shortest)


def _watch(current: Watch | None, dns: ir.DnsSettings) -> Watch:
    """How a name is kept fresh: a name shared by destinations refreshes at the shortest
    interval any of them sets, and follows its TTL when any of them says so."""
    if current is None:
        return Watch(dns.refresh, dns.respect_ttl)
    intervals = [r for r in (current.refresh, dns.refresh) if r is not None]
    return Watch(min(intervals) if intervals else None, current.respect_ttl or dns.respect_ttl)


async def _compile_group(
    key: tuple[str, int], listeners: list[ir.Listener], destinations: dict[str, CompiledDestination],
    policies: dict[ir.ClientSettings, ClientPolicy], limits: Limits,
) -> PortGroup:
    certs = tuple(c for lst in listeners if lst.tls for c in lst.tls.certificates)
    first_tls = next((lst.tls for lst in listeners if lst.tls), None)
    options = tls.ServerOptions.of(first_tls) if first_tls is not None else None
    loop = asyncio.get_running_loop()
    ctx = await loop.run_in_executor(None, tls.server_context, certs, options) if certs and options else None
    compiled = []
    for lst in listeners:
        policy = policies.get(lst.client)
        if policy is None:
            policy = policies[lst.client] = client.resolve(lst.client, limits)
        compiled.append(CompiledListener(lst, destinations, policy))
    return PortGroup(
        address=key[0],
        port=key[1],
        protocol=listeners[0].protocol,
        listeners=HostIndex((lst.hostname, c) for lst, c in zip(listeners, compiled, strict=True)),
        ssl_context=ctx,
        first=compiled[0],
        tls_options=options if ctx is not None else None,
    )

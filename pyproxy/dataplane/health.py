"""Active health checking, and the owner of all health checking's background work.

``HealthChecks`` belongs to the runtime. ``swap`` puts a new snapshot's checks in place of
the previous one's: per destination with an active health check one named task
(``pyproxy.health:<destination>``) probing every address of the destination (each address an
FQDN resolves to) every ``interval``, and per destination with outlier detection its interval
timer. Health lives in the runtime's ``ClusterStats`` (by destination name), so a reload
that keeps a destination keeps its endpoints' health; a reload that turns a check off clears
the flags it set, one that turns active checking on starts every endpoint unhealthy until its
first probe.

A probe (Envoy's, HTTP/1.1 with ``Connection: close``; over TLS with the destination's
context, SNI and peer name check):
- HTTP: ``METHOD path`` with Host the configured hostname, else the endpoint's DNS name
  (FQDN endpoints), else its address, and ``User-Agent: Envoy/HC``; it passes when the
  status is one of ``expected_statuses``.
- TCP: connect, write ``send``, and read until ``receive`` is contained in what came back.
A probe fails "actively" when the upstream answered a status it should not, and with a
network failure when connecting, TLS, reading or the ``timeout`` failed. As in Envoy, an
active failure takes a passing endpoint out at once and network failures after
``unhealthy_threshold`` in a row; ``healthy_threshold`` passes in a row bring it back, and
so does the very first probe of an endpoint that passes. An endpoint coming back starts its
slow start; one ejected by outlier detection is brought back by a passing probe.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import time

from .. import ir
from ..stats import FAILED_ACTIVE_HC, FAILED_OUTLIER_CHECK, ClusterStats, HostStats, Target
from . import tls
from .compile import CompiledDestination, Snapshot
from .dns import Resolver
from .outlier import Outlier

log = logging.getLogger("pyproxy.health")

PASSED, FAILED, NETWORK = 0, 1, 2  # a probe's outcome: passed, failed actively, network failure
_MAX_HEAD = 8192  # bytes read at a time for a TCP ``receive``


class HealthChecks:
    """The health checking of the serving snapshot (see the module docstring)."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self._tasks: list[asyncio.Task[None]] = []
        self._outliers: list[Outlier] = []

    def __repr__(self) -> str:
        names = ", ".join(self.tasks)
        return f"<HealthChecks tasks=[{names}] outlier timers={len(self._outliers)}>"

    @property
    def tasks(self) -> list[str]:
        """The names of the probing tasks running."""
        return [task.get_name() for task in self._tasks]

    def swap(self, snapshot: Snapshot) -> None:
        """Stop the previous snapshot's checks and start ``snapshot``'s."""
        self.stop()
        loop = asyncio.get_running_loop()
        for name, dest in snapshot.destinations.items():
            keep_health(dest.stats, dest.active_check, dest.outlier_check)
            if dest.active_check is not None:
                checker = ActiveChecker(dest, self.resolver)
                self._tasks.append(loop.create_task(checker.run(), name=f"pyproxy.health:{name}"))
            if dest.outlier is not None:
                dest.outlier.start(loop)
                self._outliers.append(dest.outlier)

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for outlier in self._outliers:
            outlier.stop()
        self._tasks, self._outliers = [], []

    async def close(self) -> None:
        """Stop, and wait (bounded) for the probes in flight to go."""
        tasks = self._tasks
        self.stop()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)


def keep_health(stats: ClusterStats, active: ir.ActiveHealthCheck | None,
                passive: ir.PassiveHealthCheck | None) -> None:
    """Align a destination's kept health with the checks it is now served with."""
    if (stats.active_check is None) != (active is None):
        stats.initial_health = FAILED_ACTIVE_HC if active is not None else 0
        for host in stats.hosts.values():
            if active is not None:
                host.health |= FAILED_ACTIVE_HC
                host.hc_checked = False
            else:
                host.health &= ~FAILED_ACTIVE_HC
            host.hc_successes = host.hc_failures = 0
        stats.version += 1
    stats.active_check = active
    if passive is None and stats.outlier_check is not None:
        for host in stats.hosts.values():
            host.health &= ~FAILED_OUTLIER_CHECK
            host.consecutive_5xx = host.consecutive_gateway = host.consecutive_local = host.backoff = 0
        stats.version += 1
    stats.outlier_check = passive


class ActiveChecker:
    """One destination's probes, round after round."""

    def __init__(self, dest: CompiledDestination, resolver: Resolver) -> None:
        check = dest.active_check
        assert check is not None
        self.dest = dest
        self.check = check
        self.resolver = resolver

    async def run(self) -> None:
        dest, check = self.dest, self.check
        while True:
            if dest.fqdns:
                await dest.resolve(self.resolver)  # waits only while a name has no answer yet
            hosts = dest.hosts(self.resolver.lookup)
            dest.stats.sync_members([target for target, _ in hosts], time.monotonic())
            outcomes = await asyncio.gather(*(self.probe(target, name) for target, name in hosts))
            for (target, _), outcome in zip(hosts, outcomes, strict=True):
                self.record(dest.stats.host(target), outcome)
            await asyncio.sleep(check.interval)

    def record(self, host: HostStats, outcome: int) -> None:
        """Count a probe's ``outcome`` and move the host's flags by Envoy's rules."""
        stats = self.dest.stats
        counts = stats.health_check
        counts["attempt"] += 1
        first = not host.hc_checked
        host.hc_checked = True
        if outcome == PASSED:
            counts["success"] += 1
            host.hc_failures = 0
            if host.health & FAILED_ACTIVE_HC:
                host.hc_successes += 1
                if first or host.hc_successes >= self.check.healthy_threshold:
                    host.health &= ~FAILED_ACTIVE_HC
                    host.hc_successes = 0
                    host.joined_at = time.monotonic()  # back in rotation: slow start again
                    stats.version += 1
                    log.info("%s: endpoint passes its health check", self.dest.name)
            elif host.health & FAILED_OUTLIER_CHECK and self.dest.outlier is not None:
                self.dest.outlier.uneject(host)
            return
        counts["failure"] += 1
        host.hc_successes = 0
        if outcome == NETWORK:
            counts["network_failure"] += 1
        if host.health & FAILED_ACTIVE_HC:
            return
        if outcome == NETWORK:
            host.hc_failures += 1
            if host.hc_failures < self.check.unhealthy_threshold:
                return
        host.health |= FAILED_ACTIVE_HC
        stats.version += 1
        log.info("%s: endpoint fails its health check", self.dest.name)

    async def probe(self, target: Target, hostname: str | None) -> int:
        """One probe of ``target`` (``hostname``: the DNS name it came from)."""
        check = self.check
        writer = None
        try:
            async with asyncio.timeout(check.timeout):
                reader, writer = await self._connect(target)
                if check.http is not None:
                    return await self._http(reader, writer, check.http, self._host_header(target, hostname))
                return await self._tcp(reader, writer, check.tcp or ir.TcpHealthCheck())
        except (OSError, ssl.SSLError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return NETWORK
        except Exception:
            # a bug must not end the destination's checks: the probe counts as failed
            log.exception("bug: health probe of %s for %s failed", target, self.dest.name)
            return NETWORK
        finally:
            if writer is not None:
                writer.transport.abort()

    async def _connect(self, target: Target) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port, unix = target
        dest = self.dest
        ctx = dest.probe_ssl_context
        sni = dest.tls.sni if ctx is not None and dest.tls is not None else None
        if unix:
            reader, writer = await asyncio.open_unix_connection(host, ssl=ctx, server_hostname=sni)
        else:
            reader, writer = await asyncio.open_connection(host, self.check.port or port, ssl=ctx,
                                                           server_hostname=sni)
        if ctx is not None and dest.tls is not None and not dest.tls.insecure_skip_verify:
            peer = writer.get_extra_info("ssl_object").getpeercert()
            if tls.verify_peer(peer, dest.tls) is not None:
                writer.transport.abort()
                raise ssl.SSLError("peer certificate does not match")
        return reader, writer

    def _host_header(self, target: Target, hostname: str | None) -> str:
        http = self.check.http
        if http is not None and http.hostname:
            return http.hostname
        if hostname:
            return hostname
        address, _, unix = target
        if unix:
            return "localhost"
        return f"[{address}]" if ":" in address else address

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, http: ir.HttpHealthCheck,
                    host: str) -> int:
        writer.write(f"{http.method} {http.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Envoy/HC\r\n"
                     f"Connection: close\r\n\r\n".encode("latin-1"))
        line = await reader.readuntil(b"\n")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            return NETWORK  # not an HTTP answer: as Envoy's codec error, a network failure
        return PASSED if int(parts[1]) in http.expected_statuses else FAILED

    async def _tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tcp: ir.TcpHealthCheck) -> int:
        if tcp.send:
            writer.write(tcp.send)
        if not tcp.receive:
            return PASSED
        tail = b""  # what may still begin ``receive``; read until it comes or the timeout
        while True:
            chunk = await reader.read(_MAX_HEAD)
            if not chunk:
                return NETWORK
            seen = tail + chunk
            if tcp.receive in seen:
                return PASSED
            tail = seen[max(0, len(seen) - len(tcp.receive) + 1):]

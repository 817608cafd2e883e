"""The numbers the data plane counts, as plain objects: an integer increment per event on the
request path, nothing else. ``metrics.py`` reads them at scrape time and turns them into
Prometheus families with Envoy's names; the admin's ``/clusters`` reads them too.

A ``Stats`` registry is owned by the runtime and outlives every snapshot: the compiler looks
each destination's ``ClusterStats`` up by name, and each downstream connection its group's
``ListenerStats`` by address, so a reload keeps the counts of everything that keeps its name.

Counters only; the gauges (active connections and requests) are either read from live state
at scrape time or kept here where one place opens and one place closes (``cx_active``,
``rq_active`` of a host). A request's status is counted in ``rq_xx[status // 100]``; index 0
holds requests that got no status (the client went away first), so the request total is the
sum of the list and costs no increment of its own.
"""
from __future__ import annotations

import bisect

# Envoy's default histogram buckets, in milliseconds (upper bounds, ``le``). Floats: bisect
# compares a float duration with floats twice as fast as with ints.
BUCKETS: tuple[float, ...] = (0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
                              30000.0, 60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0)

Target = tuple[str, int, bool]  # an upstream address: (host, port, is_unix)


def status_classes() -> list[int]:
    """Counts by status // 100 (0-9: httptools accepts any three-digit status)."""
    return [0] * 10


class Histogram:
    """Counts per bucket of ``BUCKETS`` (the last slot is above every bound) and their sum."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def record(self, ms: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, ms)] += 1
        self.sum += ms


class ListenerStats:
    """One listener group (socket) and scheme: Envoy's ``http.<prefix>.downstream_*``."""

    __slots__ = ("cx_total", "cx_upgrades_total", "rq_xx", "rq_time")

    def __init__(self) -> None:
        self.cx_total = 0
        self.cx_upgrades_total = 0  # connections that became a tunnel (WebSocket)
        self.rq_xx = status_classes()
        self.rq_time = Histogram()


class HostStats:
    """One upstream address of a cluster (Envoy's per-host stats of ``/clusters``).
    A connection counts for the cluster that opened it: clusters that name the same address
    with the same TLS settings share pooled connections."""

    __slots__ = ("cluster", "cx_total", "cx_active", "cx_connect_fail", "rq_total", "rq_active", "rq_error")

    def __init__(self, cluster: ClusterStats | None = None) -> None:
        self.cluster = cluster  # whose circuit-breaker gauges its connections count in
        self.cx_total = 0  # connection attempts, failed ones included (as Envoy)
        self.cx_active = 0
        self.cx_connect_fail = 0
        self.rq_total = 0  # attempts sent on a connection (a retry is another one)
        self.rq_active = 0
        self.rq_error = 0  # 5xx responses


class ClusterStats:
    """One destination (Envoy's ``cluster.<name>.upstream_*``). The connection and request
    totals are the sums over ``hosts``.

    The circuit breakers read four gauges kept here: ``cx_open`` (connections the destination
    opened, being opened or open), ``rq_pending`` (requests waiting for a connection),
    ``rq_active`` (requests on a connection) and ``rq_retry_active`` (retries scheduled or in
    flight); a request refused by one counts in ``cx_overflow`` (a connection not opened:
    the request waits instead), ``rq_pending_overflow`` (pending or parallel requests: 503) or
    ``rq_retry_overflow`` (a retry not made), Envoy's names."""

    __slots__ = ("hosts", "rq_xx", "rq_time", "rq_timeout", "rq_per_try_timeout", "rq_retry", "cx_open", "rq_pending",
                 "rq_active", "rq_retry_active", "cx_overflow", "rq_pending_overflow", "rq_retry_overflow")

    def __init__(self) -> None:
        self.hosts: dict[Target, HostStats] = {}
        self.rq_xx = status_classes()  # upstream responses, and the proxy's own 5xx for failed attempts
        self.rq_time = Histogram()
        self.rq_timeout = 0
        self.rq_per_try_timeout = 0
        self.rq_retry = 0
        self.cx_open = 0
        self.rq_pending = 0
        self.rq_active = 0
        self.rq_retry_active = 0
        self.cx_overflow = 0
        self.rq_pending_overflow = 0
        self.rq_retry_overflow = 0

    def host(self, target: Target) -> HostStats:
        stats = self.hosts.get(target)
        if stats is None:
            stats = self.hosts[target] = HostStats(self)
        return stats

    def total(self, field: str) -> int:
        return sum(getattr(host, field) for host in self.hosts.values())


class Stats:
    """Every counter of a runtime, by listener group and by cluster name."""

    __slots__ = ("listeners", "clusters")

    def __init__(self) -> None:
        self.listeners: dict[tuple[str, int, str], ListenerStats] = {}  # (address, port, scheme)
        self.clusters: dict[str, ClusterStats] = {}

    def listener(self, key: tuple[str, int], scheme: str) -> ListenerStats:
        """The stats of listener group ``key`` (address, port) serving ``scheme``."""
        stats = self.listeners.get((*key, scheme))
        if stats is None:
            stats = self.listeners[(*key, scheme)] = ListenerStats()
        return stats

    def cluster(self, name: str) -> ClusterStats:
        stats = self.clusters.get(name)
        if stats is None:
            stats = self.clusters[name] = ClusterStats()
        return stats

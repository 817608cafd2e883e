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

Each host also carries its health (Envoy's health flags) and what health checking and outlier
detection count about it: state that must outlive snapshots just as the counters do, so that
a reload keeping a destination keeps its endpoints' health. ``dataplane/health.py`` and
``dataplane/outlier.py`` change it; ``dataplane/balance.py`` reads it.
"""
from __future__ import annotations

import bisect

# Envoy's default histogram buckets, in milliseconds (upper bounds, ``le``). Floats: bisect
# compares a float duration with floats twice as fast as with ints.
BUCKETS: tuple[float, ...] = (0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
                              30000.0, 60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0)

Target = tuple[str, int, bool]  # an upstream address: (host, port, is_unix)

# Envoy's health flags of a host (a bit set; 0 is healthy)
FAILED_ACTIVE_HC = 1
FAILED_OUTLIER_CHECK = 2


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

    __slots__ = ("cx_total", "cx_upgrades_total", "cx_limited", "rq_xx", "rq_time")

    def __init__(self) -> None:
        self.cx_total = 0
        self.cx_upgrades_total = 0  # connections that became a tunnel (WebSocket)
        self.cx_limited = 0  # connections closed at once: a listener's connection limit (Envoy's limited_connections)
        self.rq_xx = status_classes()
        self.rq_time = Histogram()


class HostStats:
    """One upstream address of a cluster (Envoy's per-host stats of ``/clusters``).
    A connection counts for the cluster that opened it: clusters that name the same address
    with the same TLS settings share pooled connections.

    ``health`` holds the flags (``FAILED_ACTIVE_HC``, ``FAILED_OUTLIER_CHECK``); ``joined_at``
    is when the host joined the rotation (slow start ramps from it); the ``hc_*`` fields are
    its active health check's state, the ``consecutive_*`` and ejection fields its outlier
    detection's."""

    __slots__ = ("cluster", "cx_total", "cx_active", "cx_connect_fail", "rq_total", "rq_active", "rq_error", "health",
                 "joined_at", "hc_checked", "hc_successes", "hc_failures", "consecutive_5xx", "consecutive_gateway",
                 "consecutive_local", "ejected_at", "backoff", "unejected_at")

    def __init__(self, cluster: ClusterStats | None = None, health: int = 0) -> None:
        self.cluster = cluster  # whose circuit-breaker gauges its connections count in
        self.cx_total = 0  # connection attempts, failed ones included (as Envoy)
        self.cx_active = 0
        self.cx_connect_fail = 0
        self.rq_total = 0  # attempts sent on a connection (a retry is another one)
        self.rq_active = 0
        self.rq_error = 0  # 5xx responses
        self.health = health
        self.joined_at = 0.0
        self.hc_checked = False  # probed at least once (the first success is enough to pass)
        self.hc_successes = 0  # in a row, while failing
        self.hc_failures = 0  # network failures in a row, while passing
        self.consecutive_5xx = 0
        self.consecutive_gateway = 0
        self.consecutive_local = 0
        self.ejected_at = 0.0
        self.backoff = 0  # ejection time = base × backoff; +1 per ejection, -1 per healthy interval
        self.unejected_at: float | None = None

    def joined(self, now: float, health: int) -> None:
        """The host (re)joined its cluster: its health starts over from ``health``."""
        self.joined_at = now
        self.health = health
        self.hc_checked = False
        self.hc_successes = self.hc_failures = 0
        self.consecutive_5xx = self.consecutive_gateway = self.consecutive_local = 0
        self.backoff = 0
        self.unejected_at = None

    def flags(self) -> str:
        """Envoy's text form of the flags (``healthy``, ``/failed_active_hc/failed_outlier_check``)."""
        if not self.health:
            return "healthy"
        return ("/failed_active_hc" if self.health & FAILED_ACTIVE_HC else "") + (
            "/failed_outlier_check" if self.health & FAILED_OUTLIER_CHECK else "")


HEALTH_CHECK_COUNTERS = ("attempt", "success", "failure", "network_failure")
OUTLIER_COUNTERS = ("ejections_enforced_total", "ejections_overflow", "ejections_enforced_consecutive_5xx",
                    "ejections_detected_consecutive_5xx", "ejections_enforced_consecutive_gateway_failure",
                    "ejections_detected_consecutive_gateway_failure",
                    "ejections_enforced_consecutive_local_origin_failure",
                    "ejections_detected_consecutive_local_origin_failure")


class ClusterStats:
    """One destination (Envoy's ``cluster.<name>.upstream_*``). The connection and request
    totals are the sums over ``hosts``.

    The circuit breakers read four gauges kept here: ``cx_open`` (connections the destination
    opened, being opened or open), ``rq_pending`` (requests waiting for a connection),
    ``rq_active`` (requests on a connection) and ``rq_retry_active`` (retries scheduled or in
    flight); a request refused by one counts in ``cx_overflow`` (a connection not opened:
    the request waits instead), ``rq_pending_overflow`` (pending or parallel requests: 503) or
    ``rq_retry_overflow`` (a retry not made), Envoy's names.

    ``members`` are the addresses currently in the cluster and ``version`` changes whenever
    they or any host's health do (load balancers rebuild their view then). ``initial_health``
    is what a joining host starts with (``FAILED_ACTIVE_HC`` under an active health check,
    until its first probe passes, as in Envoy); ``active_check`` and ``outlier_check`` the
    settings health has been kept under (a reload that turns one off clears its flags).
    ``health_check`` and ``outlier`` count Envoy's ``health_check.*`` and
    ``outlier_detection.*`` events."""

    __slots__ = ("hosts", "rq_xx", "rq_time", "rq_timeout", "rq_per_try_timeout", "rq_retry", "cx_open", "rq_pending",
                 "rq_active", "rq_retry_active", "cx_overflow", "rq_pending_overflow", "rq_retry_overflow", "members",
                 "version", "initial_health", "active_check", "outlier_check", "health_check", "outlier",
                 "lb_healthy_panic", "cx_none_healthy")

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
        self.members: frozenset[Target] = frozenset()
        self.version = 0
        self.initial_health = 0
        self.active_check: object | None = None  # the ir.ActiveHealthCheck health is kept under
        self.outlier_check: object | None = None  # the ir.PassiveHealthCheck
        self.health_check = dict.fromkeys(HEALTH_CHECK_COUNTERS, 0)
        self.outlier = dict.fromkeys(OUTLIER_COUNTERS, 0)
        self.lb_healthy_panic = 0  # requests balanced over every host: too few were healthy
        self.cx_none_healthy = 0  # requests that found no healthy host (503 UH)

    def host(self, target: Target) -> HostStats:
        stats = self.hosts.get(target)
        if stats is None:
            stats = self.hosts[target] = HostStats(self, self.initial_health)
        return stats

    def sync_members(self, targets: tuple[Target, ...] | list[Target], now: float) -> None:
        """The cluster's addresses are ``targets`` now: a host that was not a member joins
        (its health starts over, its slow start begins)."""
        members = self.members
        current = frozenset(targets)
        if current == members:
            return
        for target in current - members:
            self.host(target).joined(now, self.initial_health)
        self.members = current
        self.version += 1

    def ejected(self) -> int:
        """Members ejected by outlier detection now."""
        hosts = self.hosts
        return sum(1 for target in self.members if hosts[target].health & FAILED_OUTLIER_CHECK)

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

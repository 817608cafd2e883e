"""``/stats/prometheus``: the runtime's counters as Prometheus families with Envoy's names and
labels, so Envoy Gateway's dashboards work unchanged.

The data plane only increments plain integers (``stats.py``); this collector reads them at
scrape time, together with the live state the gauges come from (open downstream connections
and their queued requests). It is registered on a private ``CollectorRegistry``, never the
global one.

Labels:
- ``envoy_http_conn_manager_prefix`` is ``http-<port>`` or ``https-<port>``, the listener
  group's port, as Envoy Gateway names its HTTP connection managers (``hcmStatPrefix``).
- ``envoy_cluster_name`` is the destination's name, ``backend/<namespace>/<name>`` (with
  ``/<sectionName>`` when a BackendTLSPolicy targets one port). Envoy Gateway has one cluster
  per route rule, ``httproute/<namespace>/<name>/rule/<index>``; pyproxy has one per Backend,
  shared by every rule that names it.
- ``envoy_response_code_class`` is ``1`` to ``5``.

prometheus-client's text format appends ``_total`` to every counter. Envoy's counters whose
names do not end in ``_total`` (``upstream_rq_xx``, ``upstream_cx_connect_fail`` …) are
therefore exposed as untyped, which keeps their names exactly (PromQL's ``rate`` and
``increase`` treat them alike).
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, UnknownMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from .runtime import Runtime
from .stats import (
    BUCKETS,
    FAILED_ACTIVE_HC,
    HEALTH_CHECK_COUNTERS,
    OUTLIER_COUNTERS,
    ClusterStats,
    Histogram,
    ListenerStats,
)

PREFIX = "envoy_http_conn_manager_prefix"
CLUSTER = "envoy_cluster_name"
CODE_CLASS = "envoy_response_code_class"
CLASSES = ("1", "2", "3", "4", "5")
_LE = (*(f"{bound:.0f}" if bound.is_integer() else str(bound) for bound in BUCKETS), "+Inf")  # 0.5, 1, 5 …


def buckets(histogram: Histogram) -> list[tuple[str, float]]:
    """Cumulative counts per ``le`` bound, ending with ``+Inf`` (the total)."""
    return list(zip(_LE, itertools.accumulate(histogram.counts), strict=True))


def merge(histograms: list[Histogram]) -> Histogram:
    merged = Histogram()
    for histogram in histograms:
        merged.counts = [a + b for a, b in zip(merged.counts, histogram.counts, strict=True)]
        merged.sum += histogram.sum
    return merged


class _Downstream:
    """The listener groups sharing one ``envoy_http_conn_manager_prefix`` (one per address
    the port is bound on), merged."""

    def __init__(self) -> None:
        self.stats: list[ListenerStats] = []
        self.cx_active = 0
        self.rq_active = 0
        self.upgrades_active = 0


class RuntimeCollector(Collector):
    """Every family of ``/stats/prometheus``, read from one runtime at each scrape."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        yield from self._server()
        yield from self._downstream()
        yield from self._clusters()
        yield from self._pyproxy()

    def _server(self) -> Iterator[Metric]:
        runtime = self.runtime
        yield GaugeMetricFamily("envoy_server_live", "1 while serving (ready), else 0", value=int(runtime.ready))
        yield GaugeMetricFamily("envoy_server_uptime", "seconds since the process started",
                                value=int(time.time() - runtime.started))

    def _prefixes(self) -> dict[str, _Downstream]:
        runtime = self.runtime
        groups: dict[str, _Downstream] = {}
        by_stats: dict[ListenerStats, _Downstream] = {}
        for (address, port, scheme), stats in runtime.stats.listeners.items():
            prefix = f"{scheme}-{runtime.ports.get((address, port), port)}"
            group = groups.setdefault(prefix, _Downstream())
            group.stats.append(stats)
            by_stats[stats] = group
        if runtime.context is not None:
            for proto in runtime.context.connections:
                group = by_stats[proto.stats]
                group.cx_active += 1
                group.rq_active += len(proto.queue)
                if proto.tunnel is not None:
                    group.upgrades_active += 1
        return groups

    def _downstream(self) -> Iterator[Metric]:
        cx_total = CounterMetricFamily("envoy_http_downstream_cx_total", "downstream connections accepted",
                                       labels=[PREFIX])
        cx_active = GaugeMetricFamily("envoy_http_downstream_cx_active", "downstream connections open",
                                      labels=[PREFIX])
        rq_total = CounterMetricFamily("envoy_http_downstream_rq_total", "downstream requests", labels=[PREFIX])
        rq_active = GaugeMetricFamily("envoy_http_downstream_rq_active", "downstream requests not yet answered",
                                      labels=[PREFIX])
        rq_xx = UnknownMetricFamily("envoy_http_downstream_rq_xx", "downstream responses by status class",
                                    labels=[PREFIX, CODE_CLASS])
        upgrades_total = CounterMetricFamily("envoy_http_downstream_cx_upgrades", "connections upgraded (WebSocket)",
                                             labels=[PREFIX])
        upgrades_active = GaugeMetricFamily("envoy_http_downstream_cx_upgrades_active", "upgraded connections open",
                                            labels=[PREFIX])
        limited = CounterMetricFamily("envoy_connection_limit_limited_connections",
                                      "connections closed at once: over a listener's connectionLimit", labels=[PREFIX])
        rq_time = HistogramMetricFamily("envoy_http_downstream_rq_time",
                                        "downstream request time, head received to response end (ms)",
                                        labels=[PREFIX])
        for prefix, group in sorted(self._prefixes().items()):
            cx_total.add_metric([prefix], sum(s.cx_total for s in group.stats))
            cx_active.add_metric([prefix], group.cx_active)
            upgrades_total.add_metric([prefix], sum(s.cx_upgrades_total for s in group.stats))
            upgrades_active.add_metric([prefix], group.upgrades_active)
            limited.add_metric([prefix], sum(s.cx_limited for s in group.stats))
            classes = [sum(column) for column in zip(*(s.rq_xx for s in group.stats), strict=True)]
            rq_total.add_metric([prefix], sum(classes))
            rq_active.add_metric([prefix], group.rq_active)
            for code_class in CLASSES:
                rq_xx.add_metric([prefix, code_class], classes[int(code_class)])
            histogram = merge([s.rq_time for s in group.stats])
            rq_time.add_metric([prefix], buckets(histogram), histogram.sum)
        yield from (cx_total, cx_active, upgrades_total, upgrades_active, limited, rq_total, rq_active, rq_xx, rq_time)

    def _clusters(self) -> Iterator[Metric]:
        clusters = sorted(self.runtime.stats.clusters.items())
        yield from _host_totals(clusters)
        rq_xx = UnknownMetricFamily("envoy_cluster_upstream_rq_xx",
                                    "upstream responses by status class (failed attempts as the proxy answered them)",
                                    labels=[CLUSTER, CODE_CLASS])
        rq_time = HistogramMetricFamily("envoy_cluster_upstream_rq_time",
                                        "upstream request time, request sent to response end (ms)", labels=[CLUSTER])
        for name, stats in clusters:
            for code_class in CLASSES:
                rq_xx.add_metric([name, code_class], stats.rq_xx[int(code_class)])
            rq_time.add_metric([name], buckets(stats.rq_time), stats.rq_time.sum)
        yield rq_xx
        yield rq_time
        for field, doc in (("upstream_rq_timeout", "requests that hit the route timeout"),
                           ("upstream_rq_per_try_timeout", "attempts that hit their per-try timeout"),
                           ("upstream_rq_retry", "retries"),
                           ("upstream_cx_overflow", "connections not opened: the circuit breaker's maxConnections"),
                           ("upstream_rq_pending_overflow", "requests refused (503 UO): the circuit breaker's "
                                                            "maxPendingRequests or maxParallelRequests"),
                           ("upstream_rq_retry_overflow", "retries not made: the circuit breaker's maxParallelRetries"),
                           ("lb_healthy_panic", "requests balanced over every endpoint: too few were healthy"),
                           ("upstream_cx_none_healthy", "requests that found no healthy endpoint (503 UH)")):
            family = UnknownMetricFamily(f"envoy_cluster_{field}", doc, labels=[CLUSTER])
            for name, stats in clusters:
                family.add_metric([name], getattr(stats, field.removeprefix("upstream_")))
            yield family
        pending = GaugeMetricFamily("envoy_cluster_upstream_rq_pending_active", "requests waiting for a connection",
                                    labels=[CLUSTER])
        for name, stats in clusters:
            pending.add_metric([name], stats.rq_pending)
        yield pending
        yield from _health(clusters)

    def _pyproxy(self) -> Iterator[Metric]:
        runtime = self.runtime
        reloads = CounterMetricFamily("pyproxy_config_reloads_total", "configuration reloads by result",
                                      labels=["result"])
        for result, count in sorted(runtime.reloads.items()):
            reloads.add_metric([result], count)
        yield reloads
        yield GaugeMetricFamily("pyproxy_config_generation",
                                "the configuration serving: 1 after start, +1 per successful reload",
                                value=runtime.generation)
        dns = runtime.resolver.stats
        yield CounterMetricFamily("pyproxy_dns_refreshes_total", "resolutions of backend names (refreshes and "
                                  "first lookups)", value=dns["refreshes"])
        yield CounterMetricFamily("pyproxy_dns_refresh_failures_total", "resolutions that failed (the last good "
                                  "answer is kept)", value=dns["failures"])
        yield CounterMetricFamily("pyproxy_dns_answer_changes_total", "resolutions whose answer differed from the "
                                  "previous one", value=dns["changes"])
        yield CounterMetricFamily("pyproxy_access_log_dropped_total", "access-log lines dropped because the sink "
                                  "did not keep up", value=runtime.access_log.dropped)
        mirrors = runtime.context.mirrors.dropped if runtime.context is not None else 0
        yield CounterMetricFamily("pyproxy_mirror_dropped_total", "mirrored requests not sent (too many in flight, "
                                  "or the mirror's upstream at its connection limit)", value=mirrors)


def _host_totals(clusters: list[tuple[str, ClusterStats]]) -> Iterator[Metric]:
    """The cluster families that are sums over the cluster's upstream addresses."""
    families = (
        (CounterMetricFamily, "envoy_cluster_upstream_cx_total", "cx_total", "upstream connection attempts"),
        (GaugeMetricFamily, "envoy_cluster_upstream_cx_active", "cx_active", "upstream connections open"),
        (UnknownMetricFamily, "envoy_cluster_upstream_cx_connect_fail", "cx_connect_fail",
         "upstream connection attempts that failed (connect, TLS handshake, certificate check)"),
        (CounterMetricFamily, "envoy_cluster_upstream_rq_total", "rq_total", "requests sent upstream (attempts)"),
        (GaugeMetricFamily, "envoy_cluster_upstream_rq_active", "rq_active", "requests on an upstream connection"),
    )
    for family_type, family_name, field, doc in families:
        family = family_type(family_name, doc, labels=[CLUSTER])
        for name, stats in clusters:
            family.add_metric([name], stats.total(field))
        yield family


def _health(clusters: list[tuple[str, ClusterStats]]) -> Iterator[Metric]:
    """Envoy's ``health_check.*`` families for the clusters under an active health check and
    ``outlier_detection.*`` for those under outlier detection."""
    checked = [(name, stats) for name, stats in clusters if stats.active_check is not None]
    for field in HEALTH_CHECK_COUNTERS:
        family = UnknownMetricFamily(f"envoy_cluster_health_check_{field}", f"active health check probes: {field}",
                                     labels=[CLUSTER])
        for name, stats in checked:
            family.add_metric([name], stats.health_check[field])
        yield family
    healthy = GaugeMetricFamily("envoy_cluster_health_check_healthy", "endpoints passing their active health check",
                                labels=[CLUSTER])
    for name, stats in checked:
        healthy.add_metric([name], sum(1 for target in stats.members
                                       if not stats.hosts[target].health & FAILED_ACTIVE_HC))
    yield healthy
    detected = [(name, stats) for name, stats in clusters if stats.outlier_check is not None]
    active = GaugeMetricFamily("envoy_cluster_outlier_detection_ejections_active", "endpoints ejected now",
                               labels=[CLUSTER])
    for name, stats in detected:
        active.add_metric([name], stats.ejected())
    yield active
    for field in OUTLIER_COUNTERS:
        name_, doc = f"envoy_cluster_outlier_detection_{field.removesuffix('_total')}", field.replace("_", " ")
        counter: CounterMetricFamily | UnknownMetricFamily = (
            CounterMetricFamily(name_, doc, labels=[CLUSTER]) if field.endswith("_total")
            else UnknownMetricFamily(name_, doc, labels=[CLUSTER]))
        for name, stats in detected:
            counter.add_metric([name], stats.outlier[field])
        yield counter


def registry(runtime: Runtime) -> CollectorRegistry:
    """A private registry holding only ``runtime``'s collector."""
    private = CollectorRegistry(auto_describe=False)
    private.register(RuntimeCollector(runtime))
    return private


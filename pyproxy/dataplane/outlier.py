"""Passive health checking: Envoy's outlier detection (consecutive errors) for one
destination.

The forwarder reports what each attempt met: the upstream's status (``answered``) or a
failure of the proxy's own (``failed``: connect failure, reset, protocol error, timeout).
Without ``split_external_local_origin_errors`` (Envoy's default) such a failure counts as a
503 (504 for a timeout), like an answer. A host reaching ``consecutive_5xx`` 5xx in a row,
``consecutive_gateway_errors`` 502/503/504 in a row (when set) or, split,
``consecutive_local_origin_failures`` failures in a row is ejected at once: flagged
``FAILED_OUTLIER_CHECK`` and left out of load balancing (unless in panic), provided the
ejected hosts stay within ``max_ejection_percent`` of the cluster (Envoy counts the new one:
an ejection that would pass it is refused and counted as overflow, unless none is ejected and
``always_eject_one_endpoint``).

A timer every ``interval`` brings back the hosts whose ejection time is over:
``base_ejection_time`` × the host's backoff (one more per ejection, one less per interval it
stays healthy), at most ``max(300 s, base)``. A host's counters start over when it comes back.
An active health check that passes brings an ejected host back as well.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .. import ir
from ..stats import FAILED_OUTLIER_CHECK, ClusterStats, HostStats

log = logging.getLogger("pyproxy.outlier")

MAX_EJECTION_TIME = 300.0  # Envoy's default max_ejection_time
GATEWAY_ERRORS = (502, 503, 504)


class Outlier:
    """One destination's outlier detector; ``start`` its interval timer (the runtime's
    ``HealthChecks`` owns it), ``stop`` cancels it."""

    __slots__ = ("config", "stats", "name", "clock", "_timer", "_max_time")

    def __init__(self, name: str, config: ir.PassiveHealthCheck, stats: ClusterStats,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.config = config
        self.stats = stats
        self.clock = clock
        self._timer: asyncio.TimerHandle | None = None
        self._max_time = max(MAX_EJECTION_TIME, config.base_ejection_time)

    # ------------------------------------------------------------------ reports (request path)

    def answered(self, host: HostStats, status: int) -> None:
        """The upstream answered ``status`` (its connection worked)."""
        if self.config.split_external_local_origin_errors:
            host.consecutive_local = 0
        self._status(host, status)

    def failed(self, host: HostStats, timeout: bool) -> None:
        """An attempt on ``host`` failed on the proxy's side (timed out when ``timeout``)."""
        config = self.config
        if not config.split_external_local_origin_errors:
            self._status(host, 504 if timeout else 503)
            return
        host.consecutive_local += 1
        if host.consecutive_local == config.consecutive_local_origin_failures:
            self._detected(host, "consecutive_local_origin_failure")
            host.consecutive_local = 0

    def _status(self, host: HostStats, status: int) -> None:
        if status < 500:
            host.consecutive_5xx = host.consecutive_gateway = 0
            return
        config = self.config
        if status in GATEWAY_ERRORS:
            host.consecutive_gateway += 1
            if host.consecutive_gateway == config.consecutive_gateway_errors:
                self._detected(host, "consecutive_gateway_failure")
                host.consecutive_gateway = 0
        else:
            host.consecutive_gateway = 0
        host.consecutive_5xx += 1
        if host.consecutive_5xx == config.consecutive_5xx:
            self._detected(host, "consecutive_5xx")
            host.consecutive_5xx = 0

    def _detected(self, host: HostStats, kind: str) -> None:
        """Eject ``host`` (consecutive errors of ``kind``) if the ejection limit allows."""
        if host.health & FAILED_OUTLIER_CHECK:
            return
        stats = self.stats
        counts = stats.outlier
        counts["ejections_detected_" + kind] += 1
        ejected = stats.ejected()
        members = len(stats.members) or 1
        if (100.0 * (ejected + 1) / members > self.config.max_ejection_percent
                and not (self.config.always_eject_one_endpoint and ejected == 0)):
            counts["ejections_overflow"] += 1
            return
        counts["ejections_enforced_total"] += 1
        counts["ejections_enforced_" + kind] += 1
        host.health |= FAILED_OUTLIER_CHECK
        host.ejected_at = self.clock()
        if host.backoff * self.config.base_ejection_time < self._max_time + self.config.base_ejection_time:
            host.backoff += 1
        stats.version += 1
        log.info("%s: endpoint ejected (%s, ejection %d)", self.name, kind.replace("_", " "), host.backoff)

    def uneject(self, host: HostStats) -> None:
        """Bring ``host`` back; its consecutive counts start over."""
        host.health &= ~FAILED_OUTLIER_CHECK
        host.consecutive_5xx = host.consecutive_gateway = host.consecutive_local = 0
        host.unejected_at = self.clock()
        self.stats.version += 1

    # ------------------------------------------------------------------ the interval

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = loop.call_later(self.config.interval, self._tick, loop)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self.sweep()
        self.start(loop)

    def sweep(self) -> None:
        """Bring back the hosts whose ejection is over; shorten the backoff of those that
        stayed healthy for an interval since they came back."""
        now = self.clock()
        config = self.config
        hosts = self.stats.hosts
        for target in self.stats.members:
            host = hosts[target]
            if host.health & FAILED_OUTLIER_CHECK:
                if min(config.base_ejection_time * host.backoff, self._max_time) <= now - host.ejected_at:
                    self.uneject(host)
            elif host.backoff and host.unejected_at is not None and now - host.unejected_at >= config.interval:
                host.backoff -= 1

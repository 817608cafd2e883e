"""A BackendTrafficPolicy's spec → what it does to the routes it governs (``Traffic``).

Every field is one ``Rule`` below (``fieldmap.py``). Defaults are Envoy Gateway's and are the
IR's own, so a field left out keeps the IR default; where Envoy Gateway's default differs from
the IR's it is given here (``numRetries`` 2, retriable status 503)."""

from __future__ import annotations

import base64
import binascii
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .. import ir
from ..config import envoygateway as eg
from .fieldmap import (
    Rule,
    at_least_one,
    build,
    count,
    duration,
    duration_or_off,
    go_duration,
    invalid,
    percent,
    port,
    status_codes,
)
from .hostnames import hostname_problem
from .problems import Invalid
from .rules import DEFAULT_RETRIES, DEFAULT_RETRY_CODES

_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True, slots=True)
class Traffic:
    """What one policy asks for: the ``Destination`` fields of the backends its routes reach,
    the ``Route`` fields (``retry``, ``timeouts``) it sets, and why it cannot be honoured."""

    policy: str  # "<namespace>/<name>"
    destination: dict[str, Any] = field(default_factory=dict)
    route: dict[str, Any] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    def shape(self, destination: ir.Destination) -> ir.Destination:
        """The destination of its own the policy makes of ``destination`` (named after both)."""
        return dataclasses.replace(destination, name=f"{destination.name}@btp/{self.policy}", **self.destination)


def translate_traffic(policy: eg.BackendTrafficPolicy) -> Traffic:
    problems: list[str] = []
    spec = policy.spec
    destination = build(spec, _DESTINATION, "spec", problems)
    route = build(spec, _ROUTE, "spec", problems)
    name = f"{policy.metadata.namespace}/{policy.metadata.name}"
    return Traffic(name, destination, route, tuple(problems))


def _built(ir_cls: type, rules: tuple[Rule, ...], defaults: dict[str, Any] | None = None) -> Any:
    """A converter building ``ir_cls`` from a spec object with ``rules``; its problems are
    raised together as one ``Invalid``."""

    def convert(spec: object, where: str) -> Any:
        problems: list[str] = []
        fields = {**(defaults or {}), **build(spec, rules, where, problems)}
        if problems:
            raise Invalid("Invalid", "; ".join(problems))
        return ir_cls(**fields)

    return convert


# ------------------------------------------------------------------ load balancing


def _header_name(value: str, where: str) -> str:
    return value.lower()


def _cookie_path(attributes: dict[str, str], where: str) -> str:
    """Only the cookie's Path attribute is supported by pyproxy."""
    other = [name for name in attributes if name.lower() != "path"]
    if other:
        raise invalid(where, f"attribute(s) {', '.join(other)} not supported by pyproxy; only Path")
    return next(iter(attributes.values()))


_CONSISTENT_HASH = (
    Rule(("type",), "on"),
    Rule(("header", "name"), "name", _header_name),
    Rule(("cookie", "name"), "name"),
    Rule(("cookie", "ttl"), "cookie_ttl", duration),
    Rule(("cookie", "attributes"), "cookie_path", _cookie_path),
)


def _load_balancer(spec: eg.LoadBalancerSpec, where: str) -> ir.LoadBalancer:
    if spec.slow_start is not None and spec.type not in ("RoundRobin", "LeastRequest"):
        raise invalid(f"{where}.slowStart", "slow start is supported only with RoundRobin and LeastRequest")
    return _built(ir.LoadBalancer, _LOAD_BALANCER)(spec, where)


_LOAD_BALANCER = (
    Rule(("type",), "kind"),
    Rule(("consistent_hash",), "consistent_hash", _built(ir.ConsistentHash, _CONSISTENT_HASH)),
    Rule(("slow_start", "window"), "slow_start_window", duration),
)

# ------------------------------------------------------------------ health checks


def _path(value: str, where: str) -> str:
    if not value.startswith("/"):
        raise invalid(where, f"{value!r} must start with '/'")
    return value


def _method(value: str, where: str) -> str:
    if not value or not set(value) <= _TOKEN_CHARS or value.upper() == "CONNECT":
        raise invalid(where, f"{value!r} is not an HTTP method a health check can send")
    return value.upper()


def _hostname(value: str, where: str) -> str:
    if problem := hostname_problem(value, wildcard=False):
        raise invalid(where, problem)
    return value


def _payload(spec: eg.HealthCheckPayload, where: str) -> bytes:
    if spec.text is not None:
        return spec.text.encode()
    try:
        return base64.b64decode(spec.binary or "", validate=True)
    except binascii.Error as exc:
        raise invalid(f"{where}.binary", f"invalid base64 ({str(exc).lower()})") from exc


_HTTP_HEALTH_CHECK = (
    Rule(("path",), "path", _path),
    Rule(("method",), "method", _method),
    Rule(("expected_statuses",), "expected_statuses", status_codes(100, 599)),
    Rule(("hostname",), "hostname", _hostname),
)
_TCP_HEALTH_CHECK = (
    Rule(("send",), "send", _payload),
    Rule(("receive",), "receive", _payload),
)
_ACTIVE_HEALTH_CHECK = (
    Rule(("http",), "http", _built(ir.HttpHealthCheck, _HTTP_HEALTH_CHECK)),
    Rule(("tcp",), "tcp", _built(ir.TcpHealthCheck, _TCP_HEALTH_CHECK)),
    Rule(("interval",), "interval", go_duration),
    Rule(("timeout",), "timeout", go_duration),
    Rule(("unhealthy_threshold",), "unhealthy_threshold", at_least_one),
    Rule(("healthy_threshold",), "healthy_threshold", at_least_one),
    Rule(("overrides", "port"), "port", port),
)


def _flag(value: bool, where: str) -> bool:
    return value


def _gateway_errors(value: int, where: str) -> int | None:
    """0 (Envoy Gateway's default) leaves gateway errors uncounted apart."""
    return count(value, where) or None


_PASSIVE_HEALTH_CHECK = (
    Rule(("interval",), "interval", go_duration),
    Rule(("consecutive_5xx_errors",), "consecutive_5xx", count),
    Rule(("consecutive_gateway_errors",), "consecutive_gateway_errors", _gateway_errors),
    Rule(("consecutive_local_origin_failures",), "consecutive_local_origin_failures", count),
    Rule(("base_ejection_time",), "base_ejection_time", go_duration),
    Rule(("max_ejection_percent",), "max_ejection_percent", percent),
    Rule(("split_external_local_origin_errors",), "split_external_local_origin_errors", _flag),
    Rule(("always_eject_one_endpoint",), "always_eject_one_endpoint", _flag),
)

# ------------------------------------------------------------------ the rest


def _panic_threshold(value: int, where: str) -> float:
    return float(percent(value, where))


_CIRCUIT_BREAKER = (
    Rule(("max_connections",), "max_connections", count),
    Rule(("max_pending_requests",), "max_pending_requests", count),
    Rule(("max_parallel_requests",), "max_parallel_requests", count),
    Rule(("max_parallel_retries",), "max_parallel_retries", count),
)
_DNS = (
    Rule(("dns_refresh_rate",), "refresh", duration),
    Rule(("respect_dns_ttl",), "respect_ttl"),
    Rule(("lookup_family",), "lookup_family"),
)


def _backoff_max(spec: eg.BackOffSpec, where: str) -> float | None:
    """``maxInterval`` (None: the IR's 10 × baseInterval), not shorter than ``baseInterval``."""
    if spec.max_interval is None:
        return None
    maximum = go_duration(spec.max_interval, f"{where}.maxInterval")
    if spec.base_interval is not None and maximum < go_duration(spec.base_interval, f"{where}.baseInterval"):
        raise invalid(f"{where}.maxInterval", f"{spec.max_interval} is shorter than baseInterval {spec.base_interval}")
    return maximum


def _triggers(triggers: tuple[str, ...], where: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(triggers))


# Envoy Gateway's default retryOn (``connect-failure,refused-stream,unavailable,cancelled,
# retriable-status-codes``) less its gRPC triggers, which pyproxy does not support
DEFAULT_TRIGGERS = ("connect-failure", "refused-stream", "retriable-status-codes")


_RETRY = (
    Rule(("num_retries",), "retries", count),
    Rule(("retry_on", "triggers"), "on", _triggers),
    Rule(("retry_on", "http_status_codes"), "codes", status_codes(400, 599)),
    Rule(("per_retry", "timeout"), "per_try_timeout", go_duration),
    Rule(("per_retry", "back_off", "base_interval"), "backoff", go_duration),
    Rule(("per_retry", "back_off"), "backoff_max", _backoff_max),
)


def _request_timeout(value: str, where: str) -> ir.Timeouts:
    return ir.Timeouts(request=duration_or_off(value, where))


_DESTINATION = (
    Rule(("load_balancer",), "load_balancer", _load_balancer),
    Rule(("health_check", "active"), "active_health_check", _built(ir.ActiveHealthCheck, _ACTIVE_HEALTH_CHECK)),
    Rule(("health_check", "passive"), "passive_health_check", _built(ir.PassiveHealthCheck, _PASSIVE_HEALTH_CHECK)),
    Rule(("health_check", "panic_threshold"), "panic_threshold", _panic_threshold),
    Rule(("circuit_breaker",), "circuit_breaker", _built(ir.CircuitBreaker, _CIRCUIT_BREAKER)),
    Rule(("timeout", "tcp", "connect_timeout"), "connect_timeout", duration),
    Rule(("timeout", "http", "connection_idle_timeout"), "idle_timeout", duration),
    Rule(("dns",), "dns", _built(ir.DnsSettings, _DNS)),
)
_ROUTE = (
    Rule(("retry",), "retry", _built(ir.Retry, _RETRY, {"retries": DEFAULT_RETRIES, "codes": DEFAULT_RETRY_CODES,
                                                         "on": DEFAULT_TRIGGERS})),
    Rule(("timeout", "http", "request_timeout"), "timeouts", _request_timeout),
)

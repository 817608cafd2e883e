"""ClientTrafficPolicy: how each Gateway listener treats its clients (``ir.ClientSettings``) and
the TLS it offers (``ir.ListenerTLS``).

A policy targets a Gateway (all its listeners) or one listener (``sectionName``); the
listener's own policy wins over the Gateway's, whole, and the oldest policy per target wins
(``policytargets.py``, as Envoy Gateway's ``clienttrafficpolicy.go``). Every field is one
``Rule`` below. ``tls`` applies to HTTPS listeners only (Envoy Gateway ignores it on HTTP ones).

pyproxy serves all listeners on a port with one socket, so a policy must cover every listener
sharing its port: Envoy Gateway refuses a policy on one of several HTTP listeners sharing a
port (``validatePortOverlapForClientTrafficPolicy``); pyproxy refuses it for HTTPS listeners
too, since their connection-level settings (timeouts, connection limit, TLS) are the port's.
A policy that cannot be honoured (an invalid value, or such a port) is not applied: those
listeners keep their defaults, and the policy is not Accepted.
"""

from __future__ import annotations

import dataclasses
import math
import ssl
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from .. import ir
from ..config import envoygateway as eg
from .backends import Version, tls_version, version_order_problem
from .fieldmap import Convert, Rule, at_least_one, build, count, duration, invalid, same, size
from .gateways import ListenerContext
from .index import Index
from .policytargets import Claim, attach, listener_scopes
from .status import ObjectStatus, object_status

KIND = "ClientTrafficPolicy"
_HEADER_LIMIT_KIB = (1, 8192)  # Envoy's max_request_headers_kb bounds, as Envoy Gateway checks them


@dataclass(frozen=True, slots=True)
class ClientPolicy:
    policy: str  # "<namespace>/<name>"
    client: ir.ClientSettings
    tls: dict[str, Any]  # the ListenerTLS fields it sets
    problems: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ClientPolicies:
    settings: dict[str, ClientPolicy]  # listener IR name -> the policy applied to it
    statuses: list[ObjectStatus]

    def listener(self, ctx: ListenerContext) -> tuple[ir.ClientSettings, ir.ListenerTLS | None]:
        """The client settings and TLS of ``ctx`` under its policy (defaults without one)."""
        policy = self.settings.get(ctx.ir_name)
        if policy is None:
            return ir.ClientSettings(), ctx.tls
        tls = dataclasses.replace(ctx.tls, **policy.tls) if ctx.tls is not None else None
        return policy.client, tls


def translate_client_policies(index: Index, listeners: list[ListenerContext]) -> ClientPolicies:
    attachments, translated = attach(index.client_traffic_policies.values(), KIND, ("Gateway",), index, _translate)
    served = [ctx for ctx in listeners if ctx.programmed and listener_scopes(ctx)]
    claims = {ctx.ir_name: attachments.effective(listener_scopes(ctx)) for ctx in served}
    refused = _shared_ports(served, claims)
    settings = {
        name: claim.value for name, claim in claims.items()
        if claim is not None and not claim.value.problems and claim.value.policy not in refused[name]
    }
    statuses = []
    for policy in index.client_traffic_policies.values():
        client = translated[_name(policy)]
        not_applied = {by_policy[client.policy] for by_policy in refused.values() if client.policy in by_policy}
        invalid = _invalid(client, sorted(not_applied))
        statuses.append(object_status(KIND, policy, attachments.conditions(client.policy, invalid)))
    return ClientPolicies(settings, statuses)


def _invalid(client: ClientPolicy, not_applied: list[str]) -> str | None:
    """Why the policy is not Accepted: its invalid values, the ports it cannot apply to."""
    problems = list(not_applied)
    if client.problems:
        problems.insert(0, "; ".join(client.problems) + ". The listeners it targets keep their default settings")
    return "; ".join(problems) or None


def _name(policy: eg.ClientTrafficPolicy) -> str:
    return f"{policy.metadata.namespace}/{policy.metadata.name}"


def _shared_ports(
    served: list[ListenerContext], claims: dict[str, Claim[ClientPolicy] | None]
) -> dict[str, dict[str, str]]:
    """listener IR name -> {policy: why it is not applied there}, for the listeners of a port
    whose listeners do not all fall under the same policy."""
    by_port: dict[int, list[ListenerContext]] = defaultdict(list)
    for ctx in served:
        by_port[ctx.port].append(ctx)
    refused: dict[str, dict[str, str]] = defaultdict(dict)
    for port, group in by_port.items():
        owners = {ctx.ir_name: (claim.value.policy if (claim := claims[ctx.ir_name]) else None) for ctx in group}
        if len(set(owners.values())) < 2:
            continue
        for ctx in group:
            policy = owners[ctx.ir_name]
            if policy is None:
                continue
            others = ", ".join(_listener_label(o) for o in group if owners[o.ir_name] != policy)
            refused[ctx.ir_name][policy] = (
                f"not applied to port {port}: {others} on the same port is not covered by this policy; pyproxy "
                "serves a port with one socket, so a ClientTrafficPolicy must cover every listener on it"
            )
    return refused


def _listener_label(ctx: ListenerContext) -> str:
    return f"listener {ctx.name} of Gateway {ctx.gateway[0]}/{ctx.gateway[1]}"


def _translate(policy: eg.ClientTrafficPolicy) -> ClientPolicy:
    problems: list[str] = []
    client = ir.ClientSettings(**build(policy.spec, _CLIENT, "spec", problems))
    tls = build(policy.spec, _TLS, "spec", problems)
    if problem := version_order_problem(tls.get("min_version", "1.2"), tls.get("max_version", "1.3"), "spec.tls"):
        problems.append(problem)
    return ClientPolicy(_name(policy), client, tls, tuple(problems))


def _header_limit(value: str, where: str) -> int:
    """Envoy's limit is in whole KiB: rounded up, from 1Ki to 8192Ki (Envoy Gateway's bounds)."""
    kib = math.ceil(size(value, where) / 1024)
    low, high = _HEADER_LIMIT_KIB
    if not low <= kib <= high:
        raise invalid(where, f"{value} is not between {low}Ki and {high}Ki")
    return kib * 1024


def _merge_slashes(disable: bool, where: str) -> bool:
    return not disable


def _version(default: Version) -> Convert:
    """``Auto`` is the listener's default version."""

    def convert(value: str, where: str) -> Version:
        return tls_version(value, default)

    return convert


def _ciphers(names: tuple[str, ...], where: str) -> tuple[str, ...]:
    """Each name must be a cipher suite OpenSSL knows (TLS 1.2 and below, as Envoy Gateway's)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for k, name in enumerate(names):
        try:
            context.set_ciphers(name)
        except ssl.SSLError as exc:
            raise invalid(f"{where}[{k}]", f"{name!r} is not a cipher suite OpenSSL knows") from exc
    return names


_CLIENT = (
    Rule(("timeout", "http", "request_received_timeout"), "request_timeout", duration),
    Rule(("timeout", "http", "request_headers_received_timeout"), "request_headers_timeout", duration),
    Rule(("timeout", "http", "idle_timeout"), "idle_timeout", duration),
    Rule(("connection", "connection_limit", "value"), "connection_limit", at_least_one),
    Rule(("connection", "buffer_limit"), "buffer_limit", size),
    Rule(("headers", "with_underscores_action"), "headers_with_underscores"),
    Rule(("headers", "request_id"), "request_id"),
    Rule(("headers", "max_request_header_limit"), "max_request_header_bytes", _header_limit),
    Rule(("client_ip_detection", "x_forwarded_for", "num_trusted_hops"), "xff_trusted_hops", count),
    Rule(("path", "escaped_slashes_action"), "escaped_slashes"),
    Rule(("path", "disable_merge_slashes"), "merge_slashes", _merge_slashes),
)
_TLS = (
    Rule(("tls", "min_version"), "min_version", _version("1.2")),
    Rule(("tls", "max_version"), "max_version", _version("1.3")),
    Rule(("tls", "ciphers"), "ciphers", _ciphers),
    Rule(("tls", "alpn_protocols"), "alpn", same, keep_empty=True),
)

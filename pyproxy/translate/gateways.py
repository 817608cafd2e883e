"""Gateways → listeners: protocol, port, hostname, TLS certificates, conflicts, allowedRoutes.

All Gateways bind ``Options.bind_address``, so listeners of different Gateways that share a
port share one socket: conflicts are therefore looked for across Gateways, not only within one.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from .. import ir
from ..config import resources as res
from .certs import listener_certificate
from .hostnames import hostname_problem
from .index import Index, Key
from .problems import Problem, kind_label
from .status import Condition, ObjectStatus, object_status

PROTOCOLS = ("HTTP", "HTTPS")
ROUTE_KIND = res.RouteGroupKind(kind="HTTPRoute", group=res.GATEWAY_GROUP)


@dataclass(frozen=True, slots=True)
class ListenerContext:
    """A Gateway listener as routes see it when they attach."""

    gateway: Key
    name: str
    ir_name: str
    address: str
    port: int
    protocol: str
    hostname: str | None
    allowed_routes: res.AllowedRoutes
    tls: ir.ListenerTLS | None
    programmed: bool


@dataclass(slots=True)
class _Listener:
    """Working state of one listener while its Gateway is checked."""

    spec: res.GatewayListener
    where: str
    accepted: Problem | None = None
    conflict: Problem | None = None
    refs: tuple[Problem, ...] = ()
    certificates: tuple[ir.Certificate, ...] = ()

    @property
    def programmed(self) -> bool:
        no_certificate = self.spec.protocol == "HTTPS" and not self.certificates
        return self.accepted is None and self.conflict is None and not no_certificate


def translate_gateways(index: Index, bind_address: str) -> tuple[list[ListenerContext], list[ObjectStatus]]:
    checked = {
        key: [_check_listener(index, gw, i, spec) for i, spec in enumerate(gw.spec.listeners)]
        for key, gw in index.gateways.items()
    }
    _mark_duplicate_names(checked)
    _mark_conflicts([listener for listeners in checked.values() for listener in listeners])
    contexts: list[ListenerContext] = []
    statuses: list[ObjectStatus] = []
    for key, gateway in index.gateways.items():
        contexts += [_context(key, listener, bind_address) for listener in checked[key]]
        statuses.append(object_status("Gateway", gateway, _gateway_conditions(checked[key])))
    return contexts, statuses


def allows_route_kind(allowed: res.AllowedRoutes) -> bool:
    """An HTTP/HTTPS listener takes HTTPRoutes unless ``allowedRoutes.kinds`` leaves them out."""
    return not allowed.kinds or ROUTE_KIND in allowed.kinds


def _context(key: Key, listener: _Listener, bind_address: str) -> ListenerContext:
    spec = listener.spec
    tls = ir.ListenerTLS(listener.certificates) if spec.protocol == "HTTPS" and listener.certificates else None
    return ListenerContext(
        gateway=key,
        name=spec.name,
        ir_name=f"gateway/{key[0]}/{key[1]}/{spec.name}",
        address=bind_address,
        port=spec.port,
        protocol=spec.protocol,
        hostname=spec.hostname,
        allowed_routes=spec.allowed_routes,
        tls=tls,
        programmed=listener.programmed,
    )


def _check_listener(index: Index, gateway: res.Gateway, i: int, spec: res.GatewayListener) -> _Listener:
    listener = _Listener(spec, f"spec.listeners[{i}]")
    listener.accepted = _shape_problem(spec, listener.where)
    refs = list(_kind_problems(spec, listener.where))
    if spec.protocol == "HTTPS" and spec.tls is not None and listener.accepted is None:
        certificates = []
        for j, ref in enumerate(spec.tls.certificate_refs):
            found = listener_certificate(index, gateway, ref, f"{listener.where}.tls.certificateRefs[{j}]")
            if isinstance(found, Problem):
                refs.append(found)
            else:
                certificates.append(found)
        if not spec.tls.certificate_refs:
            refs.append(
                Problem(
                    "InvalidCertificateRef",
                    f"{listener.where}.tls.certificateRefs is empty; name a Secret of type kubernetes.io/tls",
                )
            )
        listener.certificates = tuple(certificates)
    listener.refs = tuple(refs)
    return listener


def _shape_problem(spec: res.GatewayListener, where: str) -> Problem | None:
    """Problems that stop the listener from being accepted at all."""
    if spec.protocol not in PROTOCOLS:
        return Problem("UnsupportedProtocol", f"{where}.protocol {spec.protocol} is not supported; use HTTP or HTTPS")
    if not 0 < spec.port < 65536:
        return Problem("UnsupportedValue", f"{where}.port {spec.port} is not between 1 and 65535")
    if spec.hostname is not None and (problem := hostname_problem(spec.hostname)):
        return Problem("UnsupportedValue", f"{where}.hostname: {problem}")
    if spec.protocol == "HTTP" and spec.tls is not None:
        return Problem("UnsupportedValue", f"{where}.tls must not be set on an HTTP listener")
    if spec.protocol == "HTTPS" and spec.tls is None:
        return Problem(
            "UnsupportedValue", f"{where}.tls is required on an HTTPS listener (mode Terminate with certificateRefs)"
        )
    if spec.tls is not None and spec.tls.mode != "Terminate":
        return Problem("UnsupportedValue", f"{where}.tls.mode {spec.tls.mode} is not supported on HTTPS; use Terminate")
    return None


def _kind_problems(spec: res.GatewayListener, where: str) -> list[Problem]:
    invalid = [k for k in spec.allowed_routes.kinds if k != ROUTE_KIND]
    if not invalid:
        return []
    names = ", ".join(kind_label(k.kind, k.group) for k in invalid)
    return [
        Problem(
            "InvalidRouteKinds",
            f"{where}.allowedRoutes.kinds: {names} not supported; only HTTPRoute (group {res.GATEWAY_GROUP})",
        )
    ]


def _mark_duplicate_names(checked: dict[Key, list[_Listener]]) -> None:
    for listeners in checked.values():
        counts: dict[str, int] = defaultdict(int)
        for listener in listeners:
            counts[listener.spec.name] += 1
        for listener in listeners:
            if counts[listener.spec.name] > 1 and listener.accepted is None:
                listener.accepted = Problem(
                    "UnsupportedValue",
                    f"{listener.where}.name {listener.spec.name} is used by more than one listener of this Gateway",
                )


def _mark_conflicts(listeners: list[_Listener]) -> None:
    """Listeners on one port must share a protocol and differ in hostname; every listener in a
    conflict is rejected (there is no winner)."""
    by_port: dict[int, list[_Listener]] = defaultdict(list)
    for listener in listeners:
        if listener.accepted is None:
            by_port[listener.spec.port].append(listener)
    for port, group in by_port.items():
        protocols = sorted({listener.spec.protocol for listener in group})
        if len(protocols) > 1:
            for listener in group:
                listener.conflict = Problem(
                    "ProtocolConflict",
                    f"port {port} is used by listeners with protocols {' and '.join(protocols)}; "
                    "use one protocol per port",
                )
            continue
        by_hostname: dict[str | None, list[_Listener]] = defaultdict(list)
        for listener in group:
            by_hostname[listener.spec.hostname].append(listener)
        for hostname, same in by_hostname.items():
            if len(same) > 1:
                for listener in same:
                    listener.conflict = Problem(
                        "HostnameConflict",
                        f"{len(same)} listeners on port {port} have hostname {hostname or '(none)'}; "
                        "give each a distinct hostname",
                    )


def _listener_conditions(listener: _Listener) -> list[Condition]:
    name = listener.spec.name
    problem = listener.accepted or listener.conflict
    conditions = [
        Condition("Accepted", True, "Accepted", parent=name)
        if problem is None
        else Condition("Accepted", False, problem.reason, problem.message, parent=name),
        _resolved_refs(listener.refs, name),
    ]
    if listener.conflict is not None:
        conditions.append(
            Condition("Conflicted", True, listener.conflict.reason, listener.conflict.message, parent=name)
        )
    if listener.programmed:
        conditions.append(Condition("Programmed", True, "Programmed", parent=name))
    else:
        conditions.append(
            Condition(
                "Programmed", False, "Invalid", "the listener is not served; see its other conditions", parent=name
            )
        )
    return conditions


def _resolved_refs(problems: tuple[Problem, ...], name: str) -> Condition:
    if not problems:
        return Condition("ResolvedRefs", True, "ResolvedRefs", parent=name)
    return Condition("ResolvedRefs", False, problems[0].reason, "; ".join(p.message for p in problems), parent=name)


def _gateway_conditions(listeners: list[_Listener]) -> list[Condition]:
    programmed = [listener for listener in listeners if listener.programmed]
    if len(programmed) == len(listeners) and listeners:
        accepted = Condition("Accepted", True, "Accepted")
    else:
        bad = ", ".join(listener.spec.name for listener in listeners if not listener.programmed) or "(no listeners)"
        accepted = Condition("Accepted", bool(programmed), "ListenersNotValid", f"listeners not served: {bad}")
    if programmed:
        state = Condition("Programmed", True, "Programmed")
    else:
        state = Condition("Programmed", False, "Invalid", "no listener of this Gateway is served")
    conditions = [accepted, state]
    for listener in listeners:
        conditions += _listener_conditions(listener)
    return conditions

"""Gateways → listeners: protocol, port, hostname, TLS certificates, conflicts, allowedRoutes.

All Gateways bind ``Options.bind_address``, so listeners of different Gateways that share a
port share one socket: conflicts are therefore looked for across Gateways, not only within one.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from .. import ir
from ..config import resources as res
from .certs import listener_certificate
from .hostnames import hostname_problem
from .index import Index, Key
from .problems import Problem, kind_label
from .status import Condition, ObjectStatus, object_status

PROTOCOLS = ("HTTP", "HTTPS")
# What an HTTP or HTTPS listener takes when its allowedRoutes.kinds is empty, in this order
ROUTE_KINDS = (res.RouteGroupKind(kind="HTTPRoute"), res.RouteGroupKind(kind="GRPCRoute"))


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
    accepted: bool  # valid, though perhaps not served (e.g. its certificate is missing)
    programmed: bool  # served


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
    def valid(self) -> bool:
        """Accepted: the listener is well-formed and conflicts with no other."""
        return self.accepted is None and self.conflict is None

    @property
    def programmed(self) -> bool:
        no_certificate = self.spec.protocol == "HTTPS" and not self.certificates
        return self.valid and not no_certificate


@dataclass(frozen=True, slots=True)
class CheckedGateways:
    """Every Gateway's listeners, checked. The statuses wait for the routes: each listener
    reports how many attach to it."""

    index: Index
    checked: dict[Key, list[_Listener]]
    listeners: list[ListenerContext]

    def statuses(self, attached: Counter[str]) -> list[ObjectStatus]:
        """``attached``: listener IR name → number of routes attached to it."""
        return [
            object_status("Gateway", gateway, _gateway_conditions(key, self.checked[key], attached))
            for key, gateway in self.index.gateways.items()
        ]


def translate_gateways(index: Index, bind_address: str) -> CheckedGateways:
    checked = {
        key: [_check_listener(index, gw, i, spec) for i, spec in enumerate(gw.spec.listeners)]
        for key, gw in index.gateways.items()
    }
    _mark_duplicate_names(checked)
    _mark_conflicts([listener for listeners in checked.values() for listener in listeners])
    contexts = [_context(key, listener, bind_address) for key in index.gateways for listener in checked[key]]
    return CheckedGateways(index, checked, contexts)


def supported_kinds(protocol: str, allowed: res.AllowedRoutes) -> tuple[str, ...]:
    """The route kinds a listener takes (its status's supportedKinds): HTTPRoute and GRPCRoute
    on HTTP and HTTPS, unless ``allowedRoutes.kinds`` lists fewer; none on other protocols."""
    if protocol not in PROTOCOLS:
        return ()
    return tuple(k.kind for k in ROUTE_KINDS if not allowed.kinds or k in allowed.kinds)


def _context(key: Key, listener: _Listener, bind_address: str) -> ListenerContext:
    spec = listener.spec
    tls = ir.ListenerTLS(listener.certificates) if spec.protocol == "HTTPS" and listener.certificates else None
    return ListenerContext(
        gateway=key,
        name=spec.name,
        ir_name=listener_ir_name(key, spec.name),
        address=bind_address,
        port=spec.port,
        protocol=spec.protocol,
        hostname=spec.hostname,
        allowed_routes=spec.allowed_routes,
        tls=tls,
        accepted=listener.valid,
        programmed=listener.programmed,
    )


def listener_ir_name(gateway: Key, listener: str) -> str:
    return f"gateway/{gateway[0]}/{gateway[1]}/{listener}"


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
    invalid = [k for k in spec.allowed_routes.kinds if k not in ROUTE_KINDS]
    if not invalid:
        return []
    names = ", ".join(kind_label(k.kind, k.group) for k in invalid)
    return [
        Problem(
            "InvalidRouteKinds",
            f"{where}.allowedRoutes.kinds: {names} not supported; only HTTPRoute and GRPCRoute "
            f"(group {res.GATEWAY_GROUP})",
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


def _listener_conditions(listener: _Listener, attached: int) -> list[Condition]:
    """Accepted, ResolvedRefs, Conflicted (when it is), and Programmed, whose message carries
    the listener's attachedRoutes (routes whose parentRef selects it and that its
    allowedRoutes take, whether or not they are served) and its supportedKinds."""
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
    kinds = ", ".join(supported_kinds(listener.spec.protocol, listener.spec.allowed_routes)) or "(none)"
    summary = f"attachedRoutes: {attached}; supportedKinds: {kinds}"
    if listener.programmed:
        conditions.append(Condition("Programmed", True, "Programmed", summary, parent=name))
    else:
        message = f"the listener is not served; see its other conditions; {summary}"
        conditions.append(Condition("Programmed", False, "Invalid", message, parent=name))
    return conditions


def _resolved_refs(problems: tuple[Problem, ...], name: str) -> Condition:
    if not problems:
        return Condition("ResolvedRefs", True, "ResolvedRefs", parent=name)
    return Condition("ResolvedRefs", False, problems[0].reason, "; ".join(p.message for p in problems), parent=name)


def _gateway_conditions(key: Key, listeners: list[_Listener], attached: Counter[str]) -> list[Condition]:
    """Accepted when at least one listener is (reason ListenersNotValid while any listener is
    not served); Programmed when at least one listener is served."""
    not_served = ", ".join(listener.spec.name for listener in listeners if not listener.programmed)
    if not listeners or not_served:
        accepted_any = any(listener.valid for listener in listeners)
        message = f"listeners not served: {not_served or '(no listeners)'}"
        accepted = Condition("Accepted", accepted_any, "ListenersNotValid", message)
    else:
        accepted = Condition("Accepted", True, "Accepted")
    if any(listener.programmed for listener in listeners):
        state = Condition("Programmed", True, "Programmed")
    else:
        state = Condition("Programmed", False, "Invalid", "no listener of this Gateway is served")
    conditions = [accepted, state]
    for listener in listeners:
        conditions += _listener_conditions(listener, attached[listener_ir_name(key, listener.spec.name)])
    return conditions

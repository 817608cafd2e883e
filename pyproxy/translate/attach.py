"""parentRefs → the listeners a route attaches to, with its hostnames on each."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import resources as res
from .gateways import PROTOCOLS, ListenerContext, supported_kinds
from .hostnames import effective_hostnames
from .index import Index, Key
from .problems import Problem, kind_label

IMPLICIT_PARENT = "implicit"


@dataclass(frozen=True, slots=True)
class Attachment:
    listener: ListenerContext
    hostnames: tuple[str, ...]  # effective virtual host names on that listener


@dataclass(frozen=True, slots=True)
class ParentResult:
    """One parentRef: where it attached, or why it did not (``problem``).

    ``counted`` are the accepted listeners the parentRef selects whose allowedRoutes take the
    route: they count it in their attachedRoutes even when the route is not served there (a
    listener without its certificate, no hostname in common), as the Gateway API defines that
    count and Envoy Gateway computes it."""

    label: str | None  # None when the route has no parentRefs
    attachments: tuple[Attachment, ...] = ()
    problem: Problem | None = None
    counted: tuple[ListenerContext, ...] = ()


def attach_implicit(route: res.RouteResource, listener: ListenerContext) -> list[ParentResult]:
    """Without Gateways every route attaches to the implicit listener, whatever it names."""
    hostnames = effective_hostnames(None, route.spec.hostnames)
    return [ParentResult(IMPLICIT_PARENT, (Attachment(listener, hostnames),))]


def attach_parents(
    index: Index, route: res.RouteResource, listeners: dict[Key, list[ListenerContext]]
) -> list[ParentResult]:
    if not route.spec.parent_refs:
        problem = Problem(
            "NoMatchingParent", "spec.parentRefs is empty; name the Gateway (and optionally its listener) to attach to"
        )
        return [ParentResult(None, problem=problem)]
    return [
        _attach(index, route, ref, f"spec.parentRefs[{i}]", listeners) for i, ref in enumerate(route.spec.parent_refs)
    ]


def parent_label(ref: res.ParentReference, route_namespace: str) -> str:
    label = f"{ref.kind.lower()}/{ref.namespace or route_namespace}/{ref.name}"
    if ref.section_name:
        label += f"/{ref.section_name}"
    return label + (f":{ref.port}" if ref.port is not None else "")


def _attach(
    index: Index,
    route: res.RouteResource,
    ref: res.ParentReference,
    where: str,
    listeners: dict[Key, list[ListenerContext]],
) -> ParentResult:
    """In the order Envoy Gateway checks: the parent exists and has the listeners the ref
    names (NoMatchingParent), they allow the route (NotAllowedByListeners), they are served
    (NoMatchingParent), their hostnames meet the route's (NoMatchingListenerHostname)."""
    route_ns = route.metadata.namespace
    label = parent_label(ref, route_ns)
    gateway = (ref.namespace or route_ns, ref.name)
    if ref.group != res.GATEWAY_GROUP or ref.kind != "Gateway":
        return ParentResult(
            label,
            problem=Problem(
                "UnsupportedValue", f"{where}: kind {kind_label(ref.kind, ref.group)} is not supported; name a Gateway"
            ),
        )
    if gateway not in index.gateways:
        return ParentResult(
            label, problem=Problem("NoMatchingParent", f"{where}: Gateway {gateway[0]}/{gateway[1]} not found")
        )
    selected, problem = _select(listeners[gateway], ref, where)
    if problem is not None:
        return ParentResult(label, problem=problem)
    refusals = {c.name: _refusal(index, c, type(route).__name__, route_ns) for c in selected}
    allowed = tuple(c for c in selected if refusals[c.name] is None)
    if not allowed:
        reasons = "; ".join(f"listener {name} {why}" for name, why in refusals.items())
        return ParentResult(label, problem=Problem("NotAllowedByListeners", f"{where}: {reasons}"))
    attachments, problem = _on_served(allowed, route, where)
    return ParentResult(label, attachments, problem, tuple(c for c in allowed if c.accepted))


def _on_served(
    allowed: tuple[ListenerContext, ...], route: res.RouteResource, where: str
) -> tuple[tuple[Attachment, ...], Problem | None]:
    """The attachments of a route to the served ones of the listeners that allow it."""
    served = [c for c in allowed if c.programmed]
    if not served:
        names = ", ".join(c.name for c in allowed)
        return (), Problem("NoMatchingParent", f"{where}: listener(s) {names} are not served; see the Gateway's status")
    attachments = tuple(
        Attachment(c, hosts) for c in served if (hosts := effective_hostnames(c.hostname, route.spec.hostnames))
    )
    if not attachments:
        names = ", ".join(f"{c.name} ({c.hostname})" for c in served)
        return (), Problem(
            "NoMatchingListenerHostname",
            f"{where}: no spec.hostnames entry intersects the hostname of listener(s) {names}",
        )
    return attachments, None


def _select(
    candidates: list[ListenerContext], ref: res.ParentReference, where: str
) -> tuple[list[ListenerContext], Problem | None]:
    """The listeners ``ref`` names by sectionName and port."""
    if ref.section_name is not None:
        candidates = [c for c in candidates if c.name == ref.section_name]
        if not candidates:
            return [], Problem(
                "NoMatchingParent", f"{where}.sectionName: the Gateway has no listener named {ref.section_name}"
            )
    if ref.port is not None:
        candidates = [c for c in candidates if c.port == ref.port]
        if not candidates:
            which = f"listener {ref.section_name} is not" if ref.section_name else "no listener of the Gateway is"
            return [], Problem("NoMatchingParent", f"{where}.port: {which} on port {ref.port}")
    if not candidates:
        return [], Problem("NoMatchingParent", f"{where}: the Gateway has no listeners")
    return candidates, None


def _refusal(index: Index, listener: ListenerContext, kind: str, route_namespace: str) -> str | None:
    """Why ``listener`` refuses a route of ``kind`` from ``route_namespace``, or None: its
    protocol takes no routes of that kind, or its allowedRoutes leave them out."""
    if listener.protocol not in PROTOCOLS:
        return f"has protocol {listener.protocol}, which takes no {kind}s"
    if kind not in supported_kinds(listener.protocol, listener.allowed_routes):
        return f"does not list {kind} in allowedRoutes.kinds"
    namespaces = listener.allowed_routes.namespaces
    if namespaces.from_ == "Same" and route_namespace != listener.gateway[0]:
        return f"allows routes only from its own namespace {listener.gateway[0]} (allowedRoutes.namespaces.from: Same)"
    if namespaces.from_ == "Selector" and not (
        namespaces.selector is not None
        and selector_matches(namespaces.selector, index.namespace_labels(route_namespace))
    ):
        return f"does not select namespace {route_namespace} (allowedRoutes.namespaces.selector)"
    return None


def selector_matches(selector: res.LabelSelector, labels: dict[str, str]) -> bool:
    """Kubernetes label selector semantics: every matchLabels entry and every expression holds."""
    if any(labels.get(k) != v for k, v in selector.match_labels.items()):
        return False
    for expr in selector.match_expressions:
        present = expr.key in labels
        if expr.operator == "In" and not (present and labels[expr.key] in expr.values):
            return False
        if expr.operator == "NotIn" and present and labels[expr.key] in expr.values:
            return False
        if expr.operator == "Exists" and not present:
            return False
        if expr.operator == "DoesNotExist" and present:
            return False
    return True

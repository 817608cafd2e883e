"""HTTPRoutes and GRPCRoutes: rules → routes, parentRefs → listeners and virtual hosts, and
route status. Both kinds attach alike; only their rules differ (``rules.py``,
``grpcroutes.py``)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from ..config import resources as res
from .attach import ParentResult, attach_implicit, attach_parents
from .destinations import Destinations
from .gateways import ListenerContext
from .grpcroutes import translate_grpc_rules
from .hostnames import hostname_problem
from .index import Index, Key
from .precedence import Ranked
from .problems import Problem
from .rules import translate_rules
from .status import Condition, ObjectStatus, object_status
from .trafficpolicies import BackendPolicies

# listener IR name → virtual host name → its routes, each with its precedence
RouteTable = dict[str, dict[str, list[Ranked]]]


@dataclass(slots=True)
class RoutesResult:
    table: RouteTable
    statuses: list[ObjectStatus]
    attached: Counter[str]  # listener IR name → how many routes attach to it (attachedRoutes)


@dataclass(slots=True)
class _Translated:
    """A route's rules, translated once whatever it attaches to."""

    entries: list[Ranked] = field(default_factory=list)
    invalid: Problem | None = None  # the whole route is rejected
    dropped: list[Problem] = field(default_factory=list)
    ref_problems: list[Problem] = field(default_factory=list)
    note: str = ""  # said on an accepted route


def translate_routes(
    index: Index,
    listeners: list[ListenerContext],
    destinations: Destinations,
    implicit: ListenerContext | None,
    policies: BackendPolicies,
) -> RoutesResult:
    """Attach every HTTPRoute and GRPCRoute; ``implicit`` is the listener every route attaches
    to when the config has no Gateway (None otherwise). On each listener a route's rules are
    shaped by the BackendTrafficPolicy that governs them there."""
    by_gateway: dict[Key, list[ListenerContext]] = defaultdict(list)
    for listener in listeners:
        by_gateway[listener.gateway].append(listener)
    out = RoutesResult(defaultdict(lambda: defaultdict(list)), [], Counter())
    routes: list[res.RouteResource] = [*index.routes.values(), *index.grpc_routes.values()]
    for route in routes:
        translated = _translate(route, destinations)
        parents = attach_implicit(route, implicit) if implicit else attach_parents(index, route, by_gateway)
        if translated.invalid is None:
            _add_to_table(out.table, route, translated, parents, policies)
        out.attached.update({listener.ir_name for parent in parents for listener in parent.counted})
        out.statuses.append(object_status(type(route).__name__, route, _conditions(translated, parents)))
    return out


def _translate(route: res.RouteResource, destinations: Destinations) -> _Translated:
    out = _Translated()
    for k, hostname in enumerate(route.spec.hostnames):
        if problem := hostname_problem(hostname):
            out.invalid = Problem("UnsupportedValue", f"spec.hostnames[{k}]: {problem}")
            return out
    if isinstance(route, res.HTTPRoute):
        outcomes = translate_rules(route, destinations)
    else:
        outcomes = translate_grpc_rules(route, destinations)
    for outcome in outcomes:
        if isinstance(outcome, Problem):
            out.dropped.append(outcome)
            continue
        out.entries += outcome.routes
        out.ref_problems += outcome.ref_problems
    if not outcomes:
        out.note = "spec.rules is empty: the route routes no request"
    elif len(out.dropped) == len(outcomes):
        out.invalid = Problem(
            out.dropped[0].reason, "every rule is invalid: " + "; ".join(p.message for p in out.dropped)
        )
    return out


def _add_to_table(
    table: RouteTable,
    route: res.RouteResource,
    translated: _Translated,
    parents: list[ParentResult],
    policies: BackendPolicies,
) -> None:
    """A route reached through several parentRefs joins each listener once."""
    hostnames: dict[str, set[str]] = defaultdict(set)
    contexts: dict[str, ListenerContext] = {}
    for parent in parents:
        for attachment in parent.attachments:
            hostnames[attachment.listener.ir_name].update(attachment.hostnames)
            contexts[attachment.listener.ir_name] = attachment.listener
    for listener, hosts in hostnames.items():
        entries = policies.shape(route, translated.entries, contexts[listener])
        for host in hosts:
            table[listener][host] += entries


def _conditions(translated: _Translated, parents: list[ParentResult]) -> list[Condition]:
    conditions: list[Condition] = []
    for parent in parents:
        conditions.append(_accepted(translated, parent))
        conditions.append(_resolved_refs(translated.ref_problems, parent.label))
        if translated.dropped and translated.invalid is None:
            message = "rules dropped (their matches are not routed): " + "; ".join(
                p.message for p in translated.dropped
            )
            reason = translated.dropped[0].reason
            conditions.append(Condition("PartiallyInvalid", True, reason, message, parent=parent.label))
    return conditions


def _accepted(translated: _Translated, parent: ParentResult) -> Condition:
    problem = parent.problem or translated.invalid
    if problem is not None:
        return Condition("Accepted", False, problem.reason, problem.message, parent=parent.label)
    return Condition("Accepted", True, "Accepted", translated.note, parent=parent.label)


def _resolved_refs(problems: list[Problem], label: str | None) -> Condition:
    if not problems:
        return Condition("ResolvedRefs", True, "ResolvedRefs", parent=label)
    message = "; ".join(p.message for p in problems)
    return Condition("ResolvedRefs", False, problems[0].reason, message, parent=label)

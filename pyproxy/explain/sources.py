"""From an IR route back to what it was written as: its route object, rule and match (the IR
name says which), the rule's backendRefs, and the precedence key the translator sorted it
by (``translate/precedence.py``, computed again by the same functions)."""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .. import ir
from ..config import resources as res
from ..translate import precedence
from ..translate.grpcroutes import DEFAULT_MATCHES as GRPC_DEFAULT_MATCHES
from ..translate.rules import DEFAULT_RULES
from ..translate.status import ObjectStatus

_ROUTE_NAME = re.compile(r"^(httproute|grpcroute)/([^/]+)/([^/]+)/rule/(\d+)/match/(\d+)$")
_KINDS = {"httproute": "HTTPRoute", "grpcroute": "GRPCRoute"}


@dataclass(frozen=True, slots=True)
class RouteId:
    """Where an IR route came from: ``httproute/<ns>/<name>/rule/<i>/match/<j>``."""

    kind: str  # HTTPRoute or GRPCRoute
    namespace: str
    name: str
    rule: int
    match: int

    @property
    def label(self) -> str:
        """``httproute/<ns>/<name>``, as route names spell it."""
        return f"{self.kind.lower()}/{self.namespace}/{self.name}"

    def describe(self) -> str:
        return f"{self.label} rule {self.rule} match {self.match}"

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name, "rule": self.rule,
                "match": self.match}


def route_id(ir_name: str) -> RouteId | None:
    found = _ROUTE_NAME.match(ir_name)
    if found is None:
        return None
    kind, ns, name, rule, match = found.groups()
    return RouteId(_KINDS[kind], ns, name, int(rule), int(match))


class Sources:
    """The route objects of the configuration, and the statuses translate gave them."""

    def __init__(self, resources: Iterable[object], statuses: Iterable[ObjectStatus]) -> None:
        self.routes: dict[tuple[str, str, str], res.RouteResource] = {}
        for resource in resources:
            if isinstance(resource, res.HTTPRoute | res.GRPCRoute):
                meta = resource.metadata
                self.routes[(type(resource).__name__, meta.namespace, meta.name)] = resource
        self.statuses = {(s.kind, s.namespace, s.name): s for s in statuses}

    def route(self, rid: RouteId) -> res.RouteResource | None:
        return self.routes.get((rid.kind, rid.namespace, rid.name))

    def rule(self, rid: RouteId) -> res.HTTPRouteRule | res.GRPCRouteRule | None:
        route = self.route(rid)
        if route is None:
            return None
        rules: tuple[res.HTTPRouteRule | res.GRPCRouteRule, ...] = route.spec.rules
        if isinstance(route, res.HTTPRoute) and not rules:
            rules = DEFAULT_RULES
        return rules[rid.rule] if rid.rule < len(rules) else None

    def ranked(self, rid: RouteId, route: ir.Route) -> precedence.Ranked | None:
        """The route's precedence as the translator computed it."""
        source = self.route(rid)
        if source is None:
            return None
        if isinstance(source, res.HTTPRoute):
            return precedence.http_ranked(route, source, rid.rule, rid.match)
        rule = self.rule(rid)
        assert isinstance(rule, res.GRPCRouteRule)
        matches = rule.matches or GRPC_DEFAULT_MATCHES
        return precedence.grpc_ranked(route, matches[rid.match].method, source, rid.rule, rid.match)

    def created(self, rid: RouteId) -> str | None:
        source = self.route(rid)
        return source.metadata.creation_timestamp if source is not None else None

    def backend_problem(self, rid: RouteId, ref: int) -> str | None:
        """Why backendRef ``ref`` of the rule is invalid, as the route's ResolvedRefs says."""
        status = self.statuses.get((rid.kind, rid.namespace, rid.name))
        if status is None:
            return None
        where = re.escape(f"spec.rules[{rid.rule}].backendRefs[{ref}]: ")
        pattern = re.compile(where + r"(.*?); its share of requests gets 500")
        for cond in status.conditions:
            if cond.type == "ResolvedRefs" and (found := pattern.search(cond.message)):
                return found.group(1)
        return None

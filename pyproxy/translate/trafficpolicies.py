"""BackendTrafficPolicy: which policy governs each route rule on each listener, and what it
does to the rule's routes.

Attachment and precedence are ``policytargets.py``'s (rule > route > listener > Gateway, the
oldest policy per target). The policy that applies to a rule applies whole, as in Envoy
Gateway (no merging with less specific ones):

- the Destinations its backendRefs reach become destinations of their own, named
  ``<destination>@btp/<ns>/<policy>``, with the policy's load balancing, health checks,
  circuit breaker, connect and idle timeouts and DNS settings; mirrors keep the plain one;
- its ``retry`` and ``timeout.http.requestTimeout`` set the route's retry and request
  timeout, unless the HTTPRoute rule sets its own ``retry`` or ``timeouts`` (Envoy Gateway's
  xDS translator prefers the Gateway API fields: ``HTTPRoute.GetRetry``,
  ``getEffectiveRequestTimeout``);
- a policy with an invalid value still governs its rules, which answer 500 (Envoy Gateway's
  direct response for a route whose BackendTrafficPolicy has errors).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .. import ir
from ..config import resources as res
from .backendtraffic import Traffic, translate_traffic
from .gateways import ListenerContext
from .index import Index
from .policytargets import ROUTE_KINDS, Attachments, Scope, attach, listener_scopes
from .precedence import Ranked
from .rules import DEFAULT_RULES, INVALID_BACKEND_STATUS
from .status import ObjectStatus, object_status

KIND = "BackendTrafficPolicy"


@dataclass(slots=True)
class BackendPolicies:
    index: Index
    attachments: Attachments[Traffic]
    traffic: dict[str, Traffic]  # "<namespace>/<name>" -> what the policy asks for
    _routes: dict[tuple[str, str], ir.Route] = field(default_factory=dict)
    _destinations: dict[tuple[str, str], ir.Destination] = field(default_factory=dict)

    def shape(self, route: res.RouteResource, entries: list[Ranked], listener: ListenerContext) -> list[Ranked]:
        """``entries`` (the routes of ``route``'s rules) as served on ``listener``."""
        kind, ns, name = type(route).__name__, route.metadata.namespace, route.metadata.name
        rules: tuple[res.HTTPRouteRule | res.GRPCRouteRule, ...] = route.spec.rules
        if isinstance(route, res.HTTPRoute) and not rules:
            rules = DEFAULT_RULES
        shaped: list[Ranked] = []
        for entry in entries:
            rule = rules[entry.rule]
            scopes: list[Scope] = [("rule", kind, ns, name, rule.name)] if rule.name else []
            scopes += [("route", kind, ns, name), *listener_scopes(listener)]
            claim = self.attachments.effective(scopes)
            if claim is None:
                shaped.append(entry)
            else:
                shaped.append(dataclasses.replace(entry, route=self._route(entry.route, rule, claim.value)))
        return shaped

    def _route(self, route: ir.Route, rule: res.HTTPRouteRule | res.GRPCRouteRule, traffic: Traffic) -> ir.Route:
        key = (route.name, traffic.policy)
        if key not in self._routes:
            self._routes[key] = self._apply(route, rule, traffic)
        return self._routes[key]

    def _apply(self, route: ir.Route, rule: res.HTTPRouteRule | res.GRPCRouteRule, traffic: Traffic) -> ir.Route:
        if traffic.problems:
            return dataclasses.replace(route, action=ir.DirectResponse(INVALID_BACKEND_STATUS))
        changes = {name: value for name, value in traffic.route.items() if not _rule_sets(rule, name)}
        if isinstance(route.action, ir.Forward):
            changes["action"] = ir.Forward(tuple(
                dataclasses.replace(backend, destination=self._destination(backend.destination, traffic))
                if backend.destination is not None else backend
                for backend in route.action.backends
            ))
        return dataclasses.replace(route, **changes)

    def _destination(self, destination: ir.Destination, traffic: Traffic) -> ir.Destination:
        """One shaped destination per (destination, policy), shared by every route reaching it."""
        key = (destination.name, traffic.policy)
        if key not in self._destinations:
            self._destinations[key] = traffic.shape(destination)
        return self._destinations[key]

    def statuses(self) -> list[ObjectStatus]:
        """Call after every route was shaped: Overridden is known only then."""
        statuses = []
        for policy in self.index.backend_traffic_policies.values():
            name = f"{policy.metadata.namespace}/{policy.metadata.name}"
            problems = self.traffic[name].problems
            invalid = "; ".join(problems) + ". Requests to the routes it governs answer 500" if problems else None
            statuses.append(object_status(KIND, policy, self.attachments.conditions(name, invalid)))
        return statuses


def _rule_sets(rule: res.HTTPRouteRule | res.GRPCRouteRule, route_field: str) -> bool:
    """Whether the HTTPRoute rule sets ``retry`` or ``timeouts`` itself (and so wins)."""
    if not isinstance(rule, res.HTTPRouteRule):
        return False
    if route_field == "retry":
        return rule.retry is not None
    timeouts = rule.timeouts
    return timeouts is not None and (timeouts.request is not None or timeouts.backend_request is not None)


def translate_backend_policies(index: Index) -> BackendPolicies:
    attachments, traffic = attach(index.backend_traffic_policies.values(), KIND, ("Gateway", *ROUTE_KINDS), index,
                                  translate_traffic)
    return BackendPolicies(index, attachments, traffic)

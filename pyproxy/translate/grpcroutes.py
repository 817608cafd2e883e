"""GRPCRoute rules → ``ir.Route``: the same routes HTTPRoutes give, matching the gRPC path.

A gRPC call is a POST of ``/<service>/<method>`` (its method is not matched: the spec does
not ask for it). A method match becomes a path match:

- Exact service and method: Exact ``/<service>/<method>``;
- Exact service alone: PathPrefix ``/<service>`` (element-wise: ``/<service>/<any method>``);
- Exact method alone: RegularExpression ``/[^/]+/<method>``;
- RegularExpression: ``/(?:<service>)/(?:<method>)``, ``[^/]+`` for the part left out (each
  pattern grouped, so that an alternation stays inside its part);
- no method match: every path (PathPrefix ``/``).

config/ has checked the names (protobuf names when Exact: no ``/``, and nothing a regular
expression reads specially in a method name) and the patterns (RE2). Header matches are
HTTPRoute's. There are no timeouts or retries in a
GRPCRoute: its routes have the defaults of an HTTPRoute rule that sets none (15 s).
"""

from __future__ import annotations

from .. import ir
from ..config import resources as res
from .destinations import Destinations, Referrer
from .matches import header_matches
from .precedence import grpc_ranked
from .problems import Problem, attempt
from .rules import RuleOutcome, forwarding, rule_action

ANY_NAME = "[^/]+"
EVERY_PATH = ir.PathMatch("PathPrefix", "/")
DEFAULT_MATCHES = (res.GRPCRouteMatch(),)


def translate_grpc_rules(route: res.GRPCRoute, destinations: Destinations) -> list[RuleOutcome | Problem]:
    """Each rule's routes, or the Problem that drops it. A GRPCRoute without rules routes
    nothing."""
    return [attempt(translate_grpc_rule, route, i, rule, destinations) for i, rule in enumerate(route.spec.rules)]


def translate_grpc_rule(
    route: res.GRPCRoute, i: int, rule: res.GRPCRouteRule, destinations: Destinations
) -> RuleOutcome:
    """Raises ``Invalid`` when the rule must be dropped."""
    where = f"spec.rules[{i}]"
    outcome = RuleOutcome()
    plan, backends = forwarding(rule, where, destinations, Referrer("GRPCRoute", route.metadata.namespace), outcome)
    ns, name = route.metadata.namespace, route.metadata.name
    for j, spec in enumerate(rule.matches or DEFAULT_MATCHES):
        match = ir.Match(path=method_path(spec.method), headers=header_matches(spec.headers))
        ir_route = ir.Route(
            name=f"grpcroute/{ns}/{name}/rule/{i}/match/{j}",
            match=match,
            action=rule_action(plan, backends, match, f"{where}.matches[{j}]"),
            request_headers=plan.request_headers,
            response_headers=plan.response_headers,
            mirrors=tuple(plan.mirrors),
        )
        outcome.routes.append(grpc_ranked(ir_route, spec.method, route, i, j))
    return outcome


def method_path(spec: res.GRPCMethodMatch | None) -> ir.PathMatch:
    """The path match of a method match (an empty service or method is left out)."""
    if spec is None:
        return EVERY_PATH
    service, method = spec.service or None, spec.method or None
    if spec.type == "RegularExpression":
        return ir.PathMatch("RegularExpression", f"/{_part(service)}/{_part(method)}")
    if service and method:
        return ir.PathMatch("Exact", f"/{service}/{method}")
    if service:
        return ir.PathMatch("PathPrefix", f"/{service}")
    return ir.PathMatch("RegularExpression", f"/{ANY_NAME}/{method}")


def _part(pattern: str | None) -> str:
    return f"(?:{pattern})" if pattern else ANY_NAME

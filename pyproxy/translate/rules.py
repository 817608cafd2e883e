"""One HTTPRoute rule → one ``ir.Route`` per match, each with its precedence key; the
filters, backendRefs and action every route kind's rules share."""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import ir
from ..config import resources as res
from .destinations import Destinations, Referrer
from .durations import parse_duration
from .filters import HEADER_FILTERS, FilterPlan, Located, filter_header_mutation, path_replacement, plan_filters
from .matches import translate_match
from .precedence import Ranked, http_ranked
from .problems import Invalid, Problem, attempt

MAX_WEIGHT = 1_000_000
INVALID_BACKEND_STATUS = 500
DEFAULT_RULES = (res.HTTPRouteRule(),)
DEFAULT_MATCHES = (res.HTTPRouteMatch(),)
# Envoy Gateway's retry policy where HTTPRoute leaves a field unset (xds translator route.go).
DEFAULT_RETRIES = 2
DEFAULT_RETRY_CODES = (503,)

Rule = res.HTTPRouteRule | res.GRPCRouteRule
Filter = res.HTTPRouteFilter | res.GRPCRouteFilter
RouteBackendRef = res.HTTPBackendRef | res.GRPCBackendRef


@dataclass(slots=True)
class RuleOutcome:
    """The routes of a rule that was kept, and what its status should mention."""

    routes: list[Ranked] = field(default_factory=list)
    ref_problems: list[Problem] = field(default_factory=list)


def translate_rules(route: res.HTTPRoute, destinations: Destinations) -> list[RuleOutcome | Problem]:
    """Each rule's routes, or the Problem that drops it; without rules, the default one."""
    rules = route.spec.rules or DEFAULT_RULES
    return [attempt(translate_rule, route, i, rule, destinations) for i, rule in enumerate(rules)]


def translate_rule(route: res.HTTPRoute, i: int, rule: res.HTTPRouteRule, destinations: Destinations) -> RuleOutcome:
    """Raises ``Invalid`` when the rule must be dropped."""
    where = f"spec.rules[{i}]"
    matches = [translate_match(m, f"{where}.matches[{j}]") for j, m in enumerate(rule.matches or DEFAULT_MATCHES)]
    outcome = RuleOutcome()
    plan, backends = forwarding(rule, where, destinations, Referrer("HTTPRoute", route.metadata.namespace), outcome)
    timeouts = rule_timeouts(rule.timeouts, f"{where}.timeouts")
    retry = rule_retry(rule.retry, f"{where}.retry")
    ns, name = route.metadata.namespace, route.metadata.name
    for j, match in enumerate(matches):
        at = f"{where}.matches[{j}]"
        ir_route = ir.Route(
            name=f"httproute/{ns}/{name}/rule/{i}/match/{j}",
            match=match,
            action=rule_action(plan, backends, match, at),
            request_headers=plan.request_headers,
            response_headers=plan.response_headers,
            url_rewrite=_url_rewrite(plan, match, at),
            mirrors=tuple(plan.mirrors),
            timeouts=timeouts,
            retry=retry,
            cors=plan.cors,
        )
        outcome.routes.append(http_ranked(ir_route, route, i, j))
    return outcome


def forwarding(
    rule: Rule, where: str, destinations: Destinations, referrer: Referrer, outcome: RuleOutcome
) -> tuple[FilterPlan, tuple[ir.WeightedBackend, ...]]:
    """A rule's filters and backendRefs, whatever its route kind; what does not resolve is
    added to ``outcome.ref_problems``."""
    plan = plan_filters(_gather_filters(rule, where), destinations, referrer, where)
    outcome.ref_problems += plan.ref_problems
    return plan, _backends(rule, where, destinations, referrer, outcome)


def _gather_filters(rule: Rule, where: str) -> list[Located]:
    """The rule's filters, then its single backendRef's non-header filters.

    A RequestRedirect or URLRewrite on the only backendRef of a rule applies to every request
    of the rule, so it is the same as a rule filter. With several backendRefs each would need
    its own, which the IR does not express: the rule is rejected."""
    filters: tuple[Filter, ...] = rule.filters
    refs: tuple[RouteBackendRef, ...] = rule.backend_refs
    gathered: list[Located] = [(f"{where}.filters[{k}]", f) for k, f in enumerate(filters)]
    if refs and any(f.type == "RequestRedirect" for f in filters):
        raise Invalid(
            "IncompatibleFilters",
            f"{where}: a RequestRedirect filter cannot be combined with backendRefs; remove one of them",
        )
    for b, ref in enumerate(refs):
        ref_filters: tuple[Filter, ...] = ref.filters
        for k, spec in enumerate(ref_filters):
            at = f"{where}.backendRefs[{b}].filters[{k}]"
            if spec.type in HEADER_FILTERS:
                continue
            if len(refs) > 1:
                raise Invalid(
                    "UnsupportedValue",
                    f"{at}: a {spec.type} filter on a backendRef is supported only when the rule has a single "
                    f"backendRef; move it to {where}.filters",
                )
            gathered.append((at, spec))
    return gathered


def _backends(
    rule: Rule, where: str, destinations: Destinations, referrer: Referrer, outcome: RuleOutcome
) -> tuple[ir.WeightedBackend, ...]:
    backends: list[ir.WeightedBackend] = []
    refs: tuple[RouteBackendRef, ...] = rule.backend_refs
    for b, ref in enumerate(refs):
        at = f"{where}.backendRefs[{b}]"
        if not 0 <= ref.weight <= MAX_WEIGHT:
            raise Invalid("UnsupportedValue", f"{at}.weight {ref.weight} is not between 0 and {MAX_WEIGHT}")
        request_headers, response_headers = _backend_header_filters(ref, at)
        found = destinations.resolve(ref, referrer)
        if isinstance(found, Problem):
            outcome.ref_problems.append(Problem(found.reason, f"{at}: {found.message}; its share of requests gets 500"))
        backends.append(
            ir.WeightedBackend(
                ref.weight,
                None if isinstance(found, Problem) else found,
                INVALID_BACKEND_STATUS,
                request_headers,
                response_headers,
            )
        )
    return tuple(backends)


def _backend_header_filters(
    ref: RouteBackendRef, where: str
) -> tuple[ir.HeaderMutation | None, ir.HeaderMutation | None]:
    mutations: dict[str, ir.HeaderMutation] = {}
    filters: tuple[Filter, ...] = ref.filters
    for k, spec in enumerate(filters):
        at = f"{where}.filters[{k}]"
        if spec.type not in HEADER_FILTERS:
            continue
        if spec.type in mutations:
            raise Invalid("IncompatibleFilters", f"{at}: the {spec.type} filter may appear once per backendRef")
        mutations[spec.type] = filter_header_mutation((at, spec))
    return mutations.get("RequestHeaderModifier"), mutations.get("ResponseHeaderModifier")


def rule_action(plan: FilterPlan, backends: tuple[ir.WeightedBackend, ...], match: ir.Match, where: str) -> ir.Action:
    """Unresolvable ExtensionRef → 500; a redirect; else forward. When no valid backend would
    get traffic (no backendRefs, all invalid, or all weight 0) the rule answers 500."""
    if plan.unresolved_extension:
        return ir.DirectResponse(INVALID_BACKEND_STATUS)
    if plan.redirect is not None:
        spec = plan.redirect
        path = _path_modifier(spec.path, match, f"{plan.redirect_where}.path", where)
        return ir.Redirect(
            status_code=spec.status_code, scheme=spec.scheme, hostname=spec.hostname, port=spec.port, path=path
        )
    if not any(b.destination is not None and b.weight > 0 for b in backends):
        return ir.DirectResponse(INVALID_BACKEND_STATUS)
    return ir.Forward(backends)


def _url_rewrite(plan: FilterPlan, match: ir.Match, where: str) -> ir.URLRewrite | None:
    spec = plan.url_rewrite
    if spec is None:
        return None
    return ir.URLRewrite(
        hostname=spec.hostname, path=_path_modifier(spec.path, match, f"{plan.url_rewrite_where}.path", where)
    )


def _path_modifier(
    spec: res.HTTPPathModifier | None, match: ir.Match, where: str, match_where: str
) -> ir.PathModifier | None:
    """ReplacePrefixMatch replaces the match's own prefix, so the match must be a PathPrefix."""
    if spec is None:
        return None
    value = path_replacement(spec, where)
    if spec.type == "ReplaceFullPath":
        return ir.PathModifier("ReplaceFullPath", value)
    if match.path.kind != "PathPrefix":
        raise Invalid(
            "UnsupportedValue",
            f"{where}: ReplacePrefixMatch needs a PathPrefix match, but {match_where}.path is {match.path.kind}",
        )
    return ir.PathModifier("ReplacePrefixMatch", value, prefix=match.path.value)


def rule_timeouts(spec: res.HTTPRouteTimeouts | None, where: str) -> ir.Timeouts:
    """``request`` is the overall deadline of a request, retries included: unset → the 15 s
    default, ``0s`` → no limit. ``backendRequest`` limits each upstream attempt (Envoy
    Gateway's per-try timeout when the rule has a retry): unset or ``0s`` → no per-attempt
    limit. backendRequest may not exceed a set, non-zero request; with request unset, a longer
    backendRequest raises the overall limit to match, so that one attempt can use all of it
    (without retry Envoy Gateway's route timeout is then the backendRequest)."""
    if spec is None:
        return ir.Timeouts()
    request = _duration(spec.request, f"{where}.request")
    backend = _duration(spec.backend_request, f"{where}.backendRequest") or None
    if request and backend and backend > request:
        raise Invalid(
            "UnsupportedValue",
            f"{where}.backendRequest {spec.backend_request} is longer than {where}.request {spec.request}; "
            "make it shorter or equal",
        )
    if request is None:
        request = max(ir.DEFAULT_ROUTE_TIMEOUT, backend or 0.0)
    return ir.Timeouts(request=request or None, backend_request=backend)


def rule_retry(spec: res.HTTPRouteRetry | None, where: str) -> ir.Retry | None:
    """``attempts`` is the number of retries after the first try (Envoy Gateway's numRetries,
    2 when unset); ``codes`` (400-599) default to Envoy Gateway's 503; ``backoff`` unset
    leaves the wait to the data plane."""
    if spec is None:
        return None
    if spec.attempts is not None and spec.attempts < 0:
        raise Invalid("UnsupportedValue", f"{where}.attempts {spec.attempts} must not be negative")
    for k, code in enumerate(spec.codes):
        if not 400 <= code <= 599:
            raise Invalid("UnsupportedValue", f"{where}.codes[{k}] {code} is not an HTTP status between 400 and 599")
    return ir.Retry(
        retries=DEFAULT_RETRIES if spec.attempts is None else spec.attempts,
        codes=tuple(dict.fromkeys(spec.codes)) or DEFAULT_RETRY_CODES,
        backoff=_duration(spec.backoff, f"{where}.backoff"),
    )


def _duration(text: str | None, where: str) -> float | None:
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise Invalid("UnsupportedValue", f"{where}: {exc}") from exc

"""HTTPRoute and GRPCRoute filters → header mutations, URL rewrite, redirect, mirrors, CORS.

Invalid filters raise ``Invalid`` (the rule is dropped). Mirrors whose backendRef cannot be
resolved are dropped alone, with a ResolvedRefs problem. ExtensionRef filters cannot be
resolved (pyproxy has no extension kinds) and make the rule answer 500, as the spec requires.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .. import ir
from ..config import resources as res
from .cors import translate_cors
from .destinations import Destinations, Referrer
from .hostnames import hostname_problem
from .problems import Invalid, Problem, kind_label

HEADER_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier")
_AT_MOST_ONCE = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite", "CORS")
_PAYLOAD = {
    "RequestHeaderModifier": ("request_header_modifier", "requestHeaderModifier"),
    "ResponseHeaderModifier": ("response_header_modifier", "responseHeaderModifier"),
    "RequestMirror": ("request_mirror", "requestMirror"),
    "RequestRedirect": ("request_redirect", "requestRedirect"),
    "URLRewrite": ("url_rewrite", "urlRewrite"),
    "ExtensionRef": ("extension_ref", "extensionRef"),
    "CORS": ("cors", "cors"),
}

# (YAML path of the filter, filter); a GRPCRouteFilter's types are a subset of HTTPRoute's
Located = tuple[str, res.HTTPRouteFilter | res.GRPCRouteFilter]

# Headers a modifier may not set, add or remove. The proxy writes Host and frames every message
# itself; a second Host, or a Content-Length beside a Transfer-Encoding, would let the upstream
# read the request differently from us (request smuggling). Envoy Gateway refuses Host (and
# pseudo-headers, which are no header names: config/ refuses them) with UnsupportedValue.
_HOST = "host"
_CONNECTION_HEADERS = frozenset(
    {"connection", "content-length", "transfer-encoding", "keep-alive", "proxy-connection", "upgrade", "te", "trailer"}
)
_VERBS = {"set": "set", "add": "added", "remove": "removed"}


@dataclass(slots=True)
class FilterPlan:
    """What a rule's filters ask for. The path of a rewrite or redirect depends on each match
    (ReplacePrefixMatch replaces that match's prefix), so those stay specs until then."""

    request_headers: ir.HeaderMutation | None = None
    response_headers: ir.HeaderMutation | None = None
    url_rewrite: res.HTTPURLRewriteFilter | None = None
    url_rewrite_where: str = ""
    redirect: res.HTTPRequestRedirectFilter | None = None
    redirect_where: str = ""
    mirrors: list[ir.Mirror] = field(default_factory=list)
    cors: ir.Cors | None = None
    unresolved_extension: bool = False
    ref_problems: list[Problem] = field(default_factory=list)


def payload(located: Located) -> object:
    """The filter's settings object; Invalid when the one its type needs is missing."""
    where, spec = located
    attr, yaml_name = _PAYLOAD[spec.type]
    value = getattr(spec, attr)
    if value is None:
        raise Invalid("UnsupportedValue", f"{where}.{yaml_name} is required when type is {spec.type}")
    return value


def plan_filters(filters: list[Located], destinations: Destinations, referrer: Referrer, rule_where: str) -> FilterPlan:
    _check_repeats(filters, rule_where)
    plan = FilterPlan()
    for located in filters:
        _apply(plan, located, destinations, referrer)
    if plan.redirect is not None and plan.url_rewrite is not None:
        raise Invalid(
            "IncompatibleFilters", f"{rule_where}: RequestRedirect and URLRewrite filters cannot be combined; keep one"
        )
    return plan


def _check_repeats(filters: list[Located], rule_where: str) -> None:
    counts: Counter[str] = Counter(spec.type for _, spec in filters)
    for kind in _AT_MOST_ONCE:
        if counts[kind] > 1:
            raise Invalid(
                "IncompatibleFilters",
                f"{rule_where}: the {kind} filter appears {counts[kind]} times; it may appear once per rule",
            )


def _apply(plan: FilterPlan, located: Located, destinations: Destinations, referrer: Referrer) -> None:
    where, spec = located
    value = payload(located)
    if spec.type == "RequestHeaderModifier":
        plan.request_headers = filter_header_mutation(located)
    elif spec.type == "ResponseHeaderModifier":
        plan.response_headers = filter_header_mutation(located)
    elif spec.type == "URLRewrite":
        plan.url_rewrite_where = f"{where}.urlRewrite"
        plan.url_rewrite = _checked_rewrite(value, plan.url_rewrite_where)  # type: ignore[arg-type]
    elif spec.type == "RequestRedirect":
        plan.redirect_where = f"{where}.requestRedirect"
        plan.redirect = _checked_redirect(value, plan.redirect_where)  # type: ignore[arg-type]
    elif spec.type == "RequestMirror":
        _add_mirror(plan, value, f"{where}.requestMirror", destinations, referrer)  # type: ignore[arg-type]
    elif spec.type == "CORS":
        plan.cors = translate_cors(value, f"{where}.cors")  # type: ignore[arg-type]
    else:
        _add_extension_ref(plan, value, f"{where}.extensionRef")  # type: ignore[arg-type]


def _add_extension_ref(plan: FilterPlan, ref: res.LocalObjectReference, where: str) -> None:
    plan.unresolved_extension = True
    plan.ref_problems.append(
        Problem(
            "InvalidKind",
            f"{where}: {kind_label(ref.kind, ref.group)} {ref.name} cannot be resolved: "
            "pyproxy supports no ExtensionRef filters, so the rule answers 500",
        )
    )


def filter_header_mutation(located: Located) -> ir.HeaderMutation:
    """The mutation of a RequestHeaderModifier or ResponseHeaderModifier filter."""
    where, spec = located
    return _header_mutation(payload(located), f"{where}.{_PAYLOAD[spec.type][1]}")  # type: ignore[arg-type]


def _header_mutation(spec: res.HTTPHeaderFilter, where: str) -> ir.HeaderMutation:
    """Names (tokens, checked by config/) are lower-cased; a name may have only one action
    (set, add or remove); Host and the connection and framing headers are the proxy's own."""
    seen: set[str] = set()

    def unique(name: str, action: str, at: str) -> str:
        lowered = name.lower()
        if lowered == _HOST:
            raise Invalid(
                "UnsupportedValue",
                f"{at}: {name!r} cannot be {_VERBS[action]} by a header modifier; the proxy writes Host "
                "(a URLRewrite filter's hostname changes it)",
            )
        if lowered in _CONNECTION_HEADERS:
            raise Invalid(
                "UnsupportedValue",
                f"{at}: {name!r} cannot be {_VERBS[action]} by a header modifier; the proxy writes the connection "
                "and framing headers itself",
            )
        if lowered in seen:
            raise Invalid(
                "UnsupportedValue",
                f"{at}: header {name!r} already has an action in this filter; use one of set, add, remove per header",
            )
        seen.add(lowered)
        return lowered

    return ir.HeaderMutation(
        set=tuple((unique(h.name, "set", f"{where}.set[{k}].name"), h.value) for k, h in enumerate(spec.set)),
        add=tuple((unique(h.name, "add", f"{where}.add[{k}].name"), h.value) for k, h in enumerate(spec.add)),
        remove=tuple(unique(name, "remove", f"{where}.remove[{k}]") for k, name in enumerate(spec.remove)),
    )


def _checked_rewrite(spec: res.HTTPURLRewriteFilter, where: str) -> res.HTTPURLRewriteFilter:
    _check_hostname(spec.hostname, f"{where}.hostname")
    if spec.path is not None:
        path_replacement(spec.path, f"{where}.path")
    return spec


def _checked_redirect(spec: res.HTTPRequestRedirectFilter, where: str) -> res.HTTPRequestRedirectFilter:
    _check_hostname(spec.hostname, f"{where}.hostname")
    if spec.port is not None and not 0 < spec.port < 65536:
        raise Invalid("UnsupportedValue", f"{where}.port {spec.port} is not between 1 and 65535")
    if spec.path is not None:
        path_replacement(spec.path, f"{where}.path")
    return spec


def _check_hostname(hostname: str | None, where: str) -> None:
    if hostname is not None and (problem := hostname_problem(hostname, wildcard=False)):
        raise Invalid("UnsupportedValue", f"{where}: {problem}")


def path_replacement(spec: res.HTTPPathModifier, where: str) -> str:
    """The replacement value of a path modifier, checked: present for its type, absolute."""
    if spec.type == "ReplaceFullPath":
        value, yaml_name = spec.replace_full_path, "replaceFullPath"
    else:
        value, yaml_name = spec.replace_prefix_match, "replacePrefixMatch"
    if value is None:
        raise Invalid("UnsupportedValue", f"{where}.{yaml_name} is required when type is {spec.type}")
    if not value.startswith("/"):
        raise Invalid("UnsupportedValue", f"{where}.{yaml_name} {value!r} must start with '/'")
    return value


def _add_mirror(
    plan: FilterPlan, spec: res.HTTPRequestMirrorFilter, where: str, destinations: Destinations, referrer: Referrer
) -> None:
    percent = _mirror_percent(spec, where)
    found = destinations.resolve(spec.backend_ref, referrer)
    if isinstance(found, Problem):
        plan.ref_problems.append(Problem(found.reason, f"{where}.backendRef: {found.message}; the mirror is dropped"))
    else:
        plan.mirrors.append(ir.Mirror(destination=found, percent=percent))


def _mirror_percent(spec: res.HTTPRequestMirrorFilter, where: str) -> float:
    """``percent`` (0-100) or ``fraction`` (numerator/denominator), default 100."""
    if spec.percent is not None and spec.fraction is not None:
        raise Invalid("UnsupportedValue", f"{where}: set percent or fraction, not both")
    if spec.percent is not None:
        if not 0 <= spec.percent <= 100:
            raise Invalid("UnsupportedValue", f"{where}.percent {spec.percent} is not between 0 and 100")
        return float(spec.percent)
    if spec.fraction is not None:
        numerator, denominator = spec.fraction.numerator, spec.fraction.denominator
        if denominator <= 0 or not 0 <= numerator <= denominator:
            raise Invalid(
                "UnsupportedValue",
                f"{where}.fraction {numerator}/{denominator}: need 0 <= numerator <= denominator and denominator > 0",
            )
        return numerator * 100 / denominator
    return 100.0

"""What a rule sends its requests to: each backendRef as written and as resolved (weight and
share, destination, endpoints as configured, upstream TLS), and the rule's timeouts, retry
policy, mirrors and filters, as JSON-ready data."""
from __future__ import annotations

from .. import ir
from .sources import RouteId, Sources

CERT_MARKER = "-----BEGIN CERTIFICATE-----"


def backend_entries(rid: RouteId, route: ir.Route, sources: Sources) -> list[dict]:
    """The rule's backendRefs in order. A rule whose backendRefs were all invalid (or all
    weight 0) has a 500 direct response in the IR: its refs are described from the config
    and the route's ResolvedRefs condition."""
    rule = sources.rule(rid)
    refs = rule.backend_refs if rule is not None else ()
    weighted = route.action.backends if isinstance(route.action, ir.Forward) else ()
    total = sum(ref.weight for ref in refs)
    out = []
    for k, ref in enumerate(refs):
        wb = weighted[k] if k < len(weighted) else None
        problem = sources.backend_problem(rid, k)
        valid = wb.destination is not None if wb is not None else problem is None
        entry: dict[str, object] = {
            "kind": ref.kind,
            "group": ref.group,
            "namespace": ref.namespace or rid.namespace,
            "name": ref.name,
            "port": ref.port,
            "weight": ref.weight,
            "share": round(ref.weight / total, 4) if total else 0.0,
            "valid": valid,
            "status": None if valid else (wb.invalid_status if wb is not None else 500),
            "problem": None if valid else problem or "invalid (pyproxy check says why)",
            "destination": None,
            "request_headers": mutation(wb.request_headers) if wb is not None else None,
            "response_headers": mutation(wb.response_headers) if wb is not None else None,
            "upstream_request": None,
        }
        if wb is not None and wb.destination is not None:
            entry.update(destination(wb.destination))
        out.append(entry)
    return out


def destination(dest: ir.Destination) -> dict[str, object]:
    return {
        "destination": dest.name,
        "endpoints": [{"kind": ep.kind, "host": ep.host, "port": ep.port} for ep in dest.endpoints],
        "tls": upstream_tls(dest.tls) if dest.tls is not None else None,
        "http2": dest.http2,
        "connect_timeout": dest.connect_timeout,
    }


def upstream_tls(tls: ir.UpstreamTLS) -> dict[str, object]:
    """SNI, the names the certificate is verified against, and where trust comes from."""
    if tls.insecure_skip_verify:
        verify: list[str] = []
    elif tls.subject_alt_names:
        verify = [f"{san.kind}:{san.value}" if san.kind == "URI" else san.value for san in tls.subject_alt_names]
    else:
        verify = [tls.sni]
    if tls.ca == "System":
        ca = "System"
    else:
        count = tls.ca.count(CERT_MARKER)
        ca = f"PEM bundle from the config ({count} certificate{'' if count == 1 else 's'})"
    return {
        "sni": tls.sni,
        "verify": verify,
        "ca": ca,
        "insecure_skip_verify": tls.insecure_skip_verify,
        "versions": f"{tls.min_version}-{tls.max_version}",
        "client_certificate": tls.client_certificate.name if tls.client_certificate is not None else None,
    }


def mutation(m: ir.HeaderMutation | None) -> dict[str, object] | None:
    if m is None or not (m.set or m.add or m.remove):
        return None
    return {"set": [list(h) for h in m.set], "add": [list(h) for h in m.add], "remove": list(m.remove)}


def policies(route: ir.Route) -> dict[str, object]:
    """The route's filters and policies, as they apply to every request it takes."""
    rewrite = route.url_rewrite
    retry = route.retry
    return {
        "request_headers": mutation(route.request_headers),
        "response_headers": mutation(route.response_headers),
        "url_rewrite": None if rewrite is None else {
            "hostname": rewrite.hostname,
            "path": path_modifier(rewrite.path),
        },
        "timeouts": {"request": route.timeouts.request, "backend_request": route.timeouts.backend_request},
        "retry": None if retry is None else {
            "retries": retry.retries, "on": list(retry.on), "codes": list(retry.codes), "backoff": retry.backoff,
            "per_try_timeout": retry.per_try_timeout,
        },
        "mirrors": [{"destination": m.destination.name, "percent": m.percent} for m in route.mirrors],
        "cors": None if route.cors is None else {"allow_origins": list(route.cors.allow_origins)},
    }


def path_modifier(modifier: ir.PathModifier | None) -> str | None:
    if modifier is None:
        return None
    if modifier.kind == "ReplaceFullPath":
        return f"ReplaceFullPath {modifier.value}"
    return f"ReplacePrefixMatch {modifier.prefix} -> {modifier.value}"

"""``explain``: one request through the compiled snapshot ``serve`` would run, answered as
JSON-ready data (``render.py`` writes it as text).

The listener group comes from the question (URL port, ``--port``, ``--listener``; the
implicit listener when the config has no Gateway); everything after that is the data
plane's own code (``probe.py``). What the data plane does not say (which routes were
considered and why each lost) is worked out here from the IR and the config."""
from __future__ import annotations

from collections.abc import Callable

from .. import errors, ir
from ..dataplane.client import ClientPolicy
from ..dataplane.compile import CompiledListener, CompiledRoute, CompiledVhost, PortGroup, Snapshot
from ..dataplane.framing import RequestHead
from ..translate.translator import IMPLICIT_LISTENER
from . import probe
from .backends import backend_entries, policies
from .question import Question, Target, UsageError, parse_url, request_bytes, server_name
from .sources import RouteId, Sources, route_id
from .why import match_failure, precedence_reason

Key = tuple[str, int]
# local answers the server gives before routing: no listener or route was chosen
_BEFORE_ROUTING = ("path_normalization_redirect", "upgrade_failed")


def listener_label(ir_name: str) -> str:
    """``ns/gateway/listener`` for a Gateway listener, ``implicit`` for the implicit one."""
    return "implicit" if ir_name == IMPLICIT_LISTENER else ir_name.removeprefix("gateway/")


def choose_group(snapshot: Snapshot, question: Question, target: Target) -> tuple[Key, PortGroup, str]:
    """The socket the client reaches, and how it was chosen. Raises UsageError when nothing
    serves it or the URL's scheme is not what it speaks."""
    listeners = snapshot.config.listeners
    served = ", ".join(f"{listener_label(lst.name)} (port {lst.port}, {lst.protocol})" for lst in listeners)
    if not listeners:
        raise UsageError("no listener is served (pyproxy check says why)")
    if question.listener is not None:
        wanted = IMPLICIT_LISTENER if question.listener == "implicit" else "gateway/" + question.listener
        found = next((lst for lst in listeners if lst.name == wanted), None)
        if found is None:
            raise UsageError(f"no listener {question.listener} is served; served: {served}")
        key, how = (found.address, found.port), f"--listener {question.listener}"
    elif question.port is None and listeners[0].name == IMPLICIT_LISTENER:
        key, how = (listeners[0].address, listeners[0].port), "no Gateway in the config: every route attaches to it"
    else:
        port = question.port if question.port is not None else target.port
        how = f"--port {port}" if question.port is not None else f"URL port {port}"
        keys = [(lst.address, lst.port) for lst in listeners if lst.port == port]
        if not keys:
            raise UsageError(f"nothing listens on port {port}; served: {served}")
        key = keys[0]
    group = snapshot.groups.get(key)
    if group is None:
        raise UsageError(f"port {key[1]} failed to compile and would not be served (see the log above)")
    scheme = "https" if group.ssl_context is not None else "http"
    if scheme != target.scheme:
        raise UsageError(f"port {key[1]} speaks {scheme.upper()}: use an {scheme}:// URL")
    return key, group, how


def explain(snapshot: Snapshot, sources: Sources, question: Question, config_ok: bool = True) -> dict:
    """The answer for ``question``; raises UsageError when it cannot be asked."""
    target = parse_url(question.url)
    key, group, how = choose_group(snapshot, question, target)
    scheme = target.scheme
    if scheme == "http" and question.sni:
        raise UsageError("--sni is for https:// URLs")
    sni = server_name(question, target) if scheme == "https" else None
    data = request_bytes(question, target)
    answer: dict = {
        "request": {"method": question.method, "url": question.url, "host": None, "path": None, "sni": sni,
                    "client_ip": question.client_ip, "address": key[0], "port": key[1], "scheme": scheme},
        "config_ok": config_ok,
        "listener": None, "listener_detail": None, "virtual_host": None, "route": None, "match": None,
        "action": "local", "status": None, "details": None, "reason": None, "location": None,
        "backends": [], "upstream_request": None, "policies": None, "not_matched": [],
    }
    policy = group.listener_for(sni).policy  # the connection's client settings, as serve picks them
    try:
        head = probe.read_head(data, policy)
    except errors.ProxyError as exc:
        answer.update(status=exc.status, details=exc.details, reason=f"the request is malformed: {exc}")
        return answer
    answer["request"].update(method=head.method, host=head.host_header.decode("latin-1"), path=head.path)
    routed = probe.route(snapshot, key, sni, scheme, head)
    reached = not isinstance(routed.error, errors.Misdirected) and not (
        routed.local is not None and routed.local.details in _BEFORE_ROUTING)
    listener = group.listeners.find(head.host) if reached else None
    vhost = listener.vhosts.find(head.host) if listener is not None else None
    ir_listeners = {lst.name: lst for lst in snapshot.config.listeners if (lst.address, lst.port) == key}
    if listener is not None:
        answer["listener"] = listener_label(listener.name)
        answer["listener_detail"] = _listener_detail(ir_listeners[listener.name], how, head, sni, len(ir_listeners))
    if vhost is not None:
        answer["virtual_host"] = _vhost_hostname(ir_listeners, vhost.name)
    compiled = routed.exchange.route
    winner: tuple[RouteId, ir.Route] | None = None
    if compiled is not None:
        rid = route_id(compiled.name)
        ir_route = _ir_route(ir_listeners, compiled.name)
        if rid is not None and ir_route is not None:
            winner = (rid, ir_route)
            answer["route"] = rid.to_dict()
            answer["match"] = describe_match(ir_route.match)
            answer["backends"] = backend_entries(rid, ir_route, sources)
            answer["policies"] = policies(ir_route)
    _outcome(answer, routed, compiled, head, group, question, scheme, sni, policy)
    if compiled is not None or isinstance(routed.error, errors.NoRoute):
        answer["not_matched"] = not_matched(ir_listeners, listener, vhost, winner, head, sources)
    return answer


def _outcome(answer: dict, routed: probe.Routed, compiled: CompiledRoute | None, head: RequestHead,
             group: PortGroup, question: Question, scheme: str, sni: str | None, policy: ClientPolicy) -> None:
    """Fill in action, status, reason, location and the upstream request."""
    error, local = routed.error, routed.local
    if isinstance(error, errors.InvalidBackend) and compiled is not None and any(
            b.destination is not None for b in compiled.backends):
        error = None  # serve's random pick fell on an invalid backendRef: its share is reported per backend
    if error is not None:
        answer.update(status=error.status, details=error.details, reason=_error_reason(error, head, group, sni))
        return
    if local is not None:
        location = next((v.decode("latin-1") for n, v in local.headers or () if n == b"location"), None)
        answer.update(status=local.status, details=local.details, location=location,
                      reason=_local_reason(local.details, local.status, location, answer))
        return
    assert compiled is not None
    answer["action"] = "forward"
    requests = iter(compiled.backends)
    ex = routed.exchange
    for entry in answer["backends"]:
        if entry["weight"] == 0:
            continue
        backend = next(requests)
        if backend.destination is not None:
            sent = probe.leaving(ex, compiled, backend, question.client_ip, scheme, policy)
            entry["upstream_request"] = {
                "method": sent.method.decode("latin-1"),
                "path": sent.target.decode("latin-1"),
                "host": sent.host.decode("latin-1"),
                "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in sent.headers],
            }
            if answer["upstream_request"] is None:
                answer["upstream_request"] = entry["upstream_request"]
    invalid = sum(e["share"] for e in answer["backends"] if not e["valid"])
    answer["reason"] = f"{invalid:.0%} of requests get 500 (an invalid backendRef's share)" if invalid else None


def _error_reason(error: errors.ProxyError, head: RequestHead, group: PortGroup, sni: str | None) -> str:
    host = head.host or "(none)"
    if isinstance(error, errors.Misdirected):
        by_sni = group.listeners.find(sni or "")
        by_host = group.listeners.find(head.host)
        picked = listener_label(by_sni.name) if by_sni is not None else "no listener"
        return (f"the TLS server name {sni} picks {picked} but Host {host} picks "
                f"{listener_label(by_host.name) if by_host is not None else 'no listener'}: 421 Misdirected Request")
    if isinstance(error, errors.NoRoute):
        listener = group.listeners.find(head.host)
        if listener is None:
            return f"no listener on port {group.port} takes Host {host}: 404"
        if listener.vhosts.find(head.host) is None:
            return f"no route of listener {listener_label(listener.name)} serves Host {host}: 404"
        return f"no route matches ({_considered(listener, head)} considered, see below): 404"
    if isinstance(error, errors.CorsForbidden):
        return "CORS preflight from an origin the route does not allow: 403"
    if isinstance(error, errors.InvalidBackend):
        return f"the rule's backendRefs are invalid: {error.status}"
    return f"{error}: {error.status}"


def _considered(listener: CompiledListener, head: RequestHead) -> int:
    vhost = listener.vhosts.find(head.host)
    return len(vhost.routes) if vhost is not None else 0


def _local_reason(details: str, status: int, location: str | None, answer: dict) -> str:
    if details == "path_normalization_redirect":
        return f"the path holds an escaped slash or backslash: {status} to the normalised path {location}"
    if details == "upgrade_failed":
        return "an upgrade to a protocol other than websocket: 403"
    if details == "cors_response":
        return "CORS preflight answered by the proxy (origin allowed): 200"
    if location is not None:
        return f"RequestRedirect: {status} to {location}"
    backends = answer["backends"]
    if status == 500 and not backends:
        return "the rule has no backendRefs (or an ExtensionRef filter that does not resolve): 500"
    if status == 500:
        return "no backendRef can take requests (each is invalid or has weight 0): 500"
    return f"direct response: {status}"


def _listener_detail(lst: ir.Listener, how: str, head: RequestHead, sni: str | None, count: int) -> dict:
    if lst.name == IMPLICIT_LISTENER or count == 1:
        why = how if lst.name == IMPLICIT_LISTENER else f"{how}: the only listener there"
    else:
        by = f"Host {head.host}" + (f" and TLS server name {sni} pick" if sni else " picks")
        why = f"{how}; {by} it among {count} listeners (hostname {lst.hostname or 'any'})"
    return {"name": lst.name, "address": lst.address, "port": lst.port, "protocol": lst.protocol,
            "hostname": lst.hostname, "why": why}


def _vhost_hostname(listeners: dict[str, ir.Listener], name: str) -> str | None:
    return next((v.hostname for lst in listeners.values() for v in lst.virtual_hosts if v.name == name), None)


def _ir_route(listeners: dict[str, ir.Listener], name: str) -> ir.Route | None:
    return next((r for lst in listeners.values() for v in lst.virtual_hosts for r in v.routes if r.name == name), None)


def describe_match(match: ir.Match) -> str:
    parts = [f"{match.path.kind} {match.path.value}"]
    if match.method:
        parts.append(f"method {match.method}")
    parts += [f"header {h.name} {h.kind} {h.value!r}" for h in match.headers]
    parts += [f"query {q.name} {q.kind} {q.value!r}" for q in match.query_params]
    return ", ".join(parts)


def not_matched(listeners: dict[str, ir.Listener], chosen: CompiledListener | None, vhost: CompiledVhost | None,
                winner: tuple[RouteId, ir.Route] | None, head: RequestHead, sources: Sources) -> list[dict]:
    """One entry per other rule attached to the listener group: why it did not take the
    request. The chosen virtual host's routes are matched (by the compiled matchers, then
    described component by component); other routes lost on hostname or listener."""
    reasons: dict[tuple[str, int], list[tuple[int, str]]] = {}
    seen: set[str] = set()

    def add(route: ir.Route, why: str) -> None:
        rid = route_id(route.name)
        if rid is None or route.name in seen:
            return
        seen.add(route.name)
        if winner is not None and (rid.label, rid.rule) == (winner[0].label, winner[0].rule):
            return
        reasons.setdefault((rid.label, rid.rule), []).append((rid.match, why))

    host = head.host or "(none)"
    if chosen is not None:
        _chosen_listener(listeners[chosen.name], vhost, winner, head, sources, add)
    elsewhere: dict[str, tuple[ir.Route, list[str]]] = {}  # routes of the port's other listeners
    for lst in listeners.values():
        if chosen is None or lst.name != chosen.name:
            for v in lst.virtual_hosts:
                for route in v.routes:
                    place = f"{listener_label(lst.name)} (hostname {lst.hostname or 'any'})"
                    places = elsewhere.setdefault(route.name, (route, []))[1]
                    if place not in places:
                        places.append(place)
    for route, places in elsewhere.values():
        if chosen is not None:
            add(route, f"listener: attached to {', '.join(places)}; Host {host} picks {listener_label(chosen.name)}")
        else:
            add(route, f"listener: attached to {', '.join(places)}, which do{'es' if len(places) == 1 else ''} "
                       f"not take Host {host}")
    out = []
    for (label, rule), per_match in reasons.items():
        per_match.sort()
        distinct = list(dict.fromkeys(why for _, why in per_match))
        why = distinct[0] if len(distinct) == 1 else "; ".join(f"match {m}: {w}" for m, w in per_match)
        out.append({"route": label, "rule": rule, "why": why})
    return out


def _chosen_listener(lst: ir.Listener, vhost: CompiledVhost | None, winner: tuple[RouteId, ir.Route] | None,
                     head: RequestHead, sources: Sources, add: Callable[[ir.Route, str], None]) -> None:
    compiled = {r.name: r for r in vhost.routes} if vhost is not None else {}
    vhost_name = vhost.name if vhost is not None else None
    hostnames: dict[str, list[str]] = {}
    for v in lst.virtual_hosts:
        for route in v.routes:
            hostnames.setdefault(route.name, []).append(v.hostname)
    for v in sorted(lst.virtual_hosts, key=lambda v: v.name != vhost_name):
        for route in v.routes:
            if v.name != vhost_name:
                add(route, f"hostname: the route serves {', '.join(hostnames[route.name])}, not {head.host}")
                continue
            rid = route_id(route.name)
            matcher = compiled[route.name].matcher
            if matcher(head.method, head.path, head.query, head.headers) and winner is not None and rid is not None:
                add(route, f"lost on precedence to {winner[0].describe()}: "
                           f"{precedence_reason(winner, (rid, route), sources)}")
            else:
                add(route, match_failure(route.match, head) or "did not match")

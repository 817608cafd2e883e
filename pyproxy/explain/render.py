"""The answer as text for a terminal (short: one screen for a simple config) or as JSON."""
from __future__ import annotations

import json


def to_json(answer: dict) -> str:
    return json.dumps(answer, indent=2)


def _seconds(value: float | None) -> str:
    return "none" if value is None else f"{value:g}s"


def _mutation(m: dict | None) -> str:
    if not m:
        return ""
    parts = []
    if m["set"]:
        parts.append("set " + ", ".join(f"{n}: {v}" for n, v in m["set"]))
    if m["add"]:
        parts.append("add " + ", ".join(f"{n}: {v}" for n, v in m["add"]))
    if m["remove"]:
        parts.append("remove " + ", ".join(m["remove"]))
    return "; ".join(parts)


def _line(label: str, text: str) -> str:
    return f"{label:<10}{text}"


_INDENT = " " * 10


def to_text(answer: dict) -> str:
    req = answer["request"]
    lines = [f"{req['method']} {req['url']}  (Host {req['host'] or '-'}"
             + (f", TLS server name {req['sni']}" if req["sni"] else "") + f", client {req['client_ip']})"]
    if not answer["config_ok"]:
        lines.append("note: the config has errors (pyproxy check lists them); serve would run it as explained")
    detail = answer["listener_detail"]
    if detail is not None:
        lines.append(_line("listener", f"{answer['listener']} ({detail['address']}:{detail['port']} "
                                       f"{detail['protocol']}): {detail['why']}"))
    if answer["virtual_host"] is not None:
        lines.append(_line("vhost", answer["virtual_host"]))
    route = answer["route"]
    if route is not None:
        lines.append(_line("route", f"{route['kind']} {route['namespace']}/{route['name']} rule {route['rule']} "
                                    f"match {route['match']} ({answer['match']})"))
    if answer["action"] == "forward":
        lines.append(_line("answer", "forward" + (f": {answer['reason']}" if answer["reason"] else "")))
    else:
        details = f" ({answer['details']})" if answer["details"] else ""
        lines.append(_line("answer", f"local {answer['status']}{details}: {answer['reason']}"))
    if answer["location"] is not None:
        lines.append(_line("location", answer["location"]))
    for backend in answer["backends"]:
        lines += _backend(backend)
    if answer["policies"] is not None:
        lines += _policies(answer["policies"], answer["action"] == "forward")
    sent = answer["upstream_request"]
    if sent is not None:
        lines.append(_line("upstream", f"{sent['method']} {sent['path']}"))
        lines.append(f"{_INDENT}host: {sent['host']}")
        lines += [f"{_INDENT}{name}: {value}" for name, value in sent["headers"]]
    if answer["not_matched"]:
        lines.append("not matched:")
        lines += [f"  {e['route']} rule {e['rule']}: {e['why']}" for e in answer["not_matched"]]
    elif answer["route"] is not None:
        lines.append("not matched: none (no other route on this port)")
    return "\n".join(lines)


def _backend(backend: dict) -> list[str]:
    ns_name = f"{backend['namespace']}/{backend['name']}" + (f":{backend['port']}" if backend["port"] else "")
    head = f"{backend['kind']} {ns_name} weight {backend['weight']} ({backend['share']:.0%})"
    if not backend["valid"]:
        return [_line("backend", f"{head}: answers {backend['status']}: {backend['problem']}")]
    lines = [_line("backend", head + ("" if backend["destination"] is None else f" -> {backend['destination']}"))]
    for ep in backend.get("endpoints", ()):
        where = ep["host"] if ep["kind"] == "unix" else f"{ep['host']}:{ep['port']}"
        if ep["kind"] != "fqdn":
            note = ep["kind"]
        elif "addresses" in ep:
            note = "resolves to " + (", ".join(ep["addresses"]) or "nothing")
        elif "error" in ep:
            note = f"lookup failed: {ep['error']}"
        else:
            note = "fqdn, not resolved; --resolve looks it up"
        lines.append(f"{_INDENT}endpoint {where} ({note})")
    tls = backend.get("tls")
    if tls is not None:
        verify = ", ".join(tls["verify"]) if tls["verify"] else "nothing (insecureSkipVerify)"
        client = f", client certificate {tls['client_certificate']}" if tls["client_certificate"] else ""
        lines.append(f"{_INDENT}tls: SNI {tls['sni']}, verifies {verify}, CA {tls['ca']}{client}")
    elif "endpoints" in backend:
        lines.append(f"{_INDENT}plain HTTP" + ("/2 (h2c)" if backend["http2"] else "/1.1"))
    if backend["request_headers"]:
        lines.append(f"{_INDENT}request headers: {_mutation(backend['request_headers'])}")
    if backend["response_headers"]:
        lines.append(f"{_INDENT}response headers: {_mutation(backend['response_headers'])}")
    return lines


def _policies(p: dict, forwarded: bool) -> list[str]:
    lines = []
    rewrite = p["url_rewrite"]
    if rewrite is not None:
        parts = [f"hostname {rewrite['hostname']}"] if rewrite["hostname"] else []
        parts += [f"path {rewrite['path']}"] if rewrite["path"] else []
        lines.append(_line("rewrite", ", ".join(parts)))
    if p["request_headers"]:
        lines.append(_line("request", "headers: " + _mutation(p["request_headers"])))
    if p["response_headers"]:
        lines.append(_line("response", "headers: " + _mutation(p["response_headers"])))
    for mirror in p["mirrors"]:
        lines.append(_line("mirror", f"{mirror['destination']} ({mirror['percent']:g}%)"))
    if p["cors"] is not None:
        lines.append(_line("cors", "allows " + (", ".join(p["cors"]["allow_origins"]) or "no origin")))
    if forwarded:
        t, retry = p["timeouts"], p["retry"]
        text = f"request {_seconds(t['request'])}, per try {_seconds(t['backend_request'])}; retry "
        if retry is None:
            text += "none"
        else:
            codes = f" [{', '.join(map(str, retry['codes']))}]" if retry["codes"] else ""
            text += f"{retry['retries']}x on {', '.join(retry['on'])}{codes}, backoff {_seconds(retry['backoff'])}"
        lines.append(_line("timeouts", text))
    return lines

"""explain in-process: the listener, route and outcome it finds, the request that would leave,
why each other route lost, and the questions it refuses (exit 2 in the CLI)."""
from __future__ import annotations

from pathlib import Path

import pytest

from pyproxy.explain.command import explain_config
from pyproxy.explain.question import Question, UsageError
from pyproxy.runtime import Settings
from tests.explain import configs
from tests.helpers.dnsserver import DnsServer

PORTS = {"http": 8081, "https": 8443, "a": 9001, "b": 9002, "c": 9003}


async def ask(tmp_path: Path, template: str, url: str, *headers: str, method: str = "GET", **kw) -> dict:
    directory = configs.write(tmp_path / "config", template, **PORTS)
    ca = kw.pop("ca", None)
    if ca is not None:
        configs.tls_secrets(ca, directory)
    settings = Settings(config_paths=(str(directory),), **kw.pop("settings", {}))
    question = Question(url=url, method=method, headers=tuple(tuple(h.split(": ", 1)) for h in headers), **kw)
    return await explain_config(settings, question)


def why(answer: dict) -> dict[tuple[str, int], str]:
    return {(e["route"].removeprefix("httproute/default/"), e["rule"]): e["why"] for e in answer["not_matched"]}


def route(answer: dict) -> tuple[str, int, int] | None:
    r = answer["route"]
    return None if r is None else (r["name"], r["rule"], r["match"])


APP = "http://app.example:8081"


# ------------------------------------------------------------------ precedence


@pytest.mark.parametrize(("path", "headers", "method", "winner", "loser", "reason"), [
    ("/api/v1", (), "GET", ("exact", 0, 0), ("prefix", 0), "Exact beats PathPrefix"),
    ("/api/v2", ("x-canary: yes",), "GET", ("prefix", 1, 0), ("prefix", 0), "more header matches (1 vs 0)"),
    ("/x", (), "POST", ("prefix", 2, 0), ("prefix", 3), "query param v: missing (wants Exact '2')"),
    ("/x?v=2", (), "POST", ("prefix", 2, 0), ("prefix", 3), "has a method match (POST)"),
    ("/shared", (), "GET", ("older", 0, 0), ("newer", 0),
     "older creationTimestamp (2020-01-01T00:00:00Z vs 2024-01-01T00:00:00Z)"),
    ("/same", (), "GET", ("name-a", 0, 0), ("name-b", 0),
     "name order (default/name-a before default/name-b)"),
])
async def test_precedence_reasons(tmp_path, path, headers, method, winner, loser, reason):
    answer = await ask(tmp_path, configs.PRECEDENCE, APP + path, *headers, method=method)
    assert route(answer) == winner
    lost = why(answer)[loser]
    if lost.startswith("lost on precedence"):
        assert lost == f"lost on precedence to httproute/default/{winner[0]} rule {winner[1]} match 0: {reason}"
    else:
        assert lost == reason


TIES = configs.route("two-rules", f"""\
  - matches: [{{path: {{type: PathPrefix, value: /}}}}, {{path: {{type: PathPrefix, value: /}}}}]
    backendRefs: [{configs.ref("a")}]
  - matches: [{{path: {{type: PathPrefix, value: /}}}}]
    backendRefs: [{configs.ref("b")}]
""", hostnames="[]", meta=', creationTimestamp: "2021-01-01T00:00:00Z"') + configs.route("undated", f"""\
  - matches: [{{path: {{type: RegularExpression, value: "/.*"}}}}]
    backendRefs: [{configs.ref("a")}]
  - backendRefs: [{configs.ref("a")}]
""", hostnames="[]") + f"""\
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: grpc}}
spec:
  rules:
  - matches: [{{method: {{service: pkg.Svc}}}}]
    backendRefs: [{configs.ref("a")}]
  - matches: [{{method: {{service: pkg.Svc, method: Get}}}}]
    backendRefs: [{configs.ref("b")}]
  - matches: [{{method: {{method: Get}}}}]
    backendRefs: [{configs.ref("b")}]
""" + configs.BACKENDS


async def test_rule_order_age_and_kinds(tmp_path):
    answer = await ask(tmp_path, TIES, "http://any.example/x")
    assert route(answer) == ("undated", 0, 0)  # RegularExpression ranks before PathPrefix
    assert why(answer) == {
        ("two-rules", 0): "lost on precedence to httproute/default/undated rule 0 match 0: "
                          "RegularExpression beats PathPrefix",
        ("two-rules", 1): "lost on precedence to httproute/default/undated rule 0 match 0: "
                          "RegularExpression beats PathPrefix",
        ("undated", 1): "lost on precedence to httproute/default/undated rule 0 match 0: "
                        "RegularExpression beats PathPrefix",
        ("grpcroute/default/grpc", 0): "path: /x is not under /pkg.Svc (PathPrefix)",
        ("grpcroute/default/grpc", 1): "path: /x is not /pkg.Svc/Get (Exact)",
        ("grpcroute/default/grpc", 2): "path: /x does not match /[^/]+/Get (RegularExpression)",
    }


async def test_grpc_precedence(tmp_path):
    answer = await ask(tmp_path, TIES, "http://any.example/pkg.Svc/Get", method="POST")
    assert route(answer) == ("grpc", 1, 0)
    assert answer["route"]["kind"] == "GRPCRoute"
    reasons = why(answer)
    winner = "lost on precedence to grpcroute/default/grpc rule 1 match 0: "
    assert reasons[("grpcroute/default/grpc", 0)] == winner + "longer method name (3 vs 0 characters)"
    assert reasons[("grpcroute/default/grpc", 2)] == winner + "longer service name (7 vs 0 characters)"
    # an HTTPRoute and a GRPCRoute in one virtual host are ordered by HTTPRoute precedence
    assert reasons[("undated", 0)] == winner + "Exact beats RegularExpression"


async def test_age_against_undated_and_rule_order(tmp_path):
    answer = await ask(tmp_path, TIES.replace('RegularExpression, value: "/.*"', "PathPrefix, value: /"),
                       "http://any.example/x")
    assert route(answer) == ("two-rules", 0, 0)
    reasons = why(answer)
    assert reasons[("two-rules", 1)] == ("lost on precedence to httproute/default/two-rules rule 0 match 0: "
                                         "earlier rule (rule 0 vs 1)")
    assert reasons[("undated", 0)] == ("lost on precedence to httproute/default/two-rules rule 0 match 0: "
                                       "older creationTimestamp (2021-01-01T00:00:00Z; the other has none)")


# ------------------------------------------------------------------ why a route did not match


async def test_match_failures(tmp_path):
    answer = await ask(tmp_path, configs.NO_ROUTE, APP + "/api?debug=1", "x-version: twelve")
    assert answer["status"] == 404 and answer["reason"] == "no route matches (2 considered, see below): 404"
    assert why(answer) == {
        ("web", 0): "path: /api is not /exact (Exact)",
        ("web", 1): "header x-version: 'twelve' does not match RegularExpression 'v[0-9]+'",
        ("elsewhere", 0): "hostname: the route serves other.example, not app.example",
    }
    answer = await ask(tmp_path, configs.NO_ROUTE, APP + "/exact", method="PUT")
    assert why(answer)[("web", 0)] == "method: wants GET, the request is PUT"
    answer = await ask(tmp_path, configs.NO_ROUTE, APP + "/api/x")
    assert why(answer)[("web", 1)] == "header x-version: missing (wants RegularExpression 'v[0-9]+')"
    answer = await ask(tmp_path, configs.NO_ROUTE, APP + "/api/x?debug=true", "x-version: v2")
    assert why(answer)[("web", 1)] == "query param debug: 'true' does not match Exact '1'"


async def test_listener_reasons(tmp_path, ca):
    answer = await ask(tmp_path, configs.HTTPS, "https://third.example:8443/", sni="first.example", ca=ca)
    assert answer["listener"] is None and answer["status"] == 404
    assert answer["reason"] == "no listener on port 8443 takes Host third.example: 404"
    assert why(answer) == {
        ("first", 0): "listener: attached to default/eg/first (hostname first.example), which does not take "
                      "Host third.example",
        ("second", 0): "listener: attached to default/eg/second (hostname second.example), which does not take "
                       "Host third.example",
        ("plain", 0): "listener: attached to default/eg/first (hostname first.example), default/eg/second "
                      "(hostname second.example), which do not take Host third.example",
    }
    answer = await ask(tmp_path, configs.HTTPS, "https://first.example:8443/", ca=ca)
    assert answer["listener"] == "default/eg/first" and route(answer) == ("first", 0, 0)
    assert answer["listener_detail"]["why"] == ("URL port 8443; Host first.example and TLS server name "
                                                "first.example pick it among 2 listeners (hostname first.example)")
    assert why(answer) == {
        ("plain", 0): "lost on precedence to httproute/default/first rule 0 match 0: "
                      "name order (default/first before default/plain)",
        ("second", 0): "listener: attached to default/eg/second (hostname second.example); "
                       "Host first.example picks default/eg/first",
    }


# ------------------------------------------------------------------ outcomes


async def test_forward_with_rewrite_and_header_filters(tmp_path):
    answer = await ask(tmp_path, configs.FILTERS, APP + "/rw/deep?x=1", "X-Forwarded-For: 10.0.0.1",
                       "Connection: close, x-hop", "x-hop: 1", "x-keep: 2", client_ip="192.0.2.1")
    assert answer["action"] == "forward" and answer["status"] is None
    assert answer["upstream_request"] == {
        "method": "GET", "path": "/new/deep?x=1", "host": "backend.example",
        "headers": [["x-keep", "2"], ["x-forwarded-host", "app.example:8081"],
                    ["x-forwarded-for", "10.0.0.1, 192.0.2.1"], ["x-forwarded-proto", "http"],
                    ["x-envoy-external-address", "192.0.2.1"], ["x-request-id", "<generated>"]],
    }
    assert answer["policies"]["url_rewrite"] == {"hostname": "backend.example", "path": "ReplacePrefixMatch /rw -> /new"}
    answer = await ask(tmp_path, configs.FILTERS, APP + "/hdr", "x-drop: 1", "x-multi: first", "x-env: dev")
    assert answer["upstream_request"]["headers"] == [
        ["x-multi", "first,extra"], ["x-forwarded-for", "127.0.0.1"], ["x-forwarded-proto", "http"],
        ["x-envoy-external-address", "127.0.0.1"], ["x-request-id", "<generated>"], ["x-env", "prod"],
        ["x-backend", "c"]]
    assert answer["backends"][0]["request_headers"] == {"set": [["x-backend", "c"]], "add": [], "remove": []}


async def test_local_answers(tmp_path, ca):
    answer = await ask(tmp_path, configs.FILTERS, APP + "/redir/a?b=c")
    assert (answer["action"], answer["status"], answer["location"]) == ("local", 301, "https://secure.example/redir/a?b=c")
    assert answer["reason"] == "RequestRedirect: 301 to https://secure.example/redir/a?b=c"
    answer = await ask(tmp_path, configs.FILTERS, APP + "/cors", "Origin: https://evil.example",
                       "Access-Control-Request-Method: GET", method="OPTIONS")
    assert (answer["status"], answer["details"]) == (403, "cors_origin_not_allowed")
    answer = await ask(tmp_path, configs.FILTERS, APP + "/a%2fb")
    assert (answer["status"], answer["location"], answer["listener"]) == (307, "/a/b", None)
    answer = await ask(tmp_path, configs.FILTERS, APP + "/", "Host: a b")
    assert (answer["status"], answer["reason"]) == (400, "the request is malformed: invalid Host")
    answer = await ask(tmp_path, configs.FILTERS, APP + "/", "Connection: upgrade", "Upgrade: h3")
    assert (answer["status"], answer["details"]) == (403, "upgrade_failed")
    answer = await ask(tmp_path, configs.HTTPS, "https://first.example:8443/", sni="second.example", ca=ca)
    assert (answer["status"], answer["listener"], answer["not_matched"]) == (421, None, [])
    assert answer["reason"] == ("the TLS server name second.example picks default/eg/second but Host first.example "
                                "picks default/eg/first: 421 Misdirected Request")


async def test_weights_and_invalid_backends(tmp_path):
    answer = await ask(tmp_path, configs.WEIGHTS, APP + "/split")
    assert [(b["name"], b["weight"], b["share"]) for b in answer["backends"]] == [("a", 3, 0.75), ("c", 1, 0.25)]
    answer = await ask(tmp_path, configs.WEIGHTS, APP + "/zero")
    assert [(b["name"], b["share"], b["upstream_request"] is None) for b in answer["backends"]] == [
        ("a", 0.0, True), ("b", 1.0, False)]
    answer = await ask(tmp_path, configs.WEIGHTS, APP + "/half-broken")
    assert answer["action"] == "forward" and not answer["config_ok"]
    assert answer["reason"] == "50% of requests get 500 (an invalid backendRef's share)"
    assert (answer["backends"][1]["valid"], answer["backends"][1]["status"], answer["backends"][1]["problem"]) == (
        False, 500, "Backend default/missing not found")
    answer = await ask(tmp_path, configs.WEIGHTS, APP + "/broken")
    assert (answer["action"], answer["status"]) == ("local", 500)
    assert answer["reason"] == "no backendRef can take requests (each is invalid or has weight 0): 500"
    answer = await ask(tmp_path, configs.WEIGHTS, APP + "/none")
    assert answer["reason"] == ("the rule has no backendRefs (or an ExtensionRef filter that does not resolve): 500")


TLS_BACKENDS = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  rules:
  - matches: [{path: {type: PathPrefix, value: /insecure}}]
    backendRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: insecure}]
  - backendRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: sans}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: insecure}
spec:
  endpoints: [{fqdn: {hostname: insecure.test, port: 8443}}]
  tls: {sni: localhost, insecureSkipVerify: true}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: sans}
spec:
  endpoints: [{fqdn: {hostname: backend.test, port: 443}}, {fqdn: {hostname: gone.test, port: 8443}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: sans}
spec:
  targetRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: sans}]
  validation:
    hostname: backend.test
    wellKnownCACertificates: System
    subjectAltNames: [{type: Hostname, hostname: alt.test}, {type: URI, uri: "spiffe://td/ns/x"}]
"""


async def test_upstream_tls_and_resolve(tmp_path):
    answer = await ask(tmp_path, TLS_BACKENDS, "http://h/insecure")
    assert answer["backends"][0]["tls"] == {"sni": "localhost", "verify": [], "ca": "System",
                                            "insecure_skip_verify": True, "versions": "1.2-1.3",
                                            "client_certificate": None}
    async with DnsServer() as dns:
        dns.set("backend.test", ["127.0.0.7", "127.0.0.8"])
        answer = await ask(tmp_path, TLS_BACKENDS, "http://h/", resolve=True,
                           settings={"nameservers": (dns.address,)})
    backend = answer["backends"][0]
    assert backend["tls"]["verify"] == ["alt.test", "URI:spiffe://td/ns/x"]
    backend["endpoints"][0]["addresses"].sort()  # in the order DNS gave them
    assert backend["endpoints"] == [
        {"kind": "fqdn", "host": "backend.test", "port": 443, "addresses": ["127.0.0.7", "127.0.0.8"]},
        {"kind": "fqdn", "host": "gone.test", "port": 8443, "error": "gone.test: no such domain"}]


# ------------------------------------------------------------------ choosing the listener


async def test_listener_choice(tmp_path, ca):
    answer = await ask(tmp_path, configs.HTTPS, "http://first.example/", port=8081)
    assert answer["listener"] == "default/eg/web" and route(answer) == ("first", 0, 0)
    assert answer["listener_detail"]["why"] == "--port 8081: the only listener there"
    answer = await ask(tmp_path, configs.HTTPS, "https://second.example/", listener="default/eg/first", ca=ca)
    # the listener names the port; on it, the Host and SNI pick the listener as serve's would
    assert answer["listener"] == "default/eg/second" and answer["request"]["port"] == 8443
    answer = await ask(tmp_path, configs.NO_ROUTE.replace(configs.GATEWAY, ""), "http://app.example/exact",
                       settings={"listen": ("127.0.0.1", 9999)})
    assert answer["listener"] == "implicit" and answer["request"]["port"] == 9999
    assert answer["listener_detail"]["why"] == "no Gateway in the config: every route attaches to it"


@pytest.mark.parametrize(("url", "kw", "message"), [
    ("https://first.example/", {}, "nothing listens on port 443; served: default/eg/web (port 8081, HTTP), "
     "default/eg/first (port 8443, HTTPS), default/eg/second (port 8443, HTTPS)"),
    ("http://first.example:8443/", {}, "port 8443 speaks HTTPS: use an https:// URL"),
    ("https://first.example:8081/", {}, "port 8081 speaks HTTP: use an http:// URL"),
    ("http://first.example:8081/", {"sni": "x"}, "--sni is for https:// URLs"),
    ("http://x/", {"listener": "default/eg/nope"}, "no listener default/eg/nope is served; served: "
     "default/eg/web (port 8081, HTTP), default/eg/first (port 8443, HTTPS), default/eg/second (port 8443, HTTPS)"),
    ("ftp://x/", {}, "the URL must start with http:// or https://, got 'ftp://x/'"),
    ("http:///path", {}, "the URL has no host: 'http:///path'"),
    ("http://x:99999/", {}, "invalid URL 'http://x:99999/': Port out of range 0-65535"),
    ("http://x:8081/a\nb", {}, "the URL contains a control character"),
    ("http://x:8081/", {"method": "GE T"}, "-X wants a method name, got 'GE T'"),
])
async def test_questions_refused(tmp_path, ca, url, kw, message):
    with pytest.raises(UsageError) as caught:
        await ask(tmp_path, configs.HTTPS, url, ca=ca, **kw)
    assert str(caught.value) == message

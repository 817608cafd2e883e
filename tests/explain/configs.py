"""Configurations the explain tests ask about, as ``string.Template`` text: ``$http`` and
``$https`` are the Gateway listener ports, ``$a`` ``$b`` ``$c`` the ports of the Backends
named a, b and c (echo upstreams in the agreement tests; any number elsewhere)."""
from __future__ import annotations

import string
from pathlib import Path

import trustme

BACKENDS = "".join(f"""\
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: {name}}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: ${name}}}}}]
""" for name in "abc")

GATEWAY = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: eg}
spec:
  gatewayClassName: pyproxy
  listeners:
  - {name: web, port: $http, protocol: HTTP}
"""


def ref(name: str, weight: int | None = None) -> str:
    """A backendRef to the Backend ``name``, in flow style."""
    extra = f", weight: {weight}" if weight is not None else ""
    return f"{{group: gateway.envoyproxy.io, kind: Backend, name: {name}{extra}}}"


def route(name: str, body: str, hostnames: str = "[app.example]", meta: str = "") -> str:
    """An HTTPRoute attached to the Gateway ``eg`` (to the implicit listener when there is no
    Gateway); ``meta`` is added to its metadata."""
    return f"""\
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}{meta}}}
spec:
  parentRefs: [{{name: eg}}]
  hostnames: {hostnames}
  rules:
{body}"""


PRECEDENCE = GATEWAY + route("exact", f"""\
  - matches: [{{path: {{type: Exact, value: /api/v1}}}}]
    backendRefs: [{ref("a")}]
""") + route("prefix", f"""\
  - matches: [{{path: {{type: PathPrefix, value: /api}}}}]
    backendRefs: [{ref("b")}]
  - matches: [{{path: {{type: PathPrefix, value: /api}}, headers: [{{name: x-canary, value: "yes"}}]}}]
    backendRefs: [{ref("c")}]
  - matches: [{{path: {{type: PathPrefix, value: /}}, method: POST}}]
    backendRefs: [{ref("c")}]
  - matches: [{{path: {{type: PathPrefix, value: /}}, queryParams: [{{name: v, value: "2"}}]}}]
    backendRefs: [{ref("a")}]
""") + route("older", f"""\
  - matches: [{{path: {{type: PathPrefix, value: /shared}}}}]
    backendRefs: [{ref("a")}]
""", meta=', creationTimestamp: "2020-01-01T00:00:00Z"') + route("newer", f"""\
  - matches: [{{path: {{type: PathPrefix, value: /shared}}}}]
    backendRefs: [{ref("b")}]
""", meta=', creationTimestamp: "2024-01-01T00:00:00Z"') + route("name-a", f"""\
  - matches: [{{path: {{type: PathPrefix, value: /same}}}}]
    backendRefs: [{ref("c")}]
""") + route("name-b", f"""\
  - matches: [{{path: {{type: PathPrefix, value: /same}}}}]
    backendRefs: [{ref("a")}]
  - matches: [{{path: {{type: PathPrefix, value: /same}}}}]
    backendRefs: [{ref("b")}]
""") + route("wildcard", f"""\
  - backendRefs: [{ref("c")}]
""", hostnames="['*.example']") + route("any-host", f"""\
  - matches: [{{path: {{type: PathPrefix, value: /only-any}}}}]
    backendRefs: [{ref("b")}]
""", hostnames="[]") + BACKENDS

FILTERS = GATEWAY + route("rewrite", f"""\
  - matches: [{{path: {{type: PathPrefix, value: /rw}}}}]
    filters:
    - type: URLRewrite
      urlRewrite: {{hostname: backend.example, path: {{type: ReplacePrefixMatch, replacePrefixMatch: /new}}}}
    backendRefs: [{ref("a")}]
  - matches: [{{path: {{type: PathPrefix, value: /full}}}}]
    filters:
    - type: URLRewrite
      urlRewrite: {{path: {{type: ReplaceFullPath, replaceFullPath: /replaced}}}}
    backendRefs: [{ref("b")}]
""") + route("headers", """\
  - matches: [{path: {type: PathPrefix, value: /hdr}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-env, value: prod}]
        add: [{name: x-multi, value: extra}]
        remove: [x-drop]
    backendRefs:
    - group: gateway.envoyproxy.io
      kind: Backend
      name: c
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: x-backend, value: c}]}
""") + route("redirects", """\
  - matches: [{path: {type: PathPrefix, value: /redir}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, hostname: secure.example, statusCode: 301}
  - matches: [{path: {type: PathPrefix, value: /moved}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {port: 8443, path: {type: ReplaceFullPath, replaceFullPath: /elsewhere}}
""") + route("cors", f"""\
  - matches: [{{path: {{type: PathPrefix, value: /cors}}}}]
    filters:
    - type: CORS
      cors: {{allowOrigins: ["https://ok.example"], allowMethods: [GET, PUT]}}
    backendRefs: [{ref("a")}]
""") + BACKENDS

WEIGHTS = GATEWAY + route("weighted", f"""\
  - matches: [{{path: {{type: PathPrefix, value: /zero}}}}]
    backendRefs: [{ref("a", 0)}, {ref("b", 1)}]
  - matches: [{{path: {{type: PathPrefix, value: /split}}}}]
    backendRefs: [{ref("a", 3)}, {ref("c", 1)}]
  - matches: [{{path: {{type: PathPrefix, value: /half-broken}}}}]
    backendRefs: [{ref("b", 1)}, {ref("missing", 1)}]
  - matches: [{{path: {{type: PathPrefix, value: /broken}}}}]
    backendRefs: [{ref("missing")}]
  - matches: [{{path: {{type: PathPrefix, value: /none}}}}]
""") + BACKENDS

NO_ROUTE = GATEWAY + route("web", f"""\
  - matches: [{{path: {{type: Exact, value: /exact}}, method: GET}}]
    backendRefs: [{ref("a")}]
  - matches:
    - path: {{type: PathPrefix, value: /api}}
      headers: [{{name: x-version, type: RegularExpression, value: "v[0-9]+"}}]
      queryParams: [{{name: debug, value: "1"}}]
    backendRefs: [{ref("b")}]
""") + route("elsewhere", f"""\
  - backendRefs: [{ref("c")}]
""", hostnames="[other.example]") + BACKENDS

HTTPS_GATEWAY = GATEWAY + """\
  - {name: first, port: $https, protocol: HTTPS, hostname: first.example, tls: {certificateRefs: [{name: first}]}}
  - {name: second, port: $https, protocol: HTTPS, hostname: second.example, tls: {certificateRefs: [{name: second}]}}
"""

HTTPS = HTTPS_GATEWAY + route("first", f"""\
  - backendRefs: [{ref("a")}]
""", hostnames="[first.example]") + route("second", f"""\
  - backendRefs: [{ref("b")}]
""", hostnames="[second.example]") + route("plain", f"""\
  - backendRefs: [{ref("c")}]
""", hostnames="[]") + BACKENDS


def render(template: str, **ports: int) -> str:
    return string.Template(template).substitute(ports)


def write(directory: Path, template: str, **ports: int) -> Path:
    """The config in ``directory/config.yaml``; returns the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(render(template, **ports))
    return directory


def _indented(pem: str) -> str:
    return "".join(f"    {line}\n" for line in pem.strip().splitlines())


def tls_secrets(ca: trustme.CA, directory: Path) -> None:
    """``secrets.yaml``: the Secrets ``first`` and ``second`` of the HTTPS listeners, with
    certificates for first.example and second.example."""
    documents = []
    for name in ("first", "second"):
        leaf = ca.issue_cert(f"{name}.example")
        chain = "".join(blob.bytes().decode() for blob in leaf.cert_chain_pems)
        documents.append(f"""\
apiVersion: v1
kind: Secret
metadata: {{name: {name}}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{_indented(chain)}  tls.key: |
{_indented(leaf.private_key_pem.bytes().decode())}""")
    (directory / "secrets.yaml").write_text("---\n".join(documents))

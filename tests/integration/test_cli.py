"""The real CLI in a subprocess: exit codes and messages."""
from __future__ import annotations

import asyncio
import http.client
import json
import socket
import urllib.request
from pathlib import Path

import pytest
import trustme

from tests.helpers.named import route_config
from tests.helpers.proc import free_port, run_cli, start_proxy

SEED = Path(__file__).resolve().parents[2] / "config" / "seed-example.yaml"

BAD_ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
spec:
  rules:
  - matches:
    - path:
        type: Prefixx
        value: /
    backendRefz: []
"""

MISSING_BACKEND = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
spec:
  rules:
  - backendRefs:
    - group: gateway.envoyproxy.io
      kind: Backend
      name: nowhere
"""


def test_check_seed_is_ok():
    result = run_cli("check", "--config", str(SEED))
    assert result.returncode == 0, result.stderr
    assert "HTTPRoute default/external-https-backend" in result.stdout
    assert "Accepted=True" in result.stdout
    assert result.stdout.rstrip().endswith("ok")


def test_check_reports_every_shape_error_with_location(tmp_path):
    (tmp_path / "routes.yaml").write_text(BAD_ROUTE)
    result = run_cli("check", "--config", str(tmp_path))
    assert result.returncode == 1
    routes = tmp_path / "routes.yaml"
    assert result.stderr.splitlines() == [
        f"{routes}: document 1 (HTTPRoute default/web), line 9: spec.rules[0].matches[0].path.type: "
        "unknown value 'Prefixx'; expected Exact, PathPrefix or RegularExpression",
        f"{routes}: document 1 (HTTPRoute default/web), line 11: spec.rules[0].backendRefz: "
        "unknown field; did you mean 'backendRefs'?",
    ]
    assert "Traceback" not in result.stderr


def test_check_semantic_error_exits_1(tmp_path):
    (tmp_path / "route.yaml").write_text(MISSING_BACKEND)
    result = run_cli("check", "--config", str(tmp_path))
    assert result.returncode == 1
    assert "ResolvedRefs=False (BackendNotFound)" in result.stdout


HOST_MODIFIER = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
spec:
  rules:
  - matches:
    - path:
        value: /ok
  - matches:
    - path:
        value: /smuggle
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        add:
        - name: Host
          value: evil.example
"""


def test_check_prints_the_field_of_a_rejected_header_modifier(tmp_path):
    (tmp_path / "route.yaml").write_text(HOST_MODIFIER)
    result = run_cli("check", "--config", str(tmp_path))
    assert result.returncode == 1
    assert (
        "  PartiallyInvalid=True (UnsupportedValue) [implicit]: rules dropped (their matches are not routed): "
        "spec.rules[1].filters[0].requestHeaderModifier.add[0].name: 'Host' cannot be added by a header modifier; "
        "the proxy writes Host (a URLRewrite filter's hostname changes it)"
    ) in result.stdout.splitlines()


NOT_LATIN1 = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
spec:
  rules:
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set:
        - name: x-a
          value: "é€"
"""


def test_check_refuses_a_header_value_that_is_not_latin1(tmp_path):
    """`serve` would crash encoding it; `check` must fail first, with the field."""
    config = tmp_path / "f.yaml"
    config.write_text(NOT_LATIN1)
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{config}: document 1 (HTTPRoute default/web), line 12: "
        "spec.rules[0].filters[0].requestHeaderModifier.set[0].value: "
        "character '€' is not latin-1, so it cannot be sent in an HTTP message head"
    ]


GRPC_ROUTES = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  gatewayClassName: pyproxy
  listeners:
  - name: http
    port: 8080
    protocol: HTTP
    allowedRoutes:
      kinds:
      - kind: GRPCRoute
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: echo
spec:
  parentRefs:
  - name: gw
  rules:
  - matches:
    - method:
        service: grpc.echo.Echo
    backendRefs:
    - group: gateway.envoyproxy.io
      kind: Backend
      name: nowhere
"""


def test_check_prints_grpcroute_status_and_shape_errors(tmp_path):
    config = tmp_path / "grpc.yaml"
    config.write_text(GRPC_ROUTES)
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"GRPCRoute default/echo ({config}: document 2, line 15)",
        "  Accepted=True (Accepted) [gateway/default/gw]",
        "  ResolvedRefs=False (BackendNotFound) [gateway/default/gw]: spec.rules[0].backendRefs[0]: "
        "Backend default/nowhere not found; its share of requests gets 500",
        f"Gateway default/gw ({config}: document 1, line 1)",
        "  Accepted=True (Accepted)",
        "  Programmed=True (Programmed)",
        "  Accepted=True (Accepted) [http]",
        "  ResolvedRefs=True (ResolvedRefs) [http]",
        "  Programmed=True (Programmed) [http]: attachedRoutes: 1; supportedKinds: GRPCRoute",
        "errors found",
    ]
    config.write_text(GRPC_ROUTES.replace("        service: grpc.echo.Echo", "        service: grpc/echo"))
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{config}: document 2 (GRPCRoute default/echo), line 25: spec.rules[0].matches[0].method.service: "
        "'grpc/echo' is not a gRPC service name (dot-separated names such as helloworld.Greeter: letters, digits "
        "and '_', not starting with a digit); use type RegularExpression for a pattern"
    ]


def policy(kind: str, name: str, target: str, spec: str, created: str = "") -> str:
    """An Envoy Gateway policy document with one targetRef (``target``: its fields but group)."""
    stamp = f'\n  creationTimestamp: "{created}"' if created else ""
    return (f"---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: {kind}\nmetadata:\n  name: {name}{stamp}\n"
            f"spec:\n  targetRefs:\n  - {{group: gateway.networking.k8s.io, {target}}}\n  {spec}\n")


TRAFFIC_POLICIES = route_config(9, (8080,), name="web") + "".join([
    policy("BackendTrafficPolicy", "defaults", "kind: Gateway, name: gw", "circuitBreaker: {maxConnections: 100}"),
    policy("BackendTrafficPolicy", "retries", "kind: HTTPRoute, name: web", "retry: {numRetries: 3}",
           "2024-01-01T00:00:00Z"),
    policy("BackendTrafficPolicy", "late", "kind: HTTPRoute, name: web", "retry: {numRetries: 1}",
           "2024-06-01T00:00:00Z"),
    policy("ClientTrafficPolicy", "clients", "kind: Gateway, name: gw, sectionName: l80",
           "timeout: {http: {idleTimeout: 30s}}"),
])


def test_check_prints_traffic_policy_status(tmp_path):
    config = tmp_path / "policies.yaml"
    config.write_text(TRAFFIC_POLICIES)
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    policies = lines[lines.index(f"BackendTrafficPolicy default/defaults ({config}: document 4, line 36)"):
                     lines.index(f"Gateway default/gw ({config}: document 1, line 1)")]
    assert policies == [
        f"BackendTrafficPolicy default/defaults ({config}: document 4, line 36)",
        "  Accepted=True (Accepted) [gateway/default/gw]",
        "  Overridden=True (Overridden) [gateway/default/gw]: This policy is being overridden by other "
        "BackendTrafficPolicies for: HTTPRoute default/web (BackendTrafficPolicy default/retries)",
        f"BackendTrafficPolicy default/late ({config}: document 6, line 55)",
        "  Accepted=False (Conflicted) [httproute/default/web]: spec.targetRefs[0]: BackendTrafficPolicy "
        "default/retries already targets HTTPRoute default/web and takes precedence (older, or first by "
        "namespace/name)",
        f"BackendTrafficPolicy default/retries ({config}: document 5, line 45)",
        "  Accepted=True (Accepted) [httproute/default/web]",
        f"ClientTrafficPolicy default/clients ({config}: document 7, line 65)",
        "  Accepted=False (TargetNotFound) [gateway/default/gw/l80]: spec.targetRefs[0].sectionName: "
        "Gateway default/gw has no listener named l80",
    ]
    assert lines[-1] == "errors found"


def test_serve_refuses_bad_config_without_traceback(tmp_path):
    (tmp_path / "routes.yaml").write_text(BAD_ROUTE)
    result = run_cli("--config", str(tmp_path), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0")
    assert result.returncode == 1
    assert "spec.rules[0].matches[0].path.type: unknown value 'Prefixx'" in result.stderr
    assert "Traceback" not in result.stderr


BAD_REGEX_ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
spec:
  rules:
  - matches:
    - path:
        type: RegularExpression
        value: '/unclosed('
      headers:
      - {name: x-a, type: RegularExpression, value: '(?=x)'}
"""


def test_check_and_serve_refuse_a_bad_regular_expression_alike(tmp_path):
    """RE2 is imported only when a configuration has a pattern: both commands still check it."""
    routes = tmp_path / "routes.yaml"
    routes.write_text(BAD_REGEX_ROUTE)
    check = run_cli("check", "--config", str(tmp_path))
    serve = run_cli("--config", str(tmp_path), "--listen", "127.0.0.1:0", "--admin", "off")
    prefix = f"{routes}: document 1 (HTTPRoute default/web)"
    assert check.returncode == serve.returncode == 1
    assert check.stderr.splitlines() == serve.stderr.splitlines() == [
        f"{prefix}, line 10: spec.rules[0].matches[0].path.value: "
        "invalid RE2 regular expression '/unclosed(': missing ): /unclosed(",
        f"{prefix}, line 12: spec.rules[0].matches[0].headers[0].value: "
        "invalid RE2 regular expression '(?=x)': invalid perl operator: (?=",
    ]


def test_usage_errors_exit_2(tmp_path):
    assert run_cli("--listen", "nonsense", "--config", str(SEED)).returncode == 2
    assert run_cli("serve").returncode == 2  # --config is required
    assert run_cli("check").returncode == 2


def test_missing_config_path_exits_1(tmp_path):
    result = run_cli("check", "--config", str(tmp_path / "absent.yaml"))
    assert result.returncode == 1
    assert result.stderr.strip() == f"{tmp_path / 'absent.yaml'}: no such file or directory"


async def test_admin_ready_and_config_dump_then_clean_sigterm():
    proxy = start_proxy("--config", str(SEED), "--access-log", "off")
    try:
        await asyncio.to_thread(proxy.wait_ready)
        with urllib.request.urlopen(f"http://127.0.0.1:{proxy.admin_port}/config_dump", timeout=5) as resp:
            dump = json.load(resp)
        listener = dump["config"]["listeners"][0]
        assert listener["port"] == proxy.listen_port
        route = listener["virtual_hosts"][0]["routes"][0]
        assert route["name"].startswith("httproute/default/external-https-backend/rule/0")
        assert route["url_rewrite"]["hostname"] == "www.httpbin.org"
        kinds = {s["kind"] for s in dump["statuses"]}
        assert {"HTTPRoute", "Backend", "BackendTLSPolicy"} <= kinds
    finally:
        code, out, err = proxy.stop()
    assert code == 0, err
    assert "Traceback" not in err


async def test_config_dump_shows_traffic_policies(tmp_path):
    config = tmp_path / "policies.yaml"
    config.write_text(route_config(free_port(), name="web") + "".join([
        policy("BackendTrafficPolicy", "retries", "kind: HTTPRoute, name: web", "retry: {numRetries: 3}"),
        policy("BackendTrafficPolicy", "second", "kind: HTTPRoute, name: web", "retry: {numRetries: 1}"),
    ]))
    proxy = start_proxy("--config", str(config), "--access-log", "off")
    try:
        await asyncio.to_thread(proxy.wait_ready)
        with urllib.request.urlopen(f"http://127.0.0.1:{proxy.admin_port}/config_dump", timeout=5) as resp:
            dump = json.load(resp)
    finally:
        code, _, err = proxy.stop()
    assert code == 0, err
    statuses = {(s["kind"], s["name"]): s["conditions"] for s in dump["statuses"]}
    assert [(c["type"], c["status"], c["reason"], c["parent"]) for c in statuses["BackendTrafficPolicy", "retries"]] \
        == [("Accepted", True, "Accepted", "httproute/default/web")]
    assert [(c["type"], c["status"], c["reason"]) for c in statuses["BackendTrafficPolicy", "second"]] == [
        ("Accepted", False, "Conflicted")]
    (route,) = dump["config"]["listeners"][0]["virtual_hosts"][0]["routes"]
    assert route["retry"]["retries"] == 3
    assert route["action"]["backends"][0]["destination"]["name"] == "backend/default/web@btp/default/retries"


async def test_demo_serves_offline_through_verified_tls(tmp_path):
    """`pyproxy demo`: a local HTTPS upstream with a fresh CA, pyproxy in front, seed-shaped;
    it leaves no temporary directory behind."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    proxy = start_proxy("demo", "--access-log", "off", env={"TMPDIR": str(tmpdir)})
    try:
        await asyncio.to_thread(proxy.wait_ready)

        def get() -> dict:
            req = urllib.request.Request(f"http://127.0.0.1:{proxy.listen_port}/get?demo=1",
                                         headers={"Host": "www.example.com"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert resp.status == 200
                return json.load(resp)

        body = await asyncio.to_thread(get)
        assert body["path"] == "/get?demo=1"
        assert body["headers"]["Host"] == "localhost"
        assert body["headers"]["X-Forwarded-Host"] == "www.example.com"
        assert body["served_by"] == "pyproxy demo upstream over TLS"
        assert [p.name for p in tmpdir.iterdir()] != []  # the generated config, while running
    finally:
        code, _, err = proxy.stop()
    assert code == 0, err
    assert f"try:    curl -H 'Host: www.example.com' http://127.0.0.1:{proxy.listen_port}/get" in err.splitlines()
    assert list(tmpdir.iterdir()) == []


def _indented(pem: str) -> str:
    return "".join(f"    {line}\n" for line in pem.strip().splitlines())


def _broken_material_config(ca: trustme.CA, http_port: int, https_port: int) -> str:
    """A Gateway with an HTTP listener (a redirect, and a backend whose BackendTLSPolicy CA has
    a garbage body) and an HTTPS listener whose tls.key belongs to another certificate."""
    cert = ca.issue_cert("secure.example").cert_chain_pems[0].bytes().decode()
    other_key = ca.issue_cert("other.example").private_key_pem.bytes().decode()
    ca_lines = ca.cert_pem.bytes().decode().strip().splitlines()
    garbage_ca = f"{ca_lines[0]}\nAAAAnot+der+AAAA\n{ca_lines[-1]}\n"
    return f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  gatewayClassName: pyproxy
  listeners:
  - name: http
    port: {http_port}
    protocol: HTTP
  - name: https
    port: {https_port}
    protocol: HTTPS
    tls:
      certificateRefs:
      - name: mismatched
---
apiVersion: v1
kind: Secret
metadata:
  name: mismatched
type: kubernetes.io/tls
stringData:
  tls.crt: |
{_indented(cert)}  tls.key: |
{_indented(other_key)}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
spec:
  parentRefs:
  - name: gw
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /moved
    filters:
    - type: RequestRedirect
      requestRedirect:
        hostname: elsewhere.example
        statusCode: 302
  - matches:
    - path:
        type: PathPrefix
        value: /tls
    backendRefs:
    - group: gateway.envoyproxy.io
      kind: Backend
      name: api
      port: 443
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata:
  name: api
spec:
  endpoints:
  - ip:
      address: 127.0.0.1
      port: 9
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata:
  name: api
spec:
  targetRefs:
  - group: gateway.envoyproxy.io
    kind: Backend
    name: api
  validation:
    hostname: api.example
    caCertificateRefs:
    - group: ""
      kind: ConfigMap
      name: garbage-ca
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: garbage-ca
data:
  ca.crt: |
{_indented(garbage_ca)}"""


def test_check_loads_certificates_and_names_the_broken_ones(ca, tmp_path):
    (tmp_path / "gw.yaml").write_text(_broken_material_config(ca, free_port(), free_port()))

    result = run_cli("check", "--config", str(tmp_path))

    assert result.returncode == 1, result.stdout
    assert ("ResolvedRefs=False (InvalidCertificateRef) [https]: spec.listeners[1].tls.certificateRefs[0]: "
            "Secret default/mismatched: tls.key does not match tls.crt") in result.stdout
    assert ("ResolvedRefs=False (InvalidCACertificateRef) [backend/default/api]: "
            "spec.validation.caCertificateRefs[0]: ConfigMap default/garbage-ca: ca.crt: no certificate could be "
            "loaded: no start line: cadata does not contain a certificate") in result.stdout
    assert result.stdout.rstrip().endswith("errors found")
    assert "Traceback" not in result.stderr


async def test_serve_leaves_out_only_what_does_not_load(ca, tmp_path):
    http_port, https_port = free_port(), free_port()
    (tmp_path / "gw.yaml").write_text(_broken_material_config(ca, http_port, https_port))
    proxy = start_proxy("--config", str(tmp_path), "--bind-address", "127.0.0.1", "--access-log", "off")
    try:
        await asyncio.to_thread(proxy.wait_ready)

        def status(path: str) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
            try:
                conn.request("GET", path, headers={"Host": "www.example"})
                return conn.getresponse().status
            finally:
                conn.close()

        assert await asyncio.to_thread(status, "/moved") == 302
        assert await asyncio.to_thread(status, "/tls") == 500
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", https_port), timeout=5).close()
    finally:
        code, _, err = proxy.stop()
    assert code == 0, err
    assert "Traceback" not in err
    assert "tls.key does not match tls.crt" in err


def test_a_clone_named_pyproxy_in_the_working_directory_does_not_shadow_the_package(tmp_path):
    """`python -m pyproxy` run from the folder that holds a clone: the clone directory has no
    __init__.py and a config/ directory, so were it found first it would become the package
    (a namespace package) and its config/ would stand in for pyproxy.config."""
    clone = tmp_path / "pyproxy"
    (clone / "config").mkdir(parents=True)
    (clone / "config" / "seed-example.yaml").write_bytes(SEED.read_bytes())

    usage = run_cli("--help", cwd=tmp_path)
    check = run_cli("check", "--config", "pyproxy/config/seed-example.yaml", cwd=tmp_path)

    assert usage.returncode == 0, usage.stderr
    assert "usage: pyproxy" in usage.stdout
    assert check.returncode == 0, check.stderr
    assert check.stdout.rstrip().endswith("ok")

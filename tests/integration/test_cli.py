"""The real CLI in a subprocess: exit codes and messages."""
from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

from tests.helpers.proc import run_cli, start_proxy

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


def test_serve_refuses_bad_config_without_traceback(tmp_path):
    (tmp_path / "routes.yaml").write_text(BAD_ROUTE)
    result = run_cli("--config", str(tmp_path), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0")
    assert result.returncode == 1
    assert "spec.rules[0].matches[0].path.type: unknown value 'Prefixx'" in result.stderr
    assert "Traceback" not in result.stderr


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

"""Inputs users actually have, through the real CLI in a subprocess: ``kubectl get -o yaml``
output, stray non-Kubernetes YAML, misspelled kinds, no routes, tab indentation."""
from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import pytest

from tests.helpers.proc import run_cli, start_proxy

# What `kubectl get httproute,backend -o yaml` writes (server-filled fields included).
KUBECTL_GET = """\
apiVersion: v1
items:
- apiVersion: gateway.networking.k8s.io/v1
  kind: HTTPRoute
  metadata:
    annotations:
      kubectl.kubernetes.io/last-applied-configuration: |
        {"apiVersion":"gateway.networking.k8s.io/v1","kind":"HTTPRoute","metadata":{"annotations":{},"name":"web","namespace":"default"},"spec":{"rules":[{"backendRefs":[{"group":"gateway.envoyproxy.io","kind":"Backend","name":"web"}]}]}}
    creationTimestamp: "2025-01-10T09:00:00Z"
    generation: 2
    managedFields:
    - apiVersion: gateway.networking.k8s.io/v1
      fieldsType: FieldsV1
      fieldsV1:
        f:metadata:
          f:annotations:
            .: {}
            f:kubectl.kubernetes.io/last-applied-configuration: {}
        f:spec:
          .: {}
          f:rules: {}
      manager: kubectl-client-side-apply
      operation: Update
      time: "2025-01-10T09:00:00Z"
    name: web
    namespace: default
    resourceVersion: "123456"
    uid: 0f0e8b4c-2a1d-4c1e-9d55-3b6f1a2c7e90
  spec:
    rules:
    - backendRefs:
      - group: gateway.envoyproxy.io
        kind: Backend
        name: web
        weight: 1
      matches:
      - path:
          type: PathPrefix
          value: /
  status:
    parents:
    - conditions:
      - lastTransitionTime: "2025-01-10T09:00:01Z"
        message: Route is accepted
        observedGeneration: 2
        reason: Accepted
        status: "True"
        type: Accepted
      controllerName: gateway.envoyproxy.io/gatewayclass-controller
      parentRef:
        group: gateway.networking.k8s.io
        kind: Gateway
        name: eg
- apiVersion: gateway.envoyproxy.io/v1alpha1
  kind: Backend
  metadata:
    creationTimestamp: "2025-01-10T09:00:00Z"
    deletionGracePeriodSeconds: 0
    deletionTimestamp: "2025-01-11T09:00:00Z"
    finalizers:
    - gateway.envoyproxy.io/backend-protection
    generateName: web-
    generation: 1
    name: web
    namespace: default
    ownerReferences:
    - apiVersion: v1
      kind: Service
      name: web
      uid: 7d3c1f2e-0000-4000-8000-000000000001
      controller: true
      blockOwnerDeletion: true
    resourceVersion: "123457"
    selfLink: /apis/gateway.envoyproxy.io/v1alpha1/namespaces/default/backends/web
    uid: 3c9d7b2a-1111-4222-8333-444455556666
  spec:
    endpoints:
    - ip:
        address: 127.0.0.1
        port: 9
  status:
    conditions:
    - type: Accepted
      status: "True"
kind: List
metadata:
  resourceVersion: ""
"""

MISSPELLED = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: eg
spec:
  controllerName: gateway.envoyproxy.io/gatewayclass-controller
---
apiVersion: gateway.networking.k8s.io/v1
kind: HttpRoute
metadata:
  name: web
spec:
  rules: []
"""

CONFIG_MAP = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ca\n"
NO_ROUTES = "no HTTPRoute or GRPCRoute in the configuration: every request will be answered 404"


def logged(stderr: str, level: str) -> list[str]:
    """The messages of the log lines at ``level`` (timestamps dropped)."""
    marker = f" {level} pyproxy: "
    return [line.split(marker, 1)[1] for line in stderr.splitlines() if marker in line]


def test_check_reads_kubectl_get_output_as_it_is(tmp_path):
    config = tmp_path / "get.yaml"
    config.write_text(KUBECTL_GET)
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"Backend default/web ({config}: document 1, items[1], line 54)",
        "  Accepted=True (Accepted)",
        f"HTTPRoute default/web ({config}: document 1, items[0], line 3)",
        "  Accepted=True (Accepted) [implicit]",
        "  ResolvedRefs=True (ResolvedRefs) [implicit]",
        "ok",
    ]
    assert logged(result.stderr, "WARNING") == []


def test_check_still_refuses_a_typo_in_a_listed_spec(tmp_path):
    config = tmp_path / "get.yaml"
    config.write_text(KUBECTL_GET.replace("        weight: 1", "        wieght: 1"))
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{config}: document 1, items[0] (HTTPRoute default/web), line 35: spec.rules[0].backendRefs[0].wieght: "
        "unknown field; did you mean 'weight'?",
    ]


def test_check_fails_on_a_misspelled_kind_and_names_the_right_one(tmp_path):
    config = tmp_path / "routes.yaml"
    config.write_text(MISSPELLED)
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 1
    assert logged(result.stderr, "INFO") == [f"skipping GatewayClass eg ({config}: document 1, line 1)"]
    assert logged(result.stderr, "WARNING") == [
        f"{config}: document 2 (HttpRoute default/web), line 9: kind: unknown kind 'HttpRoute', document skipped; "
        "did you mean HTTPRoute?",
        NO_ROUTES,
    ]
    assert result.stdout == "errors found\n"


def test_check_skips_files_that_are_not_kubernetes_objects(tmp_path):
    (tmp_path / "docker-compose.yml").write_text("services:\n  web:\n    image: nginx\n")
    (tmp_path / "values.yaml").write_text("replicaCount: 2\nimage:\n  repository: pyproxy\n")
    (tmp_path / "z-ca.yaml").write_text(CONFIG_MAP)
    result = run_cli("check", "--config", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert logged(result.stderr, "WARNING") == [
        f"{tmp_path / 'docker-compose.yml'}: document 1, line 1: not a Kubernetes object (no apiVersion or kind); skipped",
        f"{tmp_path / 'values.yaml'}: document 1, line 1: not a Kubernetes object (no apiVersion or kind); skipped",
        NO_ROUTES,
    ]
    assert result.stdout == "ok\n"


def test_a_document_meant_as_a_resource_is_still_an_error(tmp_path):
    config = tmp_path / "route.yaml"
    config.write_text("metadata:\n  name: web\nspec: {}\n")
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{config}: document 1, line 1: kind: required field missing",
        f"{config}: document 1, line 1: apiVersion: required field missing",
    ]


def test_check_names_tab_indentation(tmp_path):
    config = tmp_path / "ca.yaml"
    config.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n\tname: ca\n")
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"{config}: line 4: YAML syntax error: tabs are not allowed in YAML indentation"]


@pytest.mark.parametrize(
    "contents, kind_warning",
    [
        (CONFIG_MAP, []),
        (MISSPELLED, ["document 2 (HttpRoute default/web), line 9: kind: unknown kind 'HttpRoute', document skipped; "
                      "did you mean HTTPRoute?"]),
    ],
    ids=["no-routes", "misspelled-kind"],
)
async def test_serve_without_routes_answers_404_and_says_why(tmp_path, contents, kind_warning):
    """`serve` starts on a misspelled kind too: the warning is logged, the document skipped."""
    config = tmp_path / "config.yaml"
    config.write_text(contents)
    proxy = start_proxy("--config", str(config), "--access-log", "off")
    try:
        await asyncio.to_thread(proxy.wait_ready)

        def get() -> int:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{proxy.listen_port}/", timeout=10) as resp:
                    return resp.status
            except urllib.error.HTTPError as exc:
                return exc.code

        assert await asyncio.to_thread(get) == 404
    finally:
        code, _, err = proxy.stop()
    assert code == 0, err
    assert logged(err, "WARNING") == [f"{config}: {warning}" for warning in kind_warning] + [NO_ROUTES]

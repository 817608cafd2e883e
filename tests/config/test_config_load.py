"""Files, directories and documents: what is read, in which order, and how whole-config
problems (missing paths, duplicates, errors in several files) are reported."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from pyproxy.config import NO_ROUTES, Loaded, LoadWarning, Skipped, load, load_text
from pyproxy.config.envoygateway import Backend, FQDNEndpoint
from pyproxy.config.resources import (
    BackendTLSPolicy,
    HTTPRoute,
    HTTPURLRewriteFilter,
    Location,
)
from pyproxy.errors import ConfigError

# YAML syntax error messages are libyaml's wording (PyYAML's pure-Python parser words them
# differently); the C loader is what pyproxy uses whenever PyYAML has it.
requires_libyaml = pytest.mark.skipif(not yaml.__with_libyaml__, reason="syntax error wording is libyaml's")

# The repository's copy of the seed example (tests/integration/test_seed.py checks it is
# byte for byte the one in ../shared).
SEED = str(Path(__file__).resolve().parents[2] / "config" / "seed-example.yaml")


def route(name: str, namespace: str = "", spec: str = "spec: {}\n") -> str:
    namespace_line = f"  namespace: {namespace}\n" if namespace else ""
    return f"apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: {name}\n{namespace_line}{spec}"


def write(root: Path, relative: str, text: str) -> str:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def errors(paths: list[str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(paths)
    return info.value.messages


def names(loaded: Loaded) -> list[str]:
    return [resource.metadata.name for resource in loaded.resources]


def test_seed_example():
    loaded = load([SEED])
    assert [type(resource) for resource in loaded.resources] == [HTTPRoute, Backend, BackendTLSPolicy]
    assert loaded.skipped == ()
    http_route, backend, policy = loaded.resources

    assert http_route.location == Location(SEED, 1, 4)
    assert http_route.spec.hostnames == ("www.example.com",)
    assert [(ref.kind, ref.name) for ref in http_route.spec.parent_refs] == [("Gateway", "envoy-gateway")]
    (rule,) = http_route.spec.rules
    assert [(ref.group, ref.kind, ref.name) for ref in rule.backend_refs] == [("gateway.envoyproxy.io", "Backend", "https-backend")]
    assert [(match.path.type, match.path.value) for match in rule.matches] == [("PathPrefix", "/")]
    (rewrite,) = rule.filters
    assert (rewrite.type, rewrite.url_rewrite) == ("URLRewrite", HTTPURLRewriteFilter(hostname="www.httpbin.org"))

    assert backend.metadata.name == "https-backend"
    assert [endpoint.fqdn for endpoint in backend.spec.endpoints] == [FQDNEndpoint(hostname="www.httpbin.org", port=443)]

    assert (policy.metadata.namespace, policy.metadata.name) == ("default", "https-backend")
    assert [(ref.group, ref.kind, ref.name) for ref in policy.spec.target_refs] == [("gateway.envoyproxy.io", "Backend", "https-backend")]
    assert policy.spec.validation.hostname == "www.httpbin.org"
    assert policy.spec.validation.well_known_ca_certificates == "System"


def test_directory_is_read_recursively_in_sorted_order_skipping_dot_entries(tmp_path):
    write(tmp_path, "b.yaml", route("b"))
    write(tmp_path, "a.yml", route("a"))
    write(tmp_path, "sub/c.yaml", route("c"))
    write(tmp_path, "sub/deeper/d.yaml", route("d"))
    write(tmp_path, ".hidden.yaml", route("hidden-file"))
    write(tmp_path, ".git/e.yaml", route("hidden-dir"))
    write(tmp_path, "..data/f.yaml", route("configmap-mount"))
    write(tmp_path, "notes.txt", "not: yaml: at all")
    loaded = load([str(tmp_path)])
    assert names(loaded) == ["a", "b", "c", "d"]
    assert loaded.resources[2].location.file == os.path.join(str(tmp_path), "sub", "c.yaml")


def test_paths_are_read_in_the_order_given_and_each_file_once(tmp_path):
    first = write(tmp_path, "z/first.yaml", route("first"))
    write(tmp_path, "a/second.yaml", route("second"))
    loaded = load([first, str(tmp_path / "a"), str(tmp_path), first])
    assert names(loaded) == ["first", "second"]


def test_a_file_named_explicitly_is_read_whatever_its_name(tmp_path):
    assert names(load([write(tmp_path, "routes.conf", route("web"))])) == ["web"]


def test_multi_document_file_counts_empty_documents(tmp_path):
    text = "---\n# an empty first document\n---\n" + route("one") + "---\n---\n# only a comment\n---\n" + route("two") + "---\n"
    loaded = load([write(tmp_path, "multi.yaml", text)])
    assert [(resource.metadata.name, resource.location.document, resource.location.line) for resource in loaded.resources] == [
        ("one", 2, 4),
        ("two", 5, 13),
    ]


def test_unknown_kinds_are_skipped_with_their_location():
    loaded = load_text(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: eg}\nspec: {controllerName: x}\n"
        "---\nkind: Service\nmetadata: {name: app, namespace: apps}\nspec: {anything: [goes]}\n"
        "---\nkind: SecurityPolicy\n"
        "---\n" + route("web"),
        "all.yaml",
    )
    assert loaded.skipped == (
        Skipped("GatewayClass", "eg", Location("all.yaml", 1, 1)),
        Skipped("Service", "app", Location("all.yaml", 2, 6)),
        Skipped("SecurityPolicy", "", Location("all.yaml", 3, 10)),
    )
    assert [str(skipped) for skipped in loaded.skipped] == [
        "GatewayClass eg (all.yaml: document 1, line 1)",
        "Service app (all.yaml: document 2, line 6)",
        "SecurityPolicy (unnamed) (all.yaml: document 3, line 10)",
    ]
    assert names(loaded) == ["web"]


def test_a_single_string_is_not_a_list_of_paths():
    with pytest.raises(TypeError):
        load(SEED)


def test_empty_configuration_loads_nothing(tmp_path):
    assert load([write(tmp_path, "empty.yaml", "# nothing yet\n")]) == Loaded((), (), (LoadWarning(NO_ROUTES),))


def test_missing_path_and_directory_without_yaml(tmp_path):
    (tmp_path / "empty").mkdir()
    write(tmp_path, "docs/readme.md", "# hi")
    missing = str(tmp_path / "missing.yaml")
    assert errors([missing, str(tmp_path / "empty"), str(tmp_path / "docs")]) == [
        f"{missing}: no such file or directory",
        f"{tmp_path / 'empty'}: no YAML files found",
        f"{tmp_path / 'docs'}: no YAML files found",
    ]


def test_invalid_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"kind: Secret\n# caf\xe9\n")
    assert errors([str(path)]) == [f"{path}: line 2: not valid UTF-8"]


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + route("web").encode())
    assert names(load([str(path)])) == ["web"]


def test_duplicate_objects_name_both_locations(tmp_path):
    a = write(tmp_path, "a.yaml", route("web") + "---\n" + route("web", "other"))
    b = write(tmp_path, "b.yaml", "---\n" + route("api") + "---\n" + route("web", "default"))
    c = write(tmp_path, "c.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps}\n---\n"
                                  "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps, namespace: ignored}\n")
    assert errors([a, b, c]) == [
        f"{b}: document 2 (HTTPRoute default/web), line 8: duplicate object; first defined at {a}: document 1, line 1",
        f"{c}: document 2 (Namespace apps), line 5: duplicate object; first defined at {c}: document 1, line 1",
    ]


@requires_libyaml
def test_errors_in_several_files_are_reported_together_in_order(tmp_path):
    write(tmp_path, "1-routes.yaml", route("web", spec="spec:\n  hostnamez: []\n") + "---\n" + route("api", spec="spec:\n  rules: {}\n"))
    write(tmp_path, "2-broken.yaml", route("ok") + "---\nkey: [unclosed\n")
    write(tmp_path, "3-backend.yaml",
          "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {name: app}\nspec:\n"
          "  endpoints:\n  - fqdn: {hostname: app.example, port: https}\n")
    missing = str(tmp_path / "nope")
    root = str(tmp_path)
    assert errors([root, missing]) == [
        f"{root}/1-routes.yaml: document 1 (HTTPRoute default/web), line 6: spec.hostnamez: unknown field; did you mean 'hostnames'?",
        f"{root}/1-routes.yaml: document 2 (HTTPRoute default/api), line 13: spec.rules: expected a list, got a mapping",
        f"{root}/2-broken.yaml: line 8: YAML syntax error: did not find expected ',' or ']' (while parsing a flow sequence at line 7)",
        f"{root}/3-backend.yaml: document 1 (Backend default/app), line 6: spec.endpoints[0].fqdn.port: expected an integer, got 'https'",
        f"{missing}: no such file or directory",
    ]


KUBECTL_LIST = """\
apiVersion: v1
items:
- apiVersion: gateway.networking.k8s.io/v1
  kind: HTTPRoute
  metadata:
    annotations:
      kubectl.kubernetes.io/last-applied-configuration: |
        {"apiVersion":"gateway.networking.k8s.io/v1","kind":"HTTPRoute","metadata":{"name":"web"}}
    creationTimestamp: "2025-01-10T09:00:00Z"
    generation: 2
    managedFields:
    - apiVersion: gateway.networking.k8s.io/v1
      fieldsType: FieldsV1
      fieldsV1: {"f:spec": {".": {}, "f:rules": {}}}
      manager: kubectl-client-side-apply
      operation: Update
    name: web
    namespace: default
    resourceVersion: "123456"
    uid: 0f0e8b4c-2a1d-4c1e-9d55-3b6f1a2c7e90
  spec: {}
  status:
    parents: [{controllerName: gateway.envoyproxy.io/gatewayclass-controller}]
- apiVersion: v1
  kind: Service
  metadata: {name: web}
- apiVersion: v1
  kind: ConfigMap
  metadata:
    name: ca
    deletionGracePeriodSeconds: 0
    deletionTimestamp: "2025-01-11T09:00:00Z"
    finalizers: [example.com/protect]
    generateName: ca-
    ownerReferences: [{apiVersion: v1, kind: Service, name: web, uid: 7d3c1f2e}]
    selfLink: /api/v1/namespaces/default/configmaps/ca
kind: List
metadata:
  resourceVersion: ""
"""


def test_kubectl_list_is_read_item_by_item_ignoring_what_the_server_fills_in():
    loaded = load_text(KUBECTL_LIST, "get.yaml")
    route, config_map = loaded.resources
    assert route.location == Location("get.yaml", 1, 3, item=0)
    assert route.metadata.creation_timestamp == "2025-01-10T09:00:00Z"
    assert set(route.metadata.annotations) == {"kubectl.kubernetes.io/last-applied-configuration"}
    assert config_map.location == Location("get.yaml", 1, 27, item=2)
    assert str(config_map.location) == "get.yaml: document 1, items[2], line 27"
    assert loaded.skipped == (Skipped("Service", "web", Location("get.yaml", 1, 24, item=1)),)
    assert loaded.warnings == ()


def test_documents_that_are_not_kubernetes_objects_are_skipped_with_a_warning():
    loaded = load_text("services:\n  web: {image: nginx}\n---\n" + route("web"), "mixed.yaml")
    assert names(loaded) == ["web"]
    assert loaded.warnings == (
        LoadWarning("mixed.yaml: document 1, line 1: not a Kubernetes object (no apiVersion or kind); skipped"),
    )


@pytest.mark.parametrize(
    "kind, meant",
    [("HttpRoute", "HTTPRoute"), ("Backends", "Backend"), ("BackendTlsPolicy", "BackendTLSPolicy"),
     ("Gatway", "Gateway"), ("configmap", "ConfigMap"), ("GrpcRoute", "GRPCRoute")],
)
def test_a_misspelled_kind_is_a_likely_mistake(kind, meant):
    loaded = load_text(f"apiVersion: v1\nkind: {kind}\nmetadata: {{name: x}}\n---\n" + route("web"), "k.yaml")
    assert loaded.skipped == ()
    assert loaded.warnings == (
        LoadWarning(f"k.yaml: document 1 ({kind} default/x), line 2: kind: unknown kind {kind!r}, document skipped; "
                    f"did you mean {meant}?", mistake=True),
    )


@pytest.mark.parametrize("kind", ["GatewayClass", "TCPRoute", "BackendLBPolicy", "XBackendTrafficPolicy", "Service",
                                  "Deployment", "TLSRoute"])
def test_other_kinds_are_skipped_quietly(kind):
    loaded = load_text(f"apiVersion: v1\nkind: {kind}\nmetadata: {{name: x}}\n---\n" + route("web"), "k.yaml")
    assert [skipped.kind for skipped in loaded.skipped] == [kind]
    assert loaded.warnings == ()


def test_no_route_is_a_warning():
    loaded = load_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "k.yaml")
    assert loaded.warnings == (LoadWarning(NO_ROUTES),)

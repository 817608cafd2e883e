"""Well-formed documents become the expected typed resources."""
from __future__ import annotations

from pyproxy.config import load_text
from pyproxy.config.resources import (
    AllowedRoutes,
    ConfigMap,
    Gateway,
    GatewayListener,
    GatewaySpec,
    HTTPRouteRule,
    Metadata,
    ParentReference,
    ReferenceGrant,
    ReferenceGrantFrom,
    ReferenceGrantSpec,
    ReferenceGrantTo,
    RouteNamespaces,
    Secret,
)


def only(text: str):
    (resource,) = load_text(text, "x.yaml").resources
    return resource


ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
spec:
"""


def test_gateway_with_defaults():
    gateway = only("""\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: eg
  namespace: infra
  labels: {team: edge}
spec:
  gatewayClassName: eg
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: All
""")
    assert isinstance(gateway, Gateway)
    assert gateway.metadata == Metadata(name="eg", namespace="infra", labels={"team": "edge"})
    assert gateway.spec == GatewaySpec(
        gateway_class_name="eg",
        listeners=(
            GatewayListener(name="http", port=80, protocol="HTTP",
                            allowed_routes=AllowedRoutes(namespaces=RouteNamespaces(from_="All"))),
        ),
    )
    assert (gateway.location.file, gateway.location.document, gateway.location.line) == ("x.yaml", 1, 1)


def test_missing_namespace_means_default():
    assert only(ROUTE + "  hostnames: []\n").metadata.namespace == "default"


def test_empty_namespace_means_default():
    assert only(ROUTE.replace("  name: web\n", '  name: web\n  namespace: ""\n') + "  hostnames: []\n").metadata.namespace == "default"


def test_null_means_not_set():
    route = only(ROUTE.replace("  name: web\n", "  name: web\n  namespace:\n") + """\
  hostnames: ~
  rules:
  - matches: null
    timeouts:
""")
    assert route.metadata.namespace == "default"
    assert route.spec.hostnames == ()
    assert route.spec.rules == (HTTPRouteRule(),)


def test_string_fields_keep_the_source_text_of_other_scalars():
    route = only(ROUTE.replace("  name: web\n", "  name: web\n  creationTimestamp: 2024-05-01T10:00:00Z\n") + """\
  parentRefs:
  - name: eg
    sectionName: 443
  rules:
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set:
        - {name: x-flag, value: yes}
        - {name: x-version, value: 1.10}
        - {name: x-tab, value: "a\\tb"}
""")
    assert route.metadata.creation_timestamp == "2024-05-01T10:00:00Z"
    assert route.spec.parent_refs == (ParentReference(name="eg", section_name="443"),)
    headers = route.spec.rules[0].filters[0].request_header_modifier.set
    assert [header.value for header in headers] == ["yes", "1.10", "a\tb"]


def test_yaml_integers_and_booleans():
    backend = only("""\
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: app}
spec:
  fallback: on
  tls: {insecureSkipVerify: true}
  endpoints:
  - ip: {address: 10.0.0.1, port: 0x1BB}
""")
    assert backend.spec.fallback is True
    assert backend.spec.tls.insecure_skip_verify is True
    assert backend.spec.endpoints[0].ip.port == 443


def test_enums_durations_and_integer_literals():
    route = only(ROUTE + """\
  rules:
  - matches:
    - path: {type: Exact, value: /a}
      method: POST
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, statusCode: 301}
    timeouts: {request: 1h30m, backendRequest: 500ms}
    retry: {codes: [502, 503], attempts: 2, backoff: 1h1m1s1ms}
""")
    rule = route.spec.rules[0]
    assert (rule.matches[0].path.type, rule.matches[0].method) == ("Exact", "POST")
    assert rule.filters[0].request_redirect.status_code == 301
    assert (rule.timeouts.request, rule.timeouts.backend_request) == ("1h30m", "500ms")
    assert (rule.retry.codes, rule.retry.backoff) == ((502, 503), "1h1m1s1ms")


def test_fields_with_python_names_use_their_yaml_spelling():
    grant = only("""\
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: allow, namespace: apps}
spec:
  from:
  - {group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: web}
  to:
  - {group: "", kind: Service}
""")
    assert isinstance(grant, ReferenceGrant)
    assert grant.spec == ReferenceGrantSpec(
        from_=(ReferenceGrantFrom(group="gateway.networking.k8s.io", kind="HTTPRoute", namespace="web"),),
        to=(ReferenceGrantTo(group="", kind="Service"),),
    )


def test_secret_data_is_decoded_and_merged_with_string_data():
    secret = only("""\
apiVersion: v1
kind: Secret
metadata: {name: ca, namespace: apps}
type: kubernetes.io/tls
data:
  ca.crt: |
    LS0tLS1CRUdJTiBD
    RVJUSUZJQ0FURS0t
    LS0tCg==
  tls.key: b2xk
stringData:
  tls.key: new
status: {ignored: true}
""")
    assert isinstance(secret, Secret)
    assert secret.type == "kubernetes.io/tls"
    assert secret.data == {"ca.crt": "-----BEGIN CERTIFICATE-----\n", "tls.key": "new"}


def test_secret_type_defaults_to_opaque():
    secret = only("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n")
    assert (secret.type, secret.data) == ("Opaque", {})


def test_configmap_text_allows_line_breaks():
    configmap = only("""\
apiVersion: v1
kind: ConfigMap
metadata:
  name: ca
  annotations: {note: "line one\\r\\nline two"}
data:
  ca.crt: |
    -----BEGIN CERTIFICATE-----
    MIIB\tAAA
    -----END CERTIFICATE-----
""")
    assert isinstance(configmap, ConfigMap)
    assert configmap.data["ca.crt"] == "-----BEGIN CERTIFICATE-----\nMIIB\tAAA\n-----END CERTIFICATE-----\n"
    assert configmap.metadata.annotations == {"note": "line one\r\nline two"}


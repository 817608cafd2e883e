"""BackendTrafficPolicy, ClientTrafficPolicy and Backend spec.tls: what loads, and each shape
error as the whole located message."""
from __future__ import annotations

import pytest

from pyproxy.config import load_text
from pyproxy.config.envoygateway import (
    ClientTLSSpec,
    ClientTrafficPolicy,
    LoadBalancerSpec,
    SlowStart,
)
from pyproxy.config.resources import LocalPolicyTargetReferenceWithSectionName
from pyproxy.errors import ConfigError


def document(kind: str, spec: str) -> str:
    """An Envoy Gateway object named p; ``spec`` starts at line 6."""
    return f"apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: {kind}\nmetadata:\n  name: p\nspec:\n{spec}"


def targeting(kind: str) -> str:
    return f"  targetRefs:\n  - group: gateway.networking.k8s.io\n    kind: {kind}\n    name: web\n"


# Lines 1-9; a test's extra spec fields start at line 10.
BTP = document("BackendTrafficPolicy", targeting("HTTPRoute"))
CTP = document("ClientTrafficPolicy", targeting("Gateway"))
BTP_AT = "p.yaml: document 1 (BackendTrafficPolicy default/p)"
CTP_AT = "p.yaml: document 1 (ClientTrafficPolicy default/p)"


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(text, "p.yaml")
    return info.value.messages


def test_a_policy_reads_as_written():
    loaded = load_text(BTP + "  loadBalancer:\n    type: RoundRobin\n    slowStart:\n      window: 30s\n", "p.yaml")
    (policy,) = loaded.resources
    assert policy.spec.target_refs == (
        LocalPolicyTargetReferenceWithSectionName(group="gateway.networking.k8s.io", kind="HTTPRoute", name="web"),
    )
    assert policy.spec.load_balancer == LoadBalancerSpec(type="RoundRobin", slow_start=SlowStart(window="30s"))


def test_tls_versions_written_as_yaml_numbers_keep_their_text():
    (policy,) = load_text(CTP + "  tls:\n    minVersion: 1.2\n    maxVersion: 1.3\n    alpnProtocols: []\n",
                          "p.yaml").resources
    assert isinstance(policy, ClientTrafficPolicy)
    assert policy.spec.tls == ClientTLSSpec(min_version="1.2", max_version="1.3", alpn_protocols=())


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("  loadBalancr:\n    type: Random\n",
         f"{BTP_AT}, line 10: spec.loadBalancr: unknown field; did you mean 'loadBalancer'?"),
        ("  loadBalancer:\n    type: LeastRequests\n",
         f"{BTP_AT}, line 11: spec.loadBalancer.type: unknown value 'LeastRequests'; "
         "expected ConsistentHash, LeastRequest, Random or RoundRobin"),
        ("  timeout:\n    tcp:\n      connectTimeout: 1.5s\n",
         f"{BTP_AT}, line 12: spec.timeout.tcp.connectTimeout: invalid duration '1.5s'; "
         "expected a GEP-2257 duration such as 1h, 30s or 500ms"),
        ("  healthCheck:\n    active:\n      type: TCP\n      interval: 3x\n      tcp: {}\n",
         f"{BTP_AT}, line 13: spec.healthCheck.active.interval: invalid duration '3x'; "
         "expected a duration such as 1h, 30s, 1.5s or 500ms"),
        ("  healthCheck:\n    passive:\n      consecutive5xxErrors: 3\n",
         f"{BTP_AT}, line 12: spec.healthCheck.passive.consecutive5xxErrors: unknown field; "
         "did you mean 'consecutive5XxErrors'?"),
        ("  dns:\n    lookupFamily: IPv5\n",
         f"{BTP_AT}, line 11: spec.dns.lookupFamily: unknown value 'IPv5'; "
         "expected IPv4, IPv6, IPv4Preferred, IPv6Preferred or IPv4AndIPv6"),
        ("  circuitBreaker:\n    maxConnections: \"10\"\n",
         f"{BTP_AT}, line 11: spec.circuitBreaker.maxConnections: expected an integer, got '10'; remove the quotes"),
    ],
    ids=["misspelled-field", "bad-enum", "gep-duration", "go-duration", "field-case", "lookup-family", "quoted-int"],
)
def test_shape_errors(extra, expected):
    assert errors(BTP + extra) == [expected]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("  rateLimit:\n    type: Local\n", f"{BTP_AT}, line 10: spec.rateLimit: not supported by pyproxy; remove it"),
        ("  healthCheck:\n    active:\n      type: GRPC\n",
         f"{BTP_AT}, line 12: spec.healthCheck.active.type: 'GRPC' is not supported by pyproxy; expected HTTP or TCP"),
        ("  retry:\n    retryOn:\n      triggers: [5xx, unavailable]\n",
         f"{BTP_AT}, line 12: spec.retry.retryOn.triggers[1]: 'unavailable' is not supported by pyproxy; expected "
         "5xx, gateway-error, reset, reset-before-request, connect-failure, retriable-4xx, refused-stream or "
         "retriable-status-codes"),
        ("  healthCheck:\n    passive:\n      failurePercentageThreshold: 90\n",
         f"{BTP_AT}, line 12: spec.healthCheck.passive.failurePercentageThreshold: not supported by pyproxy; "
         "remove it"),
    ],
    ids=["rate-limit", "grpc-health-check", "grpc-retry-trigger", "failure-percentage"],
)
def test_what_envoy_gateway_has_and_pyproxy_does_not_is_refused_by_name(extra, expected):
    assert errors(BTP + extra) == [expected]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("  healthCheck:\n    active:\n      type: HTTP\n",
         f"{BTP_AT}, line 12: spec.healthCheck.active.http: required when type is HTTP"),
        ("  loadBalancer:\n    type: ConsistentHash\n    consistentHash:\n      type: Cookie\n"
         "      cookie: {name: c}\n      header: {name: x}\n",
         f"{BTP_AT}, line 15: spec.loadBalancer.consistentHash.header: header can only be set when type is Header"),
        ("  healthCheck:\n    active:\n      type: TCP\n      tcp:\n        send:\n          type: Binary\n"
         "          text: PING\n",
         f"{BTP_AT}, line 15: spec.healthCheck.active.tcp.send.binary: required when type is Binary"),
        ("  targetRef:\n    group: gateway.networking.k8s.io\n    kind: HTTPRoute\n    name: web\n",
         f"{BTP_AT}, line 11: spec.targetRef: set either targetRefs or targetRef (deprecated), not both"),
    ],
    ids=["union-member-missing", "union-member-of-another-type", "payload", "both-target-fields"],
)
def test_what_spans_fields(extra, expected):
    assert errors(BTP + extra) == [expected]


def test_a_policy_needs_a_target():
    assert errors(document("BackendTrafficPolicy", "  dns: {}\n")) == [f"{BTP_AT}, line 6: spec.targetRefs: required field missing (or the deprecated targetRef)"]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("  connection:\n    bufferLimit: 32KB\n",
         f"{CTP_AT}, line 11: spec.connection.bufferLimit: invalid size '32KB'; "
         "expected bytes or a quantity such as 32Ki or 1Mi"),
        ("  connection:\n    bufferLimit: -1\n", f"{CTP_AT}, line 11: spec.connection.bufferLimit: size -1 is negative"),
        ("  headers:\n    requestId: Preserve\n",
         f"{CTP_AT}, line 11: spec.headers.requestId: unknown field; did you mean 'requestID'?"),
        ("  tls:\n    minVersion: 1.4\n",
         f"{CTP_AT}, line 11: spec.tls.minVersion: unknown value '1.4'; expected Auto, 1.0, 1.1, 1.2 or 1.3"),
        ("  tls:\n    clientValidation: {}\n",
         f"{CTP_AT}, line 11: spec.tls.clientValidation: not supported by pyproxy; remove it"),
        ("  timeout:\n    http:\n      requestHeadersReceivedTimeout: 10 seconds\n",
         f"{CTP_AT}, line 12: spec.timeout.http.requestHeadersReceivedTimeout: invalid duration '10 seconds'; "
         "expected a GEP-2257 duration such as 1h, 30s or 500ms"),
        ("  clientIPDetection:\n    xForwardedFor:\n      trustedCIDRs: [10.0.0.0/8]\n",
         f"{CTP_AT}, line 12: spec.clientIPDetection.xForwardedFor.trustedCIDRs: not supported by pyproxy; remove it"),
    ],
    ids=["size", "negative-size", "requestID-spelling", "tls-version", "client-validation", "duration",
         "trusted-cidrs"],
)
def test_client_traffic_policy_errors(extra, expected):
    assert errors(CTP + extra) == [expected]


def test_backend_tls_fields_pyproxy_does_not_implement():
    text = document("Backend", "  endpoints:\n  - ip: {address: 10.0.0.1, port: 443}\n  tls:\n    sni: b.example.com\n"
                               "    ciphers: [ECDHE-RSA-AES128-GCM-SHA256]\n    minVersion: \"1.5\"\n")
    assert errors(text) == [
        "p.yaml: document 1 (Backend default/p), line 10: spec.tls.ciphers: not supported by pyproxy; remove it",
        "p.yaml: document 1 (Backend default/p), line 11: spec.tls.minVersion: unknown value '1.5'; "
        "expected Auto, 1.0, 1.1, 1.2 or 1.3",
    ]

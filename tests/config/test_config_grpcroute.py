"""GRPCRoute documents: what they read as, and their shape errors (whole messages)."""
from __future__ import annotations

import pytest

from pyproxy.config import load_text
from pyproxy.config.resources import (
    GRPCBackendRef,
    GRPCMethodMatch,
    GRPCRoute,
    GRPCRouteFilter,
    GRPCRouteMatch,
    GRPCRouteRule,
    HTTPHeader,
    HTTPHeaderFilter,
    HTTPHeaderMatch,
    ParentReference,
)
from tests.config.test_config_errors import errors

# Lines 1-5; a test's spec body starts at line 6.
ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: echo
spec:
"""
PREFIX = "routes.yaml: document 1 (GRPCRoute default/echo)"


@pytest.mark.parametrize("version", ["gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1alpha2"])
def test_a_grpcroute_reads_as_written(version):
    text = ROUTE.replace("gateway.networking.k8s.io/v1", version) + """\
  parentRefs:
  - name: gw
    sectionName: grpc
  hostnames: [grpc.example.com]
  rules:
  - name: say
    matches:
    - method:
        service: grpc.echo.Echo
        method: Say
      headers:
      - name: x-tenant
        value: a
    - method:
        type: RegularExpression
        method: Say.*
    - {}
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set:
        - name: x-served-by
          value: echo
    backendRefs:
    - group: gateway.envoyproxy.io
      kind: Backend
      name: echo
      port: 9000
      weight: 2
"""
    (route,) = load_text(text, "routes.yaml").resources
    assert isinstance(route, GRPCRoute)
    assert route.spec.parent_refs == (ParentReference(name="gw", section_name="grpc"),)
    assert route.spec.hostnames == ("grpc.example.com",)
    assert route.spec.rules == (
        GRPCRouteRule(
            name="say",
            matches=(
                GRPCRouteMatch(GRPCMethodMatch(service="grpc.echo.Echo", method="Say"),
                               (HTTPHeaderMatch(name="x-tenant", value="a"),)),
                GRPCRouteMatch(GRPCMethodMatch(type="RegularExpression", method="Say.*")),
                GRPCRouteMatch(),
            ),
            filters=(GRPCRouteFilter(type="ResponseHeaderModifier",
                                     response_header_modifier=HTTPHeaderFilter(set=(HTTPHeader("x-served-by", "echo"),))),),
            backend_refs=(GRPCBackendRef(name="echo", group="gateway.envoyproxy.io", kind="Backend", port=9000, weight=2),),
        ),
    )


def test_an_unsupported_version():
    text = ROUTE.replace("gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1") + "  rules: []\n"
    assert errors(text) == [
        f"{PREFIX}, line 1: apiVersion: unsupported version 'gateway.networking.k8s.io/v1beta1' for GRPCRoute; "
        "expected gateway.networking.k8s.io/v1 or gateway.networking.k8s.io/v1alpha2"
    ]


def test_what_httproute_has_and_grpcroute_does_not():
    text = ROUTE + """\
  rules:
  - matches:
    - path:
        value: /
    filters:
    - type: URLRewrite
    timeouts:
      request: 1s
"""
    assert errors(text) == [
        f"{PREFIX}, line 8: spec.rules[0].matches[0].path: unknown field; expected one of method, headers",
        f"{PREFIX}, line 11: spec.rules[0].filters[0].type: unknown value 'URLRewrite'; "
        "expected RequestHeaderModifier, ResponseHeaderModifier, RequestMirror or ExtensionRef",
        f"{PREFIX}, line 12: spec.rules[0].timeouts: unknown field; expected one of name, matches, filters, backendRefs",
    ]


def test_a_method_match_names_a_service_or_a_method():
    text = ROUTE + """\
  rules:
  - matches:
    - method:
        type: Exact
    - method: {}
    - method:
        type: RegularExpression
        service: ""
        method: ""
    - method:
        serivce: grpc.echo.Echo
    - method:
        type: Prefix
        service: grpc
"""
    assert errors(text) == [
        f"{PREFIX}, line 9: spec.rules[0].matches[0].method: one or both of service and method are required",
        f"{PREFIX}, line 10: spec.rules[0].matches[1].method: one or both of service and method are required",
        f"{PREFIX}, line 12: spec.rules[0].matches[2].method: one or both of service and method are required",
        f"{PREFIX}, line 16: spec.rules[0].matches[3].method.serivce: unknown field; did you mean 'service'?",
        f"{PREFIX}, line 18: spec.rules[0].matches[4].method.type: unknown value 'Prefix'; "
        "expected Exact or RegularExpression",
    ]


@pytest.mark.parametrize(
    "field, value, example",
    [
        ("service", "grpc.echo/Echo", "dot-separated names such as helloworld.Greeter"),
        ("service", "grpc..Echo", "dot-separated names such as helloworld.Greeter"),
        ("service", "1grpc.Echo", "dot-separated names such as helloworld.Greeter"),
        ("service", "", "dot-separated names such as helloworld.Greeter"),
        ("method", "Say/Hello", "a name such as SayHello"),
        ("method", "Say.*", "a name such as SayHello"),
        ("method", "9Lives", "a name such as SayHello"),
    ],
)
def test_exact_names_are_protobuf_names(field, value, example):
    other = "method: Say" if field == "service" else "service: grpc.echo.Echo"
    text = ROUTE + f"""\
  rules:
  - matches:
    - method:
        {other}
        {field}: '{value}'
"""
    assert errors(text) == [
        f"{PREFIX}, line 10: spec.rules[0].matches[0].method.{field}: {value!r} is not a gRPC {field} name "
        f"({example}: letters, digits and '_', not starting with a digit); use type RegularExpression for a pattern"
    ]


def test_exact_names_that_are_valid():
    text = ROUTE + """\
  rules:
  - matches:
    - method:
        service: .grpc_echo.v1.Echo_2
        method: _Say2
"""
    assert load_text(text, "routes.yaml").resources


def test_regular_expressions_must_compile_with_re2():
    text = ROUTE + """\
  rules:
  - matches:
    - method:
        type: RegularExpression
        service: '(?=grpc)'
        method: Say
    - method:
        type: RegularExpression
        method: '(a)\\1'
      headers:
      - name: x-a
        type: RegularExpression
        value: '[z-a]'
"""
    assert errors(text) == [
        f"{PREFIX}, line 10: spec.rules[0].matches[0].method.service: "
        "invalid RE2 regular expression '(?=grpc)': invalid perl operator: (?=",
        f"{PREFIX}, line 14: spec.rules[0].matches[1].method.method: "
        "invalid RE2 regular expression '(a)\\\\1': invalid escape sequence: \\1",
        f"{PREFIX}, line 18: spec.rules[0].matches[1].headers[0].value: "
        "invalid RE2 regular expression '[z-a]': invalid character class range: z-a",
    ]


def test_filters_and_backend_refs_are_checked_as_httproute_ones():
    text = ROUTE + """\
  rules:
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set:
        - name: "x café"
          value: "€"
    backendRefs:
    - name: echo
      weight: "2"
      filters:
      - type: RequestRedirect
"""
    assert errors(text) == [
        f"{PREFIX}, line 11: spec.rules[0].filters[0].requestHeaderModifier.set[0].name: "
        "'x café' is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)",
        f"{PREFIX}, line 12: spec.rules[0].filters[0].requestHeaderModifier.set[0].value: "
        "character '€' is not latin-1, so it cannot be sent in an HTTP message head",
        f"{PREFIX}, line 15: spec.rules[0].backendRefs[0].weight: expected an integer, got '2'; remove the quotes",
        f"{PREFIX}, line 17: spec.rules[0].backendRefs[0].filters[0].type: unknown value 'RequestRedirect'; "
        "expected RequestHeaderModifier, ResponseHeaderModifier, RequestMirror or ExtensionRef",
    ]

"""Shape errors: each test asserts whole messages (file, document, label, line, field path)."""
from __future__ import annotations

import pytest
import yaml

from pyproxy.config import load_text
from pyproxy.errors import ConfigError

# YAML syntax error messages are libyaml's wording (PyYAML's pure-Python parser words them
# differently); the C loader is what pyproxy uses whenever PyYAML has it.
requires_libyaml = pytest.mark.skipif(not yaml.__with_libyaml__, reason="syntax error wording is libyaml's")

# Lines 1-5; a test's spec body starts at line 6.
ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
spec:
"""
PREFIX = "routes.yaml: document 1 (HTTPRoute default/web)"


def errors(text: str, filename: str = "routes.yaml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(text, filename)
    assert str(info.value) == "\n".join(info.value.messages)
    return info.value.messages


def test_bad_enum_in_the_second_document():
    text = "---\n# nothing here\n---\n" + ROUTE + """\
  rules:
  - matches:
    - path:
        type: Prefixx
        value: /
"""
    assert errors(text) == [
        "routes.yaml: document 2 (HTTPRoute default/web), line 12: spec.rules[0].matches[0].path.type: "
        "unknown value 'Prefixx'; expected Exact, PathPrefix or RegularExpression"
    ]


def test_bad_integer_enum():
    text = ROUTE + """\
  rules:
  - filters:
    - type: RequestRedirect
      requestRedirect:
        statusCode: 305
"""
    assert errors(text) == [
        f"{PREFIX}, line 10: spec.rules[0].filters[0].requestRedirect.statusCode: "
        "unknown value 305; expected 301, 302, 303, 307 or 308"
    ]


def test_unknown_field_with_suggestion():
    text = ROUTE + """\
  rules:
  - backendRefz:
    - name: app
"""
    assert errors(text) == [f"{PREFIX}, line 7: spec.rules[0].backendRefz: unknown field; did you mean 'backendRefs'?"]


def test_unknown_field_without_close_match_lists_valid_names():
    text = ROUTE + """\
  rules:
  - weight: 3
"""
    assert errors(text) == [
        f"{PREFIX}, line 7: spec.rules[0].weight: unknown field; "
        "expected one of name, matches, filters, backendRefs, timeouts, retry"
    ]


def test_unknown_top_level_field_suggests_among_known_keys():
    text = ROUTE.replace("kind:", "status: {}\nkind:") + "  hostnames: []\nspecs: {}\n"
    assert errors(text) == [
        "routes.yaml: document 1 (HTTPRoute default/web), line 8: specs: unknown field; did you mean 'spec'?"
    ]


def test_missing_required_field():
    text = """\
apiVersion: gateway.networking.k8s.io/v1alpha3
kind: BackendTLSPolicy
metadata:
  name: tls
  namespace: apps
spec:
  targetRefs:
  - group: gateway.envoyproxy.io
    kind: Backend
    name: app
  validation:
    wellKnownCACertificates: System
"""
    assert errors(text, "policy.yaml") == [
        "policy.yaml: document 1 (BackendTLSPolicy apps/tls), line 12: spec.validation.hostname: required field missing"
    ]


@pytest.mark.parametrize(
    "value, expected",
    [
        ("eighty", "expected an integer, got 'eighty'"),
        ('"80"', "expected an integer, got '80'; remove the quotes"),
        ("80.5", "expected an integer, got 80.5"),
        ("true", "expected an integer, got true"),
        ("[80]", "expected an integer, got a list"),
        ("{n: 80}", "expected an integer, got a mapping"),
        ("", "expected an integer, got null"),
    ],
)
def test_wrong_type_for_an_integer(value, expected):
    text = f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: eg
spec:
  gatewayClassName: eg
  listeners:
  - name: http
    protocol: HTTP
    port: {value}
"""
    assert errors(text, "gw.yaml") == [f"gw.yaml: document 1 (Gateway default/eg), line 10: spec.listeners[0].port: {expected}"]


@pytest.mark.parametrize(
    "body, expected",
    [
        ("  hostnames: www.example.com\n", "line 6: spec.hostnames: expected a list, got 'www.example.com'"),
        ("  hostnames: [[a]]\n", "line 6: spec.hostnames[0]: expected a string, got a list"),
        ("  hostnames: [{a: b}]\n", "line 6: spec.hostnames[0]: expected a string, got a mapping"),
        ("  hostnames: [~]\n", "line 6: spec.hostnames[0]: expected a string, got null"),
        ("  hostnames: [!!binary aGk=]\n", "line 6: spec.hostnames[0]: expected a string, got a value tagged !!binary"),
        ("  rules: [{matches: [{path: /x}]}]\n", "line 6: spec.rules[0].matches[0].path: expected a mapping, got '/x'"),
        ("  parentRefs:\n  - name: eg\n    port: 0x1G\n", "line 8: spec.parentRefs[0].port: expected an integer, got '0x1G'"),
    ],
)
def test_wrong_types(body, expected):
    assert errors(ROUTE + body) == [f"{PREFIX}, {expected}"]


def test_wrong_type_for_a_boolean():
    text = """\
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata:
  name: app
spec:
  tls:
    insecureSkipVerify: "true"
  fallback: maybe
"""
    assert errors(text, "b.yaml") == [
        "b.yaml: document 1 (Backend default/app), line 7: spec.tls.insecureSkipVerify: expected a boolean, got 'true'; remove the quotes",
        "b.yaml: document 1 (Backend default/app), line 8: spec.fallback: expected a boolean, got 'maybe'",
    ]


def test_wrong_type_for_a_map():
    text = ROUTE.replace("  name: web\n", "  name: web\n  labels: [a, b]\n") + "  hostnames: []\n"
    assert errors(text) == [f"{PREFIX}, line 5: metadata.labels: expected a mapping, got a list"]


@pytest.mark.parametrize("escape, shown", [(r"\r", r"'\r'"), (r"\n", r"'\n'"), (r"\0", r"'\x00'"), (r"\e", r"'\x1b'")])
def test_control_character_in_a_header_value(escape, shown):
    text = ROUTE + f"""\
  rules:
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set:
        - name: x-test
          value: "ok{escape}evil: 1"
"""
    assert errors(text) == [
        f"{PREFIX}, line 12: spec.rules[0].filters[0].requestHeaderModifier.set[0].value: control character {shown} not allowed"
    ]


def test_text_sent_in_an_http_head_must_be_latin1():
    text = ROUTE + """\
  rules:
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set:
        - name: x-a
          value: "é€"
    - type: URLRewrite
      urlRewrite:
        hostname: "€.example"
        path:
          type: ReplaceFullPath
          replaceFullPath: "/caf€"
  - filters:
    - type: RequestRedirect
      requestRedirect:
        hostname: "☃.example"
        path:
          type: ReplacePrefixMatch
          replacePrefixMatch: "/✓"
    backendRefs:
    - name: app
      filters:
      - type: ResponseHeaderModifier
        responseHeaderModifier:
          add:
          - name: x-b
            value: "ok ÿ but not Ā"
"""
    problem = "is not latin-1, so it cannot be sent in an HTTP message head"
    assert errors(text) == [
        f"{PREFIX}, line 12: spec.rules[0].filters[0].requestHeaderModifier.set[0].value: character '€' {problem}",
        f"{PREFIX}, line 15: spec.rules[0].filters[1].urlRewrite.hostname: character '€' {problem}",
        f"{PREFIX}, line 18: spec.rules[0].filters[1].urlRewrite.path.replaceFullPath: character '€' {problem}",
        f"{PREFIX}, line 22: spec.rules[1].filters[0].requestRedirect.hostname: character '☃' {problem}",
        f"{PREFIX}, line 25: spec.rules[1].filters[0].requestRedirect.path.replacePrefixMatch: character '✓' {problem}",
        f"{PREFIX}, line 33: spec.rules[1].backendRefs[0].filters[0].responseHeaderModifier.add[0].value: "
        f"character 'Ā' {problem}",
    ]


def test_header_names_must_be_tokens():
    text = ROUTE + """\
  rules:
  - matches:
    - headers:
      - name: "bad header"
        value: x
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set:
        - name: ":authority"
          value: evil.example
        add:
        - name: "x-café"
          value: "1"
        remove: ["x/y", ""]
    - type: CORS
      cors:
        allowHeaders: ["x-ok", "x €"]
        exposeHeaders: ["x(y)"]
"""
    problem = "is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)"
    assert errors(text) == [
        f"{PREFIX}, line 9: spec.rules[0].matches[0].headers[0].name: 'bad header' {problem}",
        f"{PREFIX}, line 15: spec.rules[0].filters[0].requestHeaderModifier.set[0].name: ':authority' {problem}",
        f"{PREFIX}, line 18: spec.rules[0].filters[0].requestHeaderModifier.add[0].name: 'x-café' {problem}",
        f"{PREFIX}, line 20: spec.rules[0].filters[0].requestHeaderModifier.remove[0]: 'x/y' {problem}",
        f"{PREFIX}, line 20: spec.rules[0].filters[0].requestHeaderModifier.remove[1]: '' {problem}",
        f"{PREFIX}, line 23: spec.rules[0].filters[1].cors.allowHeaders[1]: 'x €' {problem}",
        f"{PREFIX}, line 24: spec.rules[0].filters[1].cors.exposeHeaders[0]: 'x(y)' {problem}",
    ]


def test_line_break_from_a_block_scalar_in_a_single_line_field():
    text = ROUTE + "  hostnames:\n  - |\n    www.example.com\n"
    assert errors(text) == [f"{PREFIX}, line 7: spec.hostnames[0]: control character '\\n' not allowed"]


def test_control_character_in_a_map_key():
    text = ROUTE.replace("  name: web\n", '  name: web\n  labels: {"a\\tb": x, "c\\rd": y}\n') + "  hostnames: []\n"
    assert errors(text) == [f"{PREFIX}, line 5: metadata.labels: control character '\\r' not allowed"]


@pytest.mark.parametrize("duration", ["10 seconds", "10", "1d", "1.5s", "123456s", "1h1m1s1ms1h", "-1s"])
def test_bad_duration(duration):
    text = ROUTE + f"  rules:\n  - timeouts:\n      request: {duration}\n"
    assert errors(text) == [
        f"{PREFIX}, line 8: spec.rules[0].timeouts.request: invalid duration '{duration}'; "
        "expected a GEP-2257 duration such as 1h, 30s or 500ms"
    ]


@pytest.mark.parametrize(
    "pattern, problem",
    [
        (r"(a)\1", r"invalid escape sequence: \1"),
        ("(?=x)", "invalid perl operator: (?="),
        ("(?!x)", "invalid perl operator: (?!"),
        ("[z-a]", "invalid character class range: z-a"),
        ("/unclosed(", "missing ): /unclosed("),
    ],
)
def test_regular_expression_re2_cannot_compile(pattern, problem):
    text = ROUTE + f"""\
  rules:
  - matches:
    - path:
        type: RegularExpression
        value: '{pattern}'
      headers:
      - name: x-a
        type: RegularExpression
        value: '{pattern}'
      queryParams:
      - name: q
        value: '{pattern}'
        type: RegularExpression
"""
    message = f"invalid RE2 regular expression {pattern!r}: {problem}"
    assert errors(text) == [
        f"{PREFIX}, line 10: spec.rules[0].matches[0].path.value: {message}",
        f"{PREFIX}, line 14: spec.rules[0].matches[0].headers[0].value: {message}",
        f"{PREFIX}, line 17: spec.rules[0].matches[0].queryParams[0].value: {message}",
    ]


def test_exact_values_are_not_regular_expressions():
    text = ROUTE + """\
  rules:
  - matches:
    - headers:
      - name: x-a
        value: '(?=x)'
"""
    assert load_text(text, "routes.yaml").resources


@pytest.mark.parametrize(
    "value, problem",
    [
        ('"a$b="', "invalid base64 (only base64 data is allowed)"),
        ("YWJj=", "invalid base64 (incorrect padding)"),
        ("=YWJ", "invalid base64 (leading padding not allowed)"),
        ("YWJé", "invalid base64 (only base64 data is allowed)"),
        ("YWJjZA", "invalid base64 (incorrect padding)"),
        ("YWJjZA==YQ==", "invalid base64 (excess data after padding)"),
        ("//79", "decoded value is not UTF-8 text"),
        ("YQBi", "control character '\\x00' not allowed"),
    ],
)
def test_invalid_secret_data(value, problem):
    text = f"""\
apiVersion: v1
kind: Secret
metadata:
  name: ca
  namespace: apps
data:
  ca.crt: {value}
"""
    assert errors(text, "secret.yaml") == [f"secret.yaml: document 1 (Secret apps/ca), line 7: data[ca.crt]: {problem}"]


@requires_libyaml
@pytest.mark.parametrize(
    "text, problem",
    [
        ("a: [1\n", "line 2: YAML syntax error: did not find expected ',' or ']' (while parsing a flow sequence at line 1)"),
        ("a: b: c\n", "line 1: YAML syntax error: mapping values are not allowed in this context"),
        ("a: 1\n  b: 2\n", "line 2: YAML syntax error: mapping values are not allowed in this context"),
        ("a: *nowhere\n", "line 1: YAML syntax error: found undefined alias"),
        ("a: 1\nb: 'x\x01'\n", "line 2: YAML syntax error: unacceptable character '\\x01' (control characters are not allowed)"),
    ],
)
def test_yaml_syntax_error(text, problem):
    assert errors(text, "bad.yaml") == [f"bad.yaml: {problem}"]


@requires_libyaml
def test_documents_before_a_syntax_error_are_still_checked():
    text = ROUTE + "  hostname: []\n---\na: [\n"
    assert errors(text) == [
        f"{PREFIX}, line 6: spec.hostname: unknown field; did you mean 'hostnames'?",
        "routes.yaml: line 9: YAML syntax error: did not find expected node content (while parsing a flow node at line 9)",
    ]


def test_duplicate_keys():
    text = ROUTE + """\
  hostnames: [a.example]
  rules:
  - matches: []
    matches: []
  hostnames: [b.example]
"""
    assert errors(text) == [
        f"{PREFIX}, line 9: spec.rules[0]: duplicate key 'matches' (first at line 8)",
        f"{PREFIX}, line 10: spec: duplicate key 'hostnames' (first at line 6)",
    ]


def test_merge_keys_are_refused():
    text = ROUTE + "  <<: {hostnames: [a]}\n"
    assert errors(text) == [f"{PREFIX}, line 6: spec: merge keys (<<) are not supported"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("- a\n- b\n", "line 1: expected a Kubernetes object (a mapping), got a list"),
        ("just text\n", "line 1: expected a Kubernetes object (a mapping), got 'just text'"),
        ("apiVersion: v1\nmetadata: {name: x}\n", "line 1: kind: required field missing"),
        ("kind: Secret\nmetadata: {name: x}\n", "(Secret default/x), line 1: apiVersion: required field missing"),
        ("kind: {a: b}\napiVersion: v1\n", "line 1: kind: expected a string, got a mapping"),
        ("kind: Secret\napiVersion: v1\n", "(Secret), line 1: metadata: required field missing"),
        ("kind: Secret\napiVersion: v1\nmetadata: {namespace: a}\n", "(Secret), line 3: metadata.name: required field missing"),
        ("kind: Secret\napiVersion: v1\nmetadata: x\n", "(Secret), line 3: metadata: expected a mapping, got 'x'"),
        (
            "kind: HTTPRoute\napiVersion: gateway.networking.k8s.io/v1alpha2\nmetadata: {name: r}\n",
            "(HTTPRoute default/r), line 2: apiVersion: unsupported version 'gateway.networking.k8s.io/v1alpha2' for HTTPRoute; "
            "expected gateway.networking.k8s.io/v1 or gateway.networking.k8s.io/v1beta1",
        ),
        (
            "kind: Namespace\napiVersion: v2\nmetadata: {name: team-a}\n",
            "(Namespace team-a), line 2: apiVersion: unsupported version 'v2' for Namespace; expected v1",
        ),
    ],
)
def test_document_header_errors(text, expected):
    sep = "" if expected.startswith("(") else ","
    assert errors(text, "x.yaml") == [f"x.yaml: document 1{sep} {expected}"]


def test_many_errors_in_one_document_are_all_reported_in_order():
    text = ROUTE + """\
  parentRefs:
  - name: eg
    port: http
  hostnames: [ok.example, {bad: 1}]
  rules:
  - matches:
    - method: FETCH
    backendRefs:
    - weight: 2
"""
    assert errors(text) == [
        f"{PREFIX}, line 8: spec.parentRefs[0].port: expected an integer, got 'http'",
        f"{PREFIX}, line 9: spec.hostnames[1]: expected a string, got a mapping",
        f"{PREFIX}, line 12: spec.rules[0].matches[0].method: unknown value 'FETCH'; "
        "expected GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE or PATCH",
        f"{PREFIX}, line 14: spec.rules[0].backendRefs[0].name: required field missing",
    ]


@pytest.mark.parametrize(
    "text, line",
    [
        ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n\tname: x\n", 4),
        (ROUTE + "  rules:\n  - matches:\n    \t- path: {value: /}\n", 8),
        ("apiVersion: v1\n\t\nkind: ConfigMap\n", 2),
    ],
)
def test_tab_indentation_is_named(text, line):
    assert errors(text) == [f"routes.yaml: line {line}: YAML syntax error: tabs are not allowed in YAML indentation"]


LIST = """\
apiVersion: v1
kind: List
metadata:
  resourceVersion: ""
items:
- apiVersion: gateway.networking.k8s.io/v1
  kind: HTTPRoute
  metadata:
    name: web
    uid: 0f0e8b4c-2a1d-4c1e-9d55-3b6f1a2c7e90
    lables: {app: web}
  spec:
    rules:
    - backendRefz: []
- metadata: {name: nameless}
  spec: {}
"""


def test_errors_in_list_items_name_the_item():
    assert errors(LIST, "list.yaml") == [
        "list.yaml: document 1, items[0] (HTTPRoute default/web), line 11: metadata.lables: "
        "unknown field; did you mean 'labels'?",
        "list.yaml: document 1, items[0] (HTTPRoute default/web), line 14: spec.rules[0].backendRefz: "
        "unknown field; did you mean 'backendRefs'?",
        "list.yaml: document 1, items[1], line 15: kind: required field missing",
        "list.yaml: document 1, items[1], line 15: apiVersion: required field missing",
    ]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("apiVersion: v2\nkind: List\nitems: []\n", "line 1: apiVersion: unsupported version 'v2' for List; expected v1"),
        ("kind: List\nitems: []\n", "line 1: apiVersion: required field missing"),
        ("apiVersion: v1\nkind: List\n", "line 1: items: required field missing"),
        ("apiVersion: v1\nkind: List\nitems: {a: b}\n", "line 3: items: expected a list"),
        ("apiVersion: v1\nkind: List\nitems: []\nmetdata: {}\n", "line 4: metdata: unknown field; did you mean 'metadata'?"),
    ],
)
def test_list_shape(text, expected):
    assert errors(text, "list.yaml") == [f"list.yaml: document 1 (List), {expected}"]

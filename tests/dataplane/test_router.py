"""Router tables: host index, Host normalisation, path/header/query/method matching, request
path normalisation. Pure functions, no sockets."""
from __future__ import annotations

import pytest

from pyproxy import ir
from pyproxy.dataplane.http import normalize_path, split_target, valid_host
from pyproxy.dataplane.router import HostIndex, Matcher, normalize_host, path_matcher, value_matcher

INDEX = HostIndex([
    ("example.com", "exact"),
    ("*.example.com", "wild"),
    ("*.b.example.com", "wild-b"),
    ("*", "any"),
])


@pytest.mark.parametrize("host, expected", [
    ("example.com", "exact"),
    ("a.example.com", "wild"),
    ("a.b.example.com", "wild-b"),  # the longest wildcard wins
    ("x.a.b.example.com", "wild-b"),
    ("b.example.com", "wild"),  # *.b.example.com needs one more label
    ("other.com", "any"),
    ("example.com.evil", "any"),
    ("notexample.com", "any"),
    ("", "any"),
])
def test_host_index_precedence(host, expected):
    assert INDEX.find(host) == expected


def test_host_index_wildcard_does_not_match_its_apex():
    index = HostIndex([("*.example.com", "wild")])
    assert index.find("example.com") is None
    assert index.find("a.b.example.com") == "wild"
    assert index.find(".example.com") is None


def test_host_index_none_hostname_is_catch_all():
    assert HostIndex([(None, "any")]).find("whatever") == "any"


@pytest.mark.parametrize("raw, expected", [
    (b"Example.COM", "example.com"),
    (b"example.com:8080", "example.com"),
    (b"example.com.", "example.com"),
    (b"example.com.:80", "example.com"),
    (b"[::1]", "[::1]"),
    (b"[::1]:8443", "[::1]"),
    (b"[2001:DB8::1]:80", "[2001:db8::1]"),
    (b"127.0.0.1:80", "127.0.0.1"),
])
def test_normalize_host(raw, expected):
    assert normalize_host(raw) == expected


@pytest.mark.parametrize("host, ok", [
    (b"example.com", True),
    (b"example.com:8080", True),
    (b"[::1]:80", True),
    (b"a b/c@d", False),
    (b"a/b", False),
    (b"user@host", False),
    (b"host:port", False),
    (b"[::1", False),
    (b"a\x00b", False),
])
def test_valid_host(host, ok):
    assert valid_host(host) is ok


PATHS = ["/", "/foo", "/foo/", "/foo/bar", "/foobar", "/fo", "/foo/bar/baz", "/FOO"]


@pytest.mark.parametrize("kind, value, matching", [
    ("PathPrefix", "/foo", {"/foo", "/foo/", "/foo/bar", "/foo/bar/baz"}),
    ("PathPrefix", "/foo/", {"/foo", "/foo/", "/foo/bar", "/foo/bar/baz"}),  # trailing / ignored
    ("PathPrefix", "/", set(PATHS)),
    ("PathPrefix", "/foo/bar", {"/foo/bar", "/foo/bar/baz"}),
    ("Exact", "/foo", {"/foo"}),
    ("Exact", "/foo/", {"/foo/"}),
    ("RegularExpression", "/foo.*", {"/foo", "/foo/", "/foo/bar", "/foobar", "/foo/bar/baz"}),
    ("RegularExpression", "/fo", {"/fo"}),  # a full match, not a search
    ("RegularExpression", "/[a-z]+", {"/foo", "/foobar", "/fo"}),
])
def test_path_match(kind, value, matching):
    match = path_matcher(ir.PathMatch(kind, value))
    assert {p for p in PATHS if match(p)} == matching


HEADERS = [(b"x-env", b"canary"), (b"x-env", b"prod"), (b"x-num", b"42"), (b"x-latin", b"caf\xe9")]


def matcher(**kw) -> Matcher:
    kw.setdefault("path", ir.PathMatch("PathPrefix", "/"))
    return Matcher(ir.Match(**kw))


@pytest.mark.parametrize("headers, expected", [
    ((ir.HeaderMatch("x-env", "Exact", "canary"),), True),
    ((ir.HeaderMatch("x-env", "Exact", "prod"),), False),  # the first value of a repeated header
    ((ir.HeaderMatch("x-env", "Exact", "Canary"),), False),  # values are case-sensitive
    ((ir.HeaderMatch("x-num", "RegularExpression", "[0-9]+"),), True),
    ((ir.HeaderMatch("x-num", "RegularExpression", "4"),), False),  # full match
    ((ir.HeaderMatch("x-missing", "Exact", ""),), False),
    ((ir.HeaderMatch("x-latin", "Exact", "caf\xe9"),), True),  # obs-text round-trips as latin-1
    ((ir.HeaderMatch("x-env", "Exact", "canary"), ir.HeaderMatch("x-num", "Exact", "42")), True),
    ((ir.HeaderMatch("x-env", "Exact", "canary"), ir.HeaderMatch("x-num", "Exact", "43")), False),
])
def test_header_match(headers, expected):
    assert matcher(headers=headers)("GET", "/", "", HEADERS) is expected


@pytest.mark.parametrize("query, expected", [
    ("a=1&b=2", True),
    ("b=2&a=1", True),
    ("a=1&a=2&b=2", True),
    ("a=2&a=1&b=2", False),  # the first value of a repeated parameter
    ("a=1", False),
    ("A=1&b=2", False),  # names are case-sensitive
    ("a=%31&b=2", True),  # values are compared decoded
    ("", False),
])
def test_query_match(query, expected):
    m = matcher(query_params=(ir.QueryMatch("a", "Exact", "1"), ir.QueryMatch("b", "RegularExpression", "[0-9]")))
    assert m("GET", "/", query, []) is expected


def test_method_match():
    m = matcher(method="POST", path=ir.PathMatch("Exact", "/x"))
    assert m("POST", "/x", "", [])
    assert not m("GET", "/x", "", [])
    assert not m("post", "/x", "", [])
    assert not m("POST", "/y", "", [])


# With a backtracking engine (Python's ``re``) each of these takes seconds to minutes; RE2
# answers in linear time. The timeout only stops a regression from hanging the suite.
CATASTROPHIC = "^(a+)+$"
EVIL = "a" * 35 + "b"


@pytest.mark.timeout(5)
def test_regex_does_not_backtrack_catastrophically():
    assert not path_matcher(ir.PathMatch("RegularExpression", "/(a+)+"))("/" + EVIL)
    assert not value_matcher("RegularExpression", CATASTROPHIC)(EVIL)
    header = matcher(headers=(ir.HeaderMatch("x-evil", "RegularExpression", CATASTROPHIC),))
    assert not header("GET", "/", "", [(b"x-evil", EVIL.encode())])
    query = matcher(query_params=(ir.QueryMatch("q", "RegularExpression", CATASTROPHIC),))
    assert not query("GET", "/", "q=" + EVIL, [])


@pytest.mark.parametrize("pattern, text, expected", [
    ("/caf.", "/caf\xe9", True),  # a byte 0x80-0xff is one character, as it was with ``re``
    ("/café", "/caf\xe9", True),
    ("/caf[^/]", "/caf\xe9", True),
    ("/caf", "/caf\xe9", False),
    ("/[a-z]+", "/caf\xe9", False),
    ("/.*", "/\xff\x80\xe9", True),
])
def test_regex_matches_latin1_text_without_raising(pattern, text, expected):
    assert path_matcher(ir.PathMatch("RegularExpression", pattern))(text) is expected
    assert value_matcher("RegularExpression", pattern)(text) is expected
    header = matcher(headers=(ir.HeaderMatch("x-latin", "RegularExpression", pattern),))
    assert header("GET", "/", "", [(b"x-latin", text.encode("latin-1"))]) is expected


@pytest.mark.parametrize("raw, expected", [
    ("/", "/"),
    ("/a/b", "/a/b"),
    ("/public/../admin", "/admin"),
    ("/public/./x", "/public/x"),
    ("//admin", "/admin"),
    ("/a//b///c", "/a/b/c"),
    ("/a/b/..", "/a/"),
    ("/a/b/.", "/a/b/"),
    ("/..", "/"),
    ("/../../etc/passwd", "/etc/passwd"),
    ("/a/.hidden", "/a/.hidden"),
    ("/a/..b", "/a/..b"),
    ("/public/%2e%2e/admin", "/admin"),
    ("/public/%2E%2e/admin", "/admin"),
    ("/public/%2e/x", "/public/x"),
    ("/%7euser/%41", "/~user/A"),
    ("/public/%252e%252e/admin", "/public/%252e%252e/admin"),  # decoded once, never twice
    ("/public\\..\\admin", "/admin"),  # a backslash is a separator (Envoy's canonicaliser)
    ("/a\\b", "/a/b"),
    ("/a%", "/a%"),
    ("/a%4", "/a%4"),
    ("/a%zz", "/a%zz"),
    ("/a%+e", "/a%+e"),
])
def test_normalize_path(raw, expected):
    assert normalize_path(raw) == (expected, False)


@pytest.mark.parametrize("raw, expected", [
    ("/public%2F..%2Fadmin", "/admin"),
    ("/public/..%2fadmin", "/admin"),
    ("/public/%2e%2e%2Fadmin", "/admin"),
    ("/public/..%5Cadmin", "/admin"),
    ("/public/..%5cadmin", "/admin"),
    ("/a%2Fb", "/a/b"),
    ("/a%2F%2Fb", "/a/b"),
    ("/a%252Fb", None),  # an escaped percent sign: not an escaped slash
])
def test_escaped_slashes_are_unescaped_and_reported(raw, expected):
    """Envoy Gateway's UNESCAPE_AND_REDIRECT: the caller redirects to the normalised path."""
    if expected is None:
        assert normalize_path(raw) == (raw, False)
    else:
        assert normalize_path(raw) == (expected, True)


@pytest.mark.parametrize("target, expected", [
    (b"/a?b=1", ("/a", "b=1")),
    (b"/a", ("/a", "")),
    (b"/a#frag", ("/a", "")),
    (b"/a?b=1#frag", ("/a", "b=1")),
    (b"/a?", ("/a", "")),
    (b"/caf\xe9", ("/caf\xe9", "")),
])
def test_split_target(target, expected):
    assert split_target(target) == expected

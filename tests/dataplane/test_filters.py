"""HTTPRoute filters as tables: header mutations, path rewrites, redirect locations."""
from __future__ import annotations

import pytest

from pyproxy import ir
from pyproxy.dataplane.filters import HeaderOps, compile_mutation, redirect_location, replace_prefix, rewrite_path


def apply(mutation: ir.HeaderMutation, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return HeaderOps(mutation).apply(list(headers))


BASE = [(b"foo", b"1"), (b"bar", b"2"), (b"foo", b"3")]


@pytest.mark.parametrize("mutation, expected", [
    (ir.HeaderMutation(set=(("foo", "x"),)), [(b"bar", b"2"), (b"foo", b"x")]),  # set replaces every value
    (ir.HeaderMutation(set=(("new", "x"),)), BASE + [(b"new", b"x")]),
    (ir.HeaderMutation(set=(("Foo", "x"),)), [(b"bar", b"2"), (b"foo", b"x")]),  # names are case-insensitive
    (ir.HeaderMutation(add=(("bar", "baz"),)), [(b"foo", b"1"), (b"bar", b"2,baz"), (b"foo", b"3")]),
    (ir.HeaderMutation(add=(("new", "x"),)), BASE + [(b"new", b"x")]),
    (ir.HeaderMutation(remove=("foo",)), [(b"bar", b"2")]),
    (ir.HeaderMutation(remove=("FOO", "missing")), [(b"bar", b"2")]),
    # remove, then set, then add
    (ir.HeaderMutation(set=(("a", "1"),), add=(("bar", "x"), ("c", "3")), remove=("foo",)),
     [(b"bar", b"2,x"), (b"a", b"1"), (b"c", b"3")]),
])
def test_header_ops(mutation, expected):
    assert apply(mutation, BASE) == expected


def test_add_appends_with_comma():
    mutation = ir.HeaderMutation(add=(("my-header", "bar"),))
    assert apply(mutation, [(b"my-header", b"foo")]) == [(b"my-header", b"foo,bar")]


def test_empty_mutation_compiles_to_nothing():
    assert compile_mutation(None) is None
    assert compile_mutation(ir.HeaderMutation()) is None


# Gateway API HTTPPathModifier table (ReplacePrefixMatch).
@pytest.mark.parametrize("path, prefix, replacement, expected", [
    ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
    ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
    ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
    ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
    ("/foo", "/foo", "/xyz", "/xyz"),
    ("/foo/", "/foo", "/xyz", "/xyz/"),
    ("/foo/bar", "/foo", "", "/bar"),
    ("/foo/", "/foo", "", "/"),
    ("/foo", "/foo", "", "/"),
    ("/foo/", "/foo", "/", "/"),
    ("/foo", "/foo", "/", "/"),
    ("/foo/bar", "/foo", "/", "/bar"),
    ("/foo/bar/baz", "/foo/bar", "/x", "/x/baz"),
    ("/anything", "/", "/prefix", "/prefix/anything"),
])
def test_replace_prefix(path, prefix, replacement, expected):
    assert replace_prefix(path, prefix, replacement) == expected


def test_rewrite_full_path():
    assert rewrite_path("/foo/bar", ir.PathModifier("ReplaceFullPath", "/one")) == "/one"
    assert rewrite_path("/foo/bar", ir.PathModifier("ReplacePrefixMatch", "/one", prefix="/foo")) == "/one/bar"


@pytest.mark.parametrize("redirect, expected", [
    (ir.Redirect(), "http://example.com:8080/p/q?x=1"),  # the listener's port is kept
    (ir.Redirect(scheme="https"), "https://example.com/p/q?x=1"),  # a scheme implies its default port
    (ir.Redirect(scheme="https", port=8443), "https://example.com:8443/p/q?x=1"),
    (ir.Redirect(scheme="https", port=443), "https://example.com/p/q?x=1"),  # default port omitted
    (ir.Redirect(scheme="http"), "http://example.com/p/q?x=1"),
    (ir.Redirect(port=80), "http://example.com/p/q?x=1"),
    (ir.Redirect(port=9000), "http://example.com:9000/p/q?x=1"),
    (ir.Redirect(hostname="other.test"), "http://other.test:8080/p/q?x=1"),
    (ir.Redirect(hostname="other.test", scheme="https"), "https://other.test/p/q?x=1"),
    (ir.Redirect(path=ir.PathModifier("ReplaceFullPath", "/new")), "http://example.com:8080/new?x=1"),
    (ir.Redirect(path=ir.PathModifier("ReplacePrefixMatch", "/r", prefix="/p")), "http://example.com:8080/r/q?x=1"),
])
def test_redirect_location(redirect, expected):
    assert redirect_location(redirect, "http", "example.com", 8080, "/p/q", "x=1") == expected


def test_redirect_location_default_listener_port_and_ipv6():
    assert redirect_location(ir.Redirect(), "https", "example.com", 443, "/", "") == "https://example.com/"
    assert redirect_location(ir.Redirect(), "http", "[::1]", 8080, "/", "") == "http://[::1]:8080/"
    assert redirect_location(ir.Redirect(hostname="::1", port=81), "http", "a", 80, "/", "") == "http://[::1]:81/"

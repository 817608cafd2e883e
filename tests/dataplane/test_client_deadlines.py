"""A listener's ClientSettings on the downstream HTTP/1.1 connection, driven in memory (fake
transport and clock, as test_deadlines.py): its header, request and idle timeouts replace
the runtime's ``Limits`` (0 disables one), its header size limit answers 431, and its head
rules (underscores, escaped slashes, merging slashes) are what the framing layer applies."""
from __future__ import annotations

import dataclasses

import pytest

from pyproxy import errors, ir
from pyproxy.dataplane import client
from pyproxy.dataplane.framing import RequestHead, validate
from pyproxy.dataplane.http import normalize_path
from tests.dataplane.test_framing import END, head, tr, tr_error
from tests.helpers.fakes import connection, direct_config

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\n"


def config(**settings) -> ir.Config:
    """The direct-response listener of ``fakes`` with these client settings."""
    base = direct_config().listeners[0]
    return ir.Config((dataclasses.replace(base, client=ir.ClientSettings(**settings)),))


async def test_the_request_headers_timeout_is_the_listeners():
    proto, transport, loop = await connection(config=config(request_headers_timeout=5))
    proto.data_received(b"GET / HTTP/1.1\r\n")
    loop.advance(4)
    assert transport.take() == b""
    loop.advance(2)  # 5 s plus the sweeper's granularity (at most a quarter of it)
    out = transport.take()
    assert out.startswith(b"HTTP/1.1 408 ") and b"connection: close" in out
    assert transport.eof


async def test_a_silent_connection_closes_at_the_listeners_header_timeout_without_an_answer():
    proto, transport, loop = await connection(config=config(request_headers_timeout=5))
    loop.advance(7)
    assert transport.eof and transport.take() == b""


async def test_the_request_timeout_cuts_a_head_that_the_header_timeout_would_still_wait_for():
    proto, transport, loop = await connection(config=config(request_timeout=3))
    proto.data_received(b"GET / HTTP/1.1\r\n")
    loop.advance(2)
    assert transport.take() == b""
    loop.advance(2)
    out = transport.take()
    assert out.startswith(b"HTTP/1.1 408 ") and out.endswith(b"request timeout")
    assert transport.eof


async def test_the_request_timeout_counts_each_request_of_a_keepalive_connection_anew():
    proto, transport, loop = await connection(config=config(request_timeout=3))
    for _ in range(3):
        loop.advance(2)
        proto.data_received(GET)
        assert transport.take().startswith(OK)
    proto.data_received(b"GET / HT")
    loop.advance(2)
    assert transport.take() == b""
    loop.advance(2)
    assert transport.take().startswith(b"HTTP/1.1 408 ")


async def test_the_idle_timeout_is_the_listeners():
    proto, transport, loop = await connection(config=config(idle_timeout=5))
    proto.data_received(GET)
    assert transport.take().startswith(OK)
    loop.advance(4)
    assert not transport.eof
    loop.advance(2)
    assert transport.eof and transport.take() == b""


async def test_a_timeout_of_zero_is_none():
    """Envoy's 0 disables a timeout: neither the silent connection nor the idle one closes,
    long after the runtime's own 30 s and 60 s."""
    proto, transport, loop = await connection(config=config(request_headers_timeout=0, idle_timeout=0))
    loop.advance(10_000)
    assert not transport.eof and not transport.closed
    proto.data_received(GET)
    assert transport.take().startswith(OK)
    loop.advance(10_000)
    assert not transport.eof and not transport.closed


async def test_without_settings_the_runtime_limits_apply():
    proto, transport, loop = await connection(config=config())
    loop.advance(9)  # the default header timeout is 10 s
    assert not transport.eof
    loop.advance(2)
    assert transport.eof


async def test_max_request_header_bytes_answers_431():
    big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"v" * 2000 + b"\r\n\r\n"
    proto, transport, loop = await connection(config=config(max_request_header_bytes=1024))
    proto.data_received(big)
    out = transport.take()
    assert out.startswith(b"HTTP/1.1 431 ") and transport.eof
    proto, transport, loop = await connection(config=config())  # 60 KiB by default
    proto.data_received(big)
    assert transport.take().startswith(OK)


def test_the_policy_of_settings():
    policy = client.resolve(ir.ClientSettings(request_headers_timeout=2, buffer_limit=1024, request_id="Preserve",
                                              headers_with_underscores="DropHeader", merge_slashes=False))
    assert policy.limits.header_timeout == 2 and policy.limits.buffer_limit == 1024
    assert policy.limits.idle_timeout == 60  # None: the Limits value
    assert (policy.generate_id, policy.preserve_id) == (False, True)
    assert policy.rules == client.HeadRules(client.DROP, client.REDIRECT, False)
    assert client.DEFAULT.limits is client.DEFAULT_LIMITS  # no setting: the very same limits


# ------------------------------------------------------------------ head rules in the framing layer

UNDERSCORE = b"GET / HTTP/1.1\r\nHost: a\r\nX_Token: 1\r\nX-Ok: 2\r\n\r\n"


def test_underscores_rejected_by_default():
    tr_error(UNDERSCORE, errors.BadRequest)


def test_underscores_dropped():
    tr(UNDERSCORE, [head(headers=((b"host", b"a"), (b"x-ok", b"2"))), END],
       rules=client.HeadRules(underscores=client.DROP))


def test_underscores_allowed():
    tr(UNDERSCORE, [head(headers=((b"host", b"a"), (b"x_token", b"1"), (b"x-ok", b"2"))), END],
       rules=client.HeadRules(underscores=client.ALLOW))


def test_dropped_underscore_headers_do_not_count_against_max_headers():
    data = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X_%d: v\r\n" % i for i in range(150)) + b"\r\n"
    tr(data, [head(), END], rules=client.HeadRules(underscores=client.DROP))


@pytest.mark.parametrize("action, path, redirect, rejected", [
    (client.REDIRECT, "/admin", "/admin?x=1", False),
    (client.UNESCAPE, "/admin", None, False),
    (client.REJECT_PATH, "/admin", None, True),
    (client.KEEP, "/public/..%2Fadmin", None, False),
], ids=["redirect", "forward", "reject", "keep"])
def test_escaped_slash_actions(action, path, redirect, rejected):
    rules = client.HeadRules(escaped_slashes=action)
    data = b"GET /public/..%2fadmin?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"
    tr(data, [head(path=path, query="x=1", redirect=redirect), END], rules=rules)
    if rejected:
        h = RequestHead()
        h.method, h.headers = "GET", [(b"host", b"a")]
        validate(h, b"/public/..%2fadmin", rules)
        assert h.path_rejected


@pytest.mark.parametrize("path, merged, kept", [
    ("/a//b", "/a/b", "/a//b"),
    ("//", "/", "//"),
    ("/a//b/./c//", "/a/b/c/", "/a//b/c//"),
    ("/a/b/..//c", "/a/c", "/a//c"),
    ("/a/.", "/a/", "/a/"),
    ("/.", "/", "/"),
    ("/a\\\\b", "/a/b", "/a//b"),
])
def test_merge_slashes(path, merged, kept):
    assert normalize_path(path) == (merged, False)
    assert normalize_path(path, merge=False) == (kept, False)


def test_unmerged_empty_segments_are_segments_for_dot_dot():
    assert normalize_path("/a//..", merge=False) == ("/a/", False)


def test_an_escaped_slash_left_unchanged_is_part_of_its_segment():
    assert normalize_path("/a/..%2f..%5cb", unescape=False) == ("/a/..%2F..%5Cb", False)
    assert normalize_path("/a/..%2f..%5cb") == ("/b", True)

"""Route actions end to end: weighted backends, invalid backendRefs, direct responses,
redirects, filters and rewrites, host selection."""
from __future__ import annotations

import collections

import pytest

from pyproxy import ir
from tests.conftest import destination, serve_ir
from tests.helpers.http import Upstream
from tests.helpers.proxy import proxy_routes
from tests.helpers.wire import Wire

ANY = ir.Match(ir.PathMatch("PathPrefix", "/"))


def route(name: str, action, match: ir.Match = ANY, **kw) -> ir.Route:
    return ir.Route(name=name, match=match, action=action, **kw)


def weighted(*pairs) -> ir.Forward:
    return ir.Forward(tuple(ir.WeightedBackend(w, d) for w, d in pairs))


async def requests(port: int, n: int, path: bytes = b"/", host: bytes = b"a") -> list:
    """``n`` requests pipelined on one connection; their responses in order."""
    wire = await Wire.open(port)
    await wire.send(b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host) * n)
    out = [await wire.read_response() for _ in range(n)]
    await wire.close()
    return out


@pytest.fixture
async def second_upstream():
    up = await Upstream().start()
    yield up
    await up.stop()


async def test_weighted_backends_split_traffic(upstream: Upstream, second_upstream: Upstream):
    action = weighted((3, destination(upstream.port, name="backend/a")),
                      (1, destination(second_upstream.port, name="backend/b")))
    async with proxy_routes(route("w", action)) as (rt, port):
        responses = await requests(port, 400)
    assert all(r.status == 200 for r in responses)
    share = len(upstream.seen) / 400
    assert len(upstream.seen) + len(second_upstream.seen) == 400
    assert 0.65 < share < 0.85, share  # 0.75 expected; binomial sd ≈ 0.022


async def test_zero_weight_backend_gets_nothing(upstream: Upstream, second_upstream: Upstream):
    action = weighted((1, destination(upstream.port, name="backend/a")),
                      (0, destination(second_upstream.port, name="backend/b")))
    async with proxy_routes(route("w", action)) as (rt, port):
        await requests(port, 50)
    assert len(upstream.seen) == 50 and second_upstream.seen == []


async def test_invalid_backend_share_gets_500(upstream: Upstream):
    action = ir.Forward((ir.WeightedBackend(1, destination(upstream.port)), ir.WeightedBackend(1, None)))
    async with proxy_routes(route("half-broken", action)) as (rt, port):
        responses = await requests(port, 200)
    counts = collections.Counter(r.status for r in responses)
    assert set(counts) == {200, 500}
    assert 60 < counts[500] < 140, counts
    assert all(r.body == b"" for r in responses if r.status == 500)


async def test_all_invalid_or_zero_weights_is_500():
    for action in (ir.Forward((ir.WeightedBackend(1, None),)), ir.Forward(())):
        async with proxy_routes(route("broken", action)) as (rt, port):
            (resp,) = await requests(port, 1)
            assert resp.status == 500


async def test_direct_response():
    async with proxy_routes(route("direct", ir.DirectResponse(418, "short and stout"))) as (rt, port):
        resp, again = await requests(port, 2)
    assert (resp.status, resp.body) == (418, b"short and stout")
    assert resp.header("content-type") == "text/plain" and again.status == 418


async def test_no_route_is_404_with_empty_body(upstream: Upstream):
    only = route("only", ir.Forward((ir.WeightedBackend(1, destination(upstream.port)),)),
                 match=ir.Match(ir.PathMatch("Exact", "/only")))
    async with proxy_routes(only) as (rt, port):
        (miss,) = await requests(port, 1, b"/other")
        (hit,) = await requests(port, 1, b"/only")
    assert (miss.status, miss.body) == (404, b"")
    assert hit.status == 200


@pytest.mark.parametrize("redirect, path, location", [
    (ir.Redirect(scheme="https"), b"/a/b?x=1", "https://a/a/b?x=1"),
    (ir.Redirect(hostname="elsewhere.test", port=8080, status_code=301), b"/p", "http://elsewhere.test:8080/p"),
    (ir.Redirect(scheme="https", path=ir.PathModifier("ReplacePrefixMatch", "/new", prefix="/old")),
     b"/old/x", "https://a/new/x"),
    (ir.Redirect(scheme="https", path=ir.PathModifier("ReplaceFullPath", "/full")), b"/old/x?q", "https://a/full?q"),
    (ir.Redirect(scheme="https"), b"/public/../admin", "https://a/admin"),  # the normalised path
])
async def test_redirect(redirect, path, location):
    async with proxy_routes(route("redirect", redirect)) as (rt, port):
        (resp,) = await requests(port, 1, path)
    assert resp.status == redirect.status_code
    assert resp.header("location") == location
    assert resp.body == b""


async def test_filters_and_rewrites(upstream: Upstream):
    backend = ir.WeightedBackend(1, destination(upstream.port),
                                 request_headers=ir.HeaderMutation(add=(("x-backend", "b"),)),
                                 response_headers=ir.HeaderMutation(set=(("x-resp-backend", "1"),)))
    r = route(
        "filtered", ir.Forward((backend,)),
        match=ir.Match(ir.PathMatch("PathPrefix", "/api")),
        request_headers=ir.HeaderMutation(set=(("x-set", "s"),), add=(("x-add", "new"),), remove=("x-gone",)),
        response_headers=ir.HeaderMutation(remove=("x-upstream",), add=(("x-resp", "r"),)),
        url_rewrite=ir.URLRewrite(hostname="internal.test",
                                  path=ir.PathModifier("ReplacePrefixMatch", "/v2", prefix="/api")),
    )
    async with proxy_routes(r) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(b"GET /api/users?id=1 HTTP/1.1\r\nHost: front.test\r\nX-Set: client\r\nX-Add: old\r\n"
                        b"X-Gone: 1\r\n\r\n")
        resp = await wire.read_response()
        await wire.close()
    seen = upstream.seen[0]
    headers = dict(seen.headers)
    assert seen.path == "/v2/users?id=1"
    assert headers["host"] == "internal.test"
    assert headers["x-forwarded-host"] == "front.test"
    assert headers["x-set"] == "s" and headers["x-add"] == "old,new" and "x-gone" not in headers
    assert headers["x-backend"] == "b"
    assert resp.header("x-upstream") is None and resp.header("x-resp") == "r"
    assert resp.header("x-resp-backend") == "1"


async def test_virtual_hosts_by_host_header(upstream: Upstream):
    def vhost(hostname: str, status: int) -> ir.VirtualHost:
        return ir.VirtualHost(f"vhost/{hostname}", hostname, (route(hostname, ir.DirectResponse(status)),))
    lst = ir.Listener("listener/test", "127.0.0.1", 0, "HTTP", (
        vhost("a.example", 201), vhost("*.example", 202), vhost("*", 203)))
    async with serve_ir(ir.Config((lst,))) as rt:
        port = rt.ports[("127.0.0.1", 0)]
        got = {}
        for host in (b"a.example", b"A.Example.:8080", b"b.example", b"x.y.example", b"example", b"[::1]"):
            got[host] = (await requests(port, 1, host=host))[0].status
    assert got == {b"a.example": 201, b"A.Example.:8080": 201, b"b.example": 202, b"x.y.example": 202,
                   b"example": 203, b"[::1]": 203}


async def test_path_match_on_normalised_path(upstream: Upstream):
    public = route("public", ir.Forward((ir.WeightedBackend(1, destination(upstream.port)),)),
                   match=ir.Match(ir.PathMatch("PathPrefix", "/public")))
    async with proxy_routes(public) as (rt, port):
        statuses = [(await requests(port, 1, p))[0].status
                    for p in (b"/public/x", b"/public/../admin", b"/public/%2e%2e/admin", b"/publicity")]
    assert statuses == [200, 404, 404, 404]

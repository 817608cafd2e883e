"""The HTTPRoute CORS filter (``ir.Route.cors``) over real sockets: preflights answered by the
proxy (never forwarded), headers added to upstream responses for allowed origins, origin
matching (exact, ``*``, host wildcards, ports), and requests the filter must leave alone.
Routes follow the Gateway API conformance test HTTPRouteCORS."""
from __future__ import annotations

from contextlib import asynccontextmanager

import pytest

from pyproxy import ir
from tests.conftest import destination
from tests.helpers.http import Client, Response
from tests.helpers.proxy import proxy_routes
from tests.helpers.recorder import free_port, response

pytest_plugins = ["tests.helpers.recorder_fixture"]  # the ``recorder`` fixture

CORS_1 = ir.Cors(
    allow_origins=("https://www.foo.com", "https://*.bar.com"),
    allow_methods=("GET", "OPTIONS"),
    allow_headers=("x-header-1", "x-header-2"),
    expose_headers=("x-header-3", "x-header-4"),
    allow_credentials=True,
    max_age=3600,
)
CORS_WILDCARD_METHODS = ir.Cors(allow_origins=("https://www.foo.com",), allow_methods=("*",))
CORS_WILDCARD_ORIGIN = ir.Cors(allow_origins=("*",), allow_methods=("PUT",), allow_credentials=False)
CORS_ALL_CREDENTIALS = ir.Cors(allow_origins=("*",), allow_methods=("*",), allow_headers=("*",),
                               allow_credentials=True)
CORS_ALL = ir.Cors(allow_origins=("*",), allow_methods=("*",), allow_headers=("*",), allow_credentials=False)
CORS_PORTS = ir.Cors(
    allow_origins=("http://localhost:8080", "https://a.example", "http://b.example:80", "https://*.c.example:8443",
                   "http://[::1]:8080"),
    allow_methods=("GET",),
)
CORS_DEFAULTS = ir.Cors(allow_origins=("https://d.example",))

ROUTES = [
    ("/cors-1", CORS_1),
    ("/cors-2", CORS_WILDCARD_METHODS),
    ("/cors-wildcard-origin", CORS_WILDCARD_ORIGIN),
    ("/cors-wildcard-methods-headers", CORS_ALL_CREDENTIALS),
    ("/cors-unauth", CORS_ALL),
    ("/ports", CORS_PORTS),
    ("/defaults", CORS_DEFAULTS),
    ("/nocors", None),
]


@asynccontextmanager
async def cors_proxy(upstream_port: int):
    dest = destination(upstream_port)
    routes = [
        ir.Route(name=f"httproute/default/cors/rule/{i}/match/0", match=ir.Match(ir.PathMatch("PathPrefix", path)),
                 action=ir.Forward((ir.WeightedBackend(1, dest),)), cors=cors)
        for i, (path, cors) in enumerate(ROUTES)
    ]
    async with proxy_routes(*routes) as (rt, port):
        client = await Client.connect(port)
        try:
            yield client
        finally:
            await client.close()


@pytest.fixture
async def upstream_ok(recorder):
    return await recorder(lambda i, seen: response(200, b"upstream " + seen.target.encode(),
                                                   (("x-header-3", "three"), ("x-upstream", "yes"))))


def preflight(origin: str, method: str = "GET", request_headers: str | None = None) -> dict[str, str]:
    headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if request_headers is not None:
        headers["Access-Control-Request-Headers"] = request_headers
    return headers


def cors_headers(resp: Response) -> dict[str, str]:
    found = {k: v for k, v in resp.headers if k.startswith("access-control-")}
    assert len(found) == sum(k.startswith("access-control-") for k, _ in resp.headers), f"repeated: {resp.headers}"
    return found


# ------------------------------------------------------------------ preflight


async def test_preflight_from_exact_origin(upstream_ok):
    async with cors_proxy(upstream_ok.port) as client:
        resp = await client.request("OPTIONS", "/cors-1", headers=preflight("https://www.foo.com", "GET",
                                                                            "x-header-1, x-header-2"))
        assert resp.status == 200
        assert resp.body == b""
        assert cors_headers(resp) == {
            "access-control-allow-origin": "https://www.foo.com",
            "access-control-allow-methods": "GET, OPTIONS",
            "access-control-allow-headers": "x-header-1, x-header-2",
            "access-control-expose-headers": "x-header-3, x-header-4",
            "access-control-max-age": "3600",
            "access-control-allow-credentials": "true",
        }
        # the connection carries on after a preflight
        assert (await client.request("GET", "/cors-1")).status == 200
    assert [s.method for s in upstream_ok.requests] == ["GET"]  # the preflight was not forwarded


@pytest.mark.parametrize("origin", [
    "https://www.bar.com",
    "https://xpto.www.bar.com",  # any number of labels in place of *
    "https://a.b.c.bar.com",
    "https://www.bar.com:443",  # the scheme's default port, explicit
])
async def test_preflight_from_wildcard_origin(upstream_ok, origin):
    async with cors_proxy(upstream_ok.port) as client:
        resp = await client.request("OPTIONS", "/cors-1", headers=preflight(origin, "GET", "x-header-1"))
    assert resp.status == 200
    headers = cors_headers(resp)
    assert headers["access-control-allow-origin"] == origin
    assert headers["access-control-allow-methods"] == "GET, OPTIONS"
    assert headers["access-control-allow-credentials"] == "true"
    assert upstream_ok.requests == []


@pytest.mark.parametrize("origin", [
    "https://foobar.com",
    "https://bar.com",  # the wildcard needs at least one label
    "https://evilbar.com",
    "http://www.bar.com",  # scheme differs
    "https://www.bar.com:8443",  # port differs
    "https://www.bar.com.evil.com",
    "https://www.foo.com.evil.com",
    "https://www.foo.comx",
    "http://www.foo.com",
    "https://www.foo.com:444",
    "https://sub.www.foo.com",  # an exact origin is not a suffix
    "null",
    "not an origin",
], ids=lambda o: o.replace("://", "-"))
async def test_preflight_from_other_origin_is_403(upstream_ok, origin):
    async with cors_proxy(upstream_ok.port) as client:
        resp = await client.request("OPTIONS", "/cors-1", headers=preflight(origin, "GET", "x-header-1"))
        assert resp.status == 403
        assert cors_headers(resp) == {}
        assert (await client.request("GET", "/cors-1")).status == 200  # still usable
    assert [s.method for s in upstream_ok.requests] == ["GET"]


async def test_preflight_with_wildcard_methods_answers_the_requested_method(upstream_ok):
    async with cors_proxy(upstream_ok.port) as client:
        resp = await client.request("OPTIONS", "/cors-2", headers=preflight("https://www.foo.com", "POST"))
    assert resp.status == 200
    headers = cors_headers(resp)
    assert headers["access-control-allow-origin"] == "https://www.foo.com"
    assert headers["access-control-allow-methods"] == "POST"
    assert "access-control-allow-credentials" not in headers


@pytest.mark.parametrize("origin", ["https://foobar.com", "https://foobar.com:12345", "http://127.0.0.1:3000"])
async def test_preflight_from_any_origin(upstream_ok, origin):
    async with cors_proxy(upstream_ok.port) as client:
        resp = await client.request("OPTIONS", "/cors-wildcard-origin", headers=preflight(origin, "PUT"))
    assert resp.status == 200
    headers = cors_headers(resp)
    assert headers["access-control-allow-origin"] in (origin, "*")
    assert headers["access-control-allow-methods"] == "PUT"
    assert "access-control-allow-credentials" not in headers
    assert upstream_ok.requests == []


async def test_preflight_with_wildcard_methods_and_headers_and_credentials(upstream_ok):
    """With credentials, ``*`` is not honoured by browsers: the origin, method and headers
    asked for are echoed."""
    async with cors_proxy(upstream_ok.port) as client:
        resp = await client.request("OPTIONS", "/cors-wildcard-methods-headers",
                                    headers=preflight("https://other.foo.com", "PUT", "x-header-1, x-header-2"))
    assert resp.status == 200
    assert cors_headers(resp) == {
        "access-control-allow-origin": "https://other.foo.com",
        "access-control-allow-methods": "PUT",
        "access-control-allow-headers": "x-header-1, x-header-2",
        "access-control-allow-credentials": "true",
        "access-control-max-age": "5",
    }


async def test_preflight_without_credentials_has_no_credentials_header(upstream_ok):
    async with cors_proxy(upstream_ok.port) as client:
        resp = await client.request("OPTIONS", "/cors-unauth",
                                    headers=preflight("https://other.foo.com", "PUT", "x-header-1, x-header-2"))
    assert resp.status == 200
    headers = cors_headers(resp)
    assert headers["access-control-allow-origin"] in ("https://other.foo.com", "*")
    assert headers["access-control-allow-methods"] in ("PUT", "*")
    assert headers["access-control-allow-headers"] in ("x-header-1, x-header-2", "*")
    assert "access-control-allow-credentials" not in headers


async def test_preflight_with_wildcard_headers_but_none_requested(upstream_ok):
    async with cors_proxy(upstream_ok.port) as client:
        resp = await client.request("OPTIONS", "/cors-unauth", headers=preflight("https://x.test", "DELETE"))
    assert resp.status == 200
    headers = cors_headers(resp)
    assert headers["access-control-allow-methods"] == "DELETE"
    assert headers.get("access-control-allow-headers", "") in ("", "*")


async def test_preflight_for_a_method_not_listed_still_answers_the_policy(upstream_ok):
    """The proxy states the policy; the browser refuses the method itself."""
    async with cors_proxy(upstream_ok.port) as client:
        resp = await client.request("OPTIONS", "/cors-1", headers=preflight("https://www.foo.com", "DELETE"))
    assert resp.status == 200
    assert cors_headers(resp)["access-control-allow-methods"] == "GET, OPTIONS"
    assert upstream_ok.requests == []


async def test_preflight_defaults(upstream_ok):
    async with cors_proxy(upstream_ok.port) as client:
        resp = await client.request("OPTIONS", "/defaults", headers=preflight("https://d.example", "GET"))
    assert resp.status == 200
    headers = cors_headers(resp)
    assert headers["access-control-allow-origin"] == "https://d.example"
    assert headers["access-control-max-age"] == "5"
    assert "access-control-allow-credentials" not in headers
    assert "access-control-expose-headers" not in headers


async def test_preflight_on_a_route_without_cors_is_forwarded(upstream_ok):
    async with cors_proxy(upstream_ok.port) as client:
        resp = await client.request("OPTIONS", "/nocors", headers=preflight("https://www.foo.com", "GET"))
    assert (resp.status, resp.body) == (200, b"upstream /nocors")
    assert cors_headers(resp) == {}
    (seen,) = upstream_ok.requests
    assert (seen.method, seen.header("origin"), seen.header("access-control-request-method")) == (
        "OPTIONS", "https://www.foo.com", "GET")


# ------------------------------------------------------------------ origins with ports


@pytest.mark.parametrize("origin, allowed", [
    ("http://localhost:8080", True),
    ("http://localhost", False),
    ("http://localhost:80", False),
    ("http://localhost:8081", False),
    ("https://localhost:8080", False),
    ("https://a.example", True),
    ("https://a.example:443", True),  # the default port, explicit on one side only
    ("https://a.example:8443", False),
    ("http://a.example", False),
    ("http://b.example", True),
    ("http://b.example:80", True),
    ("http://b.example:8080", False),
    ("https://x.c.example:8443", True),
    ("https://x.y.c.example:8443", True),
    ("https://x.c.example", False),
    ("https://x.c.example:443", False),
    ("https://c.example:8443", False),
    ("http://[::1]:8080", True),
    ("http://[::1]", False),
    ("http://[::1]:8081", False),
])
async def test_origin_ports(upstream_ok, origin, allowed):
    async with cors_proxy(upstream_ok.port) as client:
        pre = await client.request("OPTIONS", "/ports", headers=preflight(origin, "GET"))
        simple = await client.request("GET", "/ports", headers={"Origin": origin})
    if allowed:
        assert pre.status == 200
        assert cors_headers(pre)["access-control-allow-origin"] == origin
        assert cors_headers(simple) == {"access-control-allow-origin": origin}
    else:
        assert pre.status == 403
        assert cors_headers(pre) == {}
        assert cors_headers(simple) == {}
    assert simple.status == 200
    assert [s.method for s in upstream_ok.requests] == ["GET"]


# ------------------------------------------------------------------ actual (non-preflight) requests


async def test_simple_request_from_allowed_origin_gets_headers(upstream_ok):
    async with cors_proxy(upstream_ok.port) as client:
        resp = await client.request("GET", "/cors-1/x", headers={"Origin": "https://www.bar.com"})
    assert (resp.status, resp.body) == (200, b"upstream /cors-1/x")
    assert resp.header("x-upstream") == "yes"
    assert cors_headers(resp) == {
        "access-control-allow-origin": "https://www.bar.com",
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "x-header-3, x-header-4",
    }
    (seen,) = upstream_ok.requests
    assert seen.header("origin") == "https://www.bar.com"


async def test_simple_request_from_other_origin_is_forwarded_untouched(upstream_ok):
    async with cors_proxy(upstream_ok.port) as client:
        resp = await client.request("GET", "/cors-1", headers={"Origin": "https://foobar.com",
                                                               "Access-Control-Request-Method": "GET"})
    assert (resp.status, resp.body) == (200, b"upstream /cors-1")
    assert cors_headers(resp) == {}
    assert len(upstream_ok.requests) == 1


@pytest.mark.parametrize("path", ["/cors-wildcard-origin", "/cors-unauth"])
@pytest.mark.parametrize("origin", ["https://foobar.com", "https://foobar.com:12345"])
async def test_request_from_any_origin_without_credentials(upstream_ok, path, origin):
    async with cors_proxy(upstream_ok.port) as client:
        resp = await client.request("PUT", path, headers={"Origin": origin})
    assert resp.status == 200
    headers = cors_headers(resp)
    assert headers["access-control-allow-origin"] in (origin, "*")
    assert "access-control-allow-credentials" not in headers


async def test_request_from_any_origin_with_credentials_echoes_origin(upstream_ok):
    async with cors_proxy(upstream_ok.port) as client:
        resp = await client.request("GET", "/cors-wildcard-methods-headers",
                                    headers={"Origin": "https://other.foo.com"})
    assert resp.status == 200
    assert cors_headers(resp) == {"access-control-allow-origin": "https://other.foo.com",
                                  "access-control-allow-credentials": "true"}


@pytest.mark.parametrize("method, headers", [
    ("GET", {}),
    ("POST", {"Content-Type": "text/plain"}),
    ("OPTIONS", {}),
    ("OPTIONS", {"Access-Control-Request-Method": "GET"}),  # no Origin: not a preflight
])
async def test_requests_without_origin_are_untouched(upstream_ok, method, headers):
    async with cors_proxy(upstream_ok.port) as client:
        resp = await client.request(method, "/cors-1", headers=headers, body=b"b" if method == "POST" else b"")
    assert (resp.status, resp.body) == (200, b"upstream /cors-1")
    assert cors_headers(resp) == {}
    (seen,) = upstream_ok.requests
    assert seen.method == method


async def test_options_without_request_method_is_forwarded(upstream_ok):
    """OPTIONS with an Origin but no Access-Control-Request-Method is an ordinary request:
    forwarded, with the headers for an allowed origin added."""
    async with cors_proxy(upstream_ok.port) as client:
        allowed = await client.request("OPTIONS", "/cors-1", headers={"Origin": "https://www.foo.com"})
        other = await client.request("OPTIONS", "/cors-1", headers={"Origin": "https://foobar.com"})
    assert (allowed.status, allowed.body) == (200, b"upstream /cors-1")
    assert cors_headers(allowed)["access-control-allow-origin"] == "https://www.foo.com"
    assert "access-control-allow-methods" not in cors_headers(allowed)
    assert (other.status, cors_headers(other)) == (200, {})
    assert [s.method for s in upstream_ok.requests] == ["OPTIONS", "OPTIONS"]


async def test_headers_added_to_upstream_error_responses(recorder):
    up = await recorder(response(500, b"broken"))
    async with cors_proxy(up.port) as client:
        resp = await client.request("GET", "/cors-1", headers={"Origin": "https://www.foo.com"})
    assert (resp.status, resp.body) == (500, b"broken")
    assert cors_headers(resp)["access-control-allow-origin"] == "https://www.foo.com"


async def test_headers_added_once_to_the_answer_after_a_retry(recorder):
    up = await recorder(response(500), response(200, b"ok"))
    dest = destination(up.port)
    route = ir.Route(name="httproute/default/cors-retry/rule/0/match/0",
                     match=ir.Match(ir.PathMatch("PathPrefix", "/")), action=ir.Forward((ir.WeightedBackend(1, dest),)),
                     cors=CORS_1, retry=ir.Retry(1, codes=(500,)))
    async with proxy_routes(route) as (rt, port):
        client = await Client.connect(port)
        resp = await client.request("GET", "/", headers={"Origin": "https://www.foo.com"})
        await client.close()
    assert (resp.status, resp.body) == (200, b"ok")
    assert cors_headers(resp) == {
        "access-control-allow-origin": "https://www.foo.com",
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "x-header-3, x-header-4",
    }
    assert len(up.requests) == 2


async def test_upstream_cors_headers_are_replaced_not_repeated(recorder):
    """Envoy's CORS filter sets these headers: two Access-Control-Allow-Origin values would be
    rejected by browsers."""
    up = await recorder(response(200, b"ok", (("access-control-allow-origin", "*"),
                                              ("access-control-allow-credentials", "false"),
                                              ("access-control-expose-headers", "x-other"))))
    async with cors_proxy(up.port) as client:
        resp = await client.request("GET", "/cors-1", headers={"Origin": "https://www.foo.com"})
    assert resp.status == 200
    named = lambda n: [v for k, v in resp.headers if k == n]  # noqa: E731
    assert named("access-control-allow-origin") == ["https://www.foo.com"]
    assert named("access-control-allow-credentials") == ["true"]
    assert named("access-control-expose-headers") == ["x-header-3, x-header-4"]


async def test_local_replies_of_a_cors_route_carry_the_cors_headers():
    """A proxy-generated 503 on a CORS route keeps the CORS headers (as Envoy's filter does),
    so a browser sees the real error rather than a CORS failure."""
    async with cors_proxy(free_port()) as client:  # nothing listens there: 503
        resp = await client.request("GET", "/cors-1", headers={"Origin": "https://www.foo.com"})
    assert resp.status == 503
    assert resp.header("access-control-allow-origin") == "https://www.foo.com"
    assert resp.header("access-control-allow-credentials") == "true"


async def test_empty_origin_or_request_method_is_absent(recorder):
    up = await recorder(response(200, b"ok"))
    async with cors_proxy(up.port) as client:
        not_preflight = await client.request("OPTIONS", "/cors-1", headers={
            "Origin": "https://www.foo.com", "Access-Control-Request-Method": ""})
        no_origin = await client.request("GET", "/cors-wildcard-origin", headers={"Origin": ""})
    assert not_preflight.status == 200 and len(up.requests) == 2  # forwarded, not answered
    assert no_origin.header("access-control-allow-origin") is None

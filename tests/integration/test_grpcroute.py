"""GRPCRoute matching and precedence on the real data plane: gRPC-shaped requests (POST
``/<service>/<method>``, ``content-type: application/grpc``) over HTTP/2 with prior
knowledge, written with the h2 library, to an HTTP/2 upstream (a GRPCRoute's backends are
always reached over HTTP/2, as in Envoy Gateway, though the Backend does not say h2c). Each
rule names itself in a response header (``x-rule``), so a test sees which one answered."""
from __future__ import annotations

import asyncio
import json
import urllib.request
from contextlib import asynccontextmanager
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest

from tests.helpers.h2server import H2Reply, H2Request, H2Upstream
from tests.helpers.http import Client, Upstream
from tests.helpers.proxy import serve_with_admin

EMPTY_MESSAGE = b"\x00\x00\x00\x00\x00"  # a gRPC frame: not compressed, length 0


class GrpcClient:
    """One HTTP/2 connection (prior knowledge) sending unary gRPC-shaped calls; every wait
    is bounded."""

    def __init__(self, stream: Client) -> None:
        self.stream = stream
        self.reader, self.writer = stream.reader, stream.writer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.writer.write(self.conn.data_to_send())

    @classmethod
    async def connect(cls, port: int) -> GrpcClient:
        return cls(await Client.connect(port))

    async def call(self, path: str, authority: str = "grpc.example.com",
                   headers: tuple[tuple[str, str], ...] = (), method: str = "POST") -> dict[str, str]:
        """The response headers (``:status`` among them) of one call."""
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(":method", method), (":scheme", "http"), (":path", path),
                                     (":authority", authority), ("content-type", "application/grpc"),
                                     ("te", "trailers"), *headers])
        self.conn.send_data(sid, EMPTY_MESSAGE, end_stream=True)
        self.writer.write(self.conn.data_to_send())
        return await asyncio.wait_for(self._response(sid), 10)

    async def _response(self, sid: int) -> dict[str, str]:
        response: dict[str, str] = {}
        while True:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("the proxy closed the connection before the response ended")
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == sid:
                    response = dict(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == sid:
                    self.writer.write(self.conn.data_to_send())
                    return response
            self.writer.write(self.conn.data_to_send())

    async def rule(self, path: str, authority: str = "grpc.example.com",
                   headers: tuple[tuple[str, str], ...] = ()) -> str:
        """The rule that answered (``x-rule``), or, when none did, the proxy's own answer: to a
        gRPC call a gRPC status (HTTP 200, trailers-only; 404 becomes 12 UNIMPLEMENTED)."""
        response = await self.call(path, authority, headers)
        if "x-rule" in response:
            return response["x-rule"]
        assert response[":status"] == "200", response
        return f"grpc-status {response['grpc-status']}"



@pytest.fixture
async def grpc_upstream():
    """An HTTP/2 (prior knowledge) upstream answering every call with grpc-status 0."""
    def ok(request: H2Request) -> H2Reply:
        return H2Reply(headers=[(b"content-type", b"application/grpc")], body=EMPTY_MESSAGE,
                       trailers=[(b"grpc-status", b"0")])
    up = await H2Upstream(ok).start()
    yield up
    await up.stop()


def backend(port: int, name: str = "echo") -> str:
    return f"""\
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata:
  name: {name}
spec:
  endpoints:
  - ip:
      address: 127.0.0.1
      port: {port}
"""


def grpc_route(name: str, rules: str, hostnames: str = "", created: str = "") -> str:
    metadata = f"  name: {name}\n"
    if created:
        metadata += f"  creationTimestamp: \"{created}\"\n"
    spec = f"  hostnames: [{hostnames}]\n" if hostnames else ""
    return f"apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata:\n{metadata}spec:\n{spec}{rules}"


def rule(name: str, matches: str = "") -> str:
    """A rule with ``matches`` (YAML list items; none: every request) forwarding to the echo
    Backend and answering with ``x-rule: <name>``."""
    return f"""\
  - name: {name}
    matches:
{matches or '    - {}'}
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set:
        - name: x-rule
          value: {name}
    backendRefs:
    - group: gateway.envoyproxy.io
      kind: Backend
      name: echo
"""


def documents(*texts: str) -> str:
    return "---\n".join(texts)


@asynccontextmanager
async def proxy(tmp_path: Path, config: str):
    """Serve ``config`` on the implicit listener; yields (a connected client, listener port,
    admin port)."""
    (tmp_path / "config.yaml").write_text(config)
    async with serve_with_admin(tmp_path) as (runtime, admin_port):
        port = runtime.ports[("127.0.0.1", 0)]
        client = await GrpcClient.connect(port)
        try:
            yield client, port, admin_port
        finally:
            await client.stream.close()


async def test_method_matches_exact_service_method_regex_and_none(grpc_upstream: H2Upstream, tmp_path):
    rules = "  rules:\n" + "".join([
        rule("exact", "    - method:\n        service: grpc.echo.Echo\n        method: Say\n"),
        rule("service", "    - method:\n        service: grpc.echo.Echo\n"),
        rule("method", "    - method:\n        method: Shout\n"),
        rule("regex", "    - method:\n        type: RegularExpression\n        service: grpc\\.(alpha|beta)\\..*\n"
                      "        method: Get.*\n"),
        rule("regex-method", "    - method:\n        type: RegularExpression\n        method: Put|Post\n"),
    ])
    async with proxy(tmp_path, documents(backend(grpc_upstream.port), grpc_route("echo", rules))) as (client, _, _):
        answered = {path: await client.rule(path) for path in [
            "/grpc.echo.Echo/Say",
            "/grpc.echo.Echo/Other",
            "/grpc.other.Other/Shout",
            "/grpc.echo.Echo/Shout",
            "/grpc.alpha.Stats/GetAll",
            "/grpc.beta.Stats/Get",
            "/grpc.gamma.Stats/GetAll",
            "/grpc.alpha.Stats/List",
            "/grpc.echo.EchoV2/Say",
            "/any.Service/Put",
            "/any.Service/Post",
            "/any.Service/PutAll",
        ]}
    assert answered == {
        "/grpc.echo.Echo/Say": "exact",
        "/grpc.echo.Echo/Other": "service",
        "/grpc.other.Other/Shout": "method",
        "/grpc.echo.Echo/Shout": "service",  # a service outranks a method
        "/grpc.alpha.Stats/GetAll": "regex",
        "/grpc.beta.Stats/Get": "regex",
        "/grpc.gamma.Stats/GetAll": "grpc-status 12",
        "/grpc.alpha.Stats/List": "grpc-status 12",
        "/grpc.echo.EchoV2/Say": "grpc-status 12",  # the service is a whole path element
        "/any.Service/Put": "regex-method",  # the alternation stays inside the method part
        "/any.Service/Post": "regex-method",
        "/any.Service/PutAll": "grpc-status 12",
    }
    say = grpc_upstream.requests[0]
    assert (say.header(":method"), say.header(":path"), say.body) == ("POST", "/grpc.echo.Echo/Say", EMPTY_MESSAGE)
    assert say.header("content-type") == "application/grpc"


async def test_the_http_method_is_not_matched(grpc_upstream: H2Upstream, tmp_path):
    rules = "  rules:\n" + rule("exact", "    - method:\n        service: grpc.echo.Echo\n        method: Say\n")
    async with proxy(tmp_path, documents(backend(grpc_upstream.port), grpc_route("echo", rules))) as (client, _, _):
        response = await client.call("/grpc.echo.Echo/Say", method="PUT")
    assert response["x-rule"] == "exact"


async def test_header_matches(grpc_upstream: H2Upstream, tmp_path):
    method = "    - method:\n        service: grpc.echo.Echo\n"
    rules = "  rules:\n" + "".join([
        rule("none", method),
        rule("tenant", method + "      headers:\n      - name: X-Tenant\n        value: a\n"),
        rule("tenant-and-version", method + "      headers:\n      - name: x-tenant\n        value: a\n"
                                           "      - name: version\n        type: RegularExpression\n"
                                           "        value: v[0-9]+\n"),
        rule("headers-only", "    - headers:\n      - name: x-tenant\n        value: b\n"),
    ])
    async with proxy(tmp_path, documents(backend(grpc_upstream.port), grpc_route("echo", rules))) as (client, _, _):
        answered = [
            await client.rule("/grpc.echo.Echo/Say"),
            await client.rule("/grpc.echo.Echo/Say", headers=(("x-tenant", "a"),)),
            await client.rule("/grpc.echo.Echo/Say", headers=(("x-tenant", "a"), ("version", "v2"))),
            await client.rule("/grpc.echo.Echo/Say", headers=(("x-tenant", "a"), ("version", "beta"))),
            await client.rule("/grpc.echo.Echo/Say", headers=(("x-tenant", "b"),)),
            await client.rule("/other.Service/Say", headers=(("x-tenant", "b"),)),
            await client.rule("/other.Service/Say", headers=(("x-tenant", "c"),)),
        ]
    assert answered == ["none", "tenant", "tenant-and-version", "tenant", "none", "headers-only", "grpc-status 12"]


async def test_hostnames_exact_then_the_longest_wildcard_then_any(grpc_upstream: H2Upstream, tmp_path):
    same = "    - method:\n        service: grpc.echo.Echo\n"
    config = documents(
        backend(grpc_upstream.port),
        grpc_route("any", "  rules:\n" + rule("any", same)),
        grpc_route("wild", "  rules:\n" + rule("wildcard", same), hostnames='"*.example.com"'),
        grpc_route("deep", "  rules:\n" + rule("deeper-wildcard", same), hostnames='"*.api.example.com"'),
        grpc_route("exact", "  rules:\n" + rule("exact", same), hostnames="grpc.api.example.com"),
        # a longer method match on a less specific host does not win: the host chooses first
        grpc_route("longer", "  rules:\n" + rule("longer-match", "    - method:\n        service: grpc.echo.Echo\n"
                                                               "        method: Say\n"),
                   hostnames='"*.example.com"'),
    )
    async with proxy(tmp_path, config) as (client, _, _):
        answered = {authority: await client.rule("/grpc.echo.Echo/Say", authority) for authority in [
            "grpc.api.example.com", "other.api.example.com", "grpc.example.com", "grpc.example.net",
        ]}
    assert answered == {
        "grpc.api.example.com": "exact",
        "other.api.example.com": "deeper-wildcard",
        "grpc.example.com": "longer-match",
        "grpc.example.net": "any",
    }


async def test_precedence_service_then_method_then_headers_then_age_then_name(grpc_upstream: H2Upstream, tmp_path):
    config = documents(
        backend(grpc_upstream.port),
        grpc_route("old", "  rules:\n" + "".join([
            rule("old-service", "    - method:\n        service: a.B\n"),
            rule("old-service-regex", "    - method:\n        type: RegularExpression\n        service: x\\.Y\n"),
            rule("old-one-header", "    - method:\n        service: h.H\n        method: Get\n"
                                   "      headers:\n      - name: x-one\n        value: '1'\n"),
        ]), created="2020-01-01T00:00:00Z"),
        grpc_route("new", "  rules:\n" + "".join([
            rule("new-service", "    - method:\n        service: a.B\n"),
            rule("new-service-method", "    - method:\n        service: a.B\n        method: Get\n"),
            rule("new-long-method", "    - method:\n        method: LongMethodName\n"),
            rule("new-two-headers", "    - method:\n        service: h.H\n        method: Get\n"
                                    "      headers:\n      - name: x-one\n        value: '1'\n"
                                    "      - name: x-two\n        value: '2'\n"),
        ]), created="2024-01-01T00:00:00Z"),
        grpc_route("bb", "  rules:\n" + rule("bb", "    - method:\n        service: t.T\n")),
        grpc_route("aa", "  rules:\n" + rule("aa", "    - method:\n        service: t.T\n")),
    )
    async with proxy(tmp_path, config) as (client, _, _):
        answered = {
            "service and method over service": await client.rule("/a.B/Get"),
            "the older route on a tie": await client.rule("/a.B/Put"),
            "a service over a longer method": await client.rule("/x.Y/LongMethodName"),
            "the method alone": await client.rule("/q.Q/LongMethodName"),
            "more headers": await client.rule("/h.H/Get", headers=(("x-one", "1"), ("x-two", "2"))),
            "the headers present": await client.rule("/h.H/Get", headers=(("x-one", "1"),)),
            "namespace/name on a full tie": await client.rule("/t.T/Get"),
        }
    assert answered == {
        "service and method over service": "new-service-method",
        "the older route on a tie": "old-service",
        "a service over a longer method": "old-service-regex",
        "the method alone": "new-long-method",
        "more headers": "new-two-headers",
        "the headers present": "old-one-header",
        "namespace/name on a full tie": "aa",
    }


async def test_a_grpcroute_and_an_httproute_share_a_host(grpc_upstream: H2Upstream, upstream: Upstream,
                                                        tmp_path):
    http_route = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
spec:
  hostnames: [app.example.com]
  rules:
  - filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set:
        - name: x-rule
          value: web
    backendRefs:
    - group: gateway.envoyproxy.io
      kind: Backend
      name: web
"""
    grpc = grpc_route("api", "  rules:\n" + rule("grpc", "    - method:\n        service: grpc.echo.Echo\n"),
                      hostnames="app.example.com")
    async with proxy(tmp_path, documents(backend(grpc_upstream.port), backend(upstream.port, "web"), http_route, grpc)) as (client, port, _):
        over_h2 = [await client.rule("/grpc.echo.Echo/Say", "app.example.com"),
                   await client.rule("/index.html", "app.example.com")]
        http1 = await Client.connect(port)
        try:
            over_http1 = (await http1.request("POST", "/grpc.echo.Echo/Say", host="app.example.com",
                                              headers={"content-type": "application/grpc"},
                                              body=EMPTY_MESSAGE)).header("x-rule")
        finally:
            await http1.close()
    assert over_h2 == ["grpc", "web"]
    assert over_http1 == "grpc"
    # both gRPC calls reached the backend over HTTP/2, the HTTP/1.1 client's too
    assert [r.header(":path") for r in grpc_upstream.requests] == ["/grpc.echo.Echo/Say"] * 2


async def test_status_in_the_config_dump(grpc_upstream: H2Upstream, tmp_path):
    rules = "  rules:\n" + rule("exact", "    - method:\n        service: grpc.echo.Echo\n        method: Say\n")
    missing = grpc_route("missing", "  rules:\n" + rule("missing").replace("name: echo\n", "name: nowhere\n"))
    async with proxy(tmp_path, documents(backend(grpc_upstream.port), grpc_route("echo", rules), missing)) as (
            client, _, admin_port):
        dump = await asyncio.to_thread(_get_json, f"http://127.0.0.1:{admin_port}/config_dump")
        missing = await client.call("/any.Service/Call")
    statuses = {(s["kind"], s["name"]): s["conditions"] for s in dump["statuses"]}
    assert [(c["type"], c["status"], c["reason"]) for c in statuses[("GRPCRoute", "echo")]] == [
        ("Accepted", True, "Accepted"), ("ResolvedRefs", True, "ResolvedRefs")]
    assert [(c["type"], c["status"], c["reason"]) for c in statuses[("GRPCRoute", "missing")]] == [
        ("Accepted", True, "Accepted"), ("ResolvedRefs", False, "BackendNotFound")]
    routes = [r["name"] for lst in dump["config"]["listeners"] for vh in lst["virtual_hosts"] for r in vh["routes"]]
    assert routes == ["grpcroute/default/echo/rule/0/match/0", "grpcroute/default/missing/rule/0/match/0"]
    assert (missing[":status"], missing["grpc-status"]) == ("200", "2")  # the 500 of an invalid backendRef


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)

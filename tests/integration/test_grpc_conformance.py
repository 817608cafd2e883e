"""The Gateway API conformance suite's gRPC tests, translated to run against pyproxy in-process
with real parts: a grpcio client in front, HTTP/2 backends behind (TLS from trustme where the
case asks for it), the runtime loading the case's manifests from YAML files.

Source: kubernetes-sigs/gateway-api ``conformance/tests/`` as stored for the search tool (the
harness in ``../shared/conformance`` pins ``4564255ac2c35d582249b3cdf261bdf51c8bca32``, which
is not stored; each file below names the commit it was read at):

| case | test | manifest |
|---|---|---|
| GRPCExactMethodMatching | grpcroute-exact-method-matching.go @1e3081bc | grpcroute-exact-method-matching.yaml @3dce0e82 |
| GRPCRouteHeaderMatching | grpcroute-header-matching.go @57bee57f | grpcroute-header-matching.yaml (*) |
| GRPCRouteListenerHostnameMatching | grpcroute-listener-hostname-matching.go @0a35a560 | grpcroute-listener-hostname-matching.yaml @711cf33b |
| GRPCRouteNamedRule | grpcroute-named-rule.go @57bee57f | grpcroute-named-rule.yaml (*) |
| GRPCRouteRequestHeaderModifier | grpcroute-request-header-modifier.go @18bd2264 | grpcroute-request-header-modifier.yaml @6a371346 |
| GRPCRouteWeight | grpcroute-weight.go @150afa5c | grpcroute-weight.yaml @a880d853 |
| BackendTLSPolicyGRPCRoute | backendtlspolicy-grpcroute.go @57bee57f | backendtlspolicy-grpcroute.yaml @8b96302d |
| HTTPRouteBackendProtocolH2C | httproute-backend-protocol-h2c.go @27137228 | httproute-backend-protocol-h2c.yaml @2a2088f7 |

(*) not stored for kubernetes-sigs/gateway-api; read from the fork hashicorp/gateway-api
@2349580c, which carries them unchanged apart from a licence header. The base manifests
(``conformance/base/manifests.yaml`` @0084b12e) give the Gateway ``same-namespace`` and the
Services the cases route to. The echo semantics are ``conformance/echo-basic/grpc/grpc.go``
and ``grpcecho.proto``; the client and the comparison are ``conformance/utils/grpc/grpc.go``
(``compareResponse``: the status code, then for OK the fully qualified method, the namespace
and a pod name starting with the expected backend's name).

The manifests are kept as upstream wrote them, in ``test_grpc_conformance.yaml`` beside this
module (keyed by their upstream path); ``translate`` adapts them as the shared harness does: a
Service backendRef becomes an Envoy Gateway ``Backend`` of the same name (its port kept) with
one ``ip`` endpoint on 127.0.0.1, and ``appProtocols: [gateway.envoyproxy.io/h2c]`` where the
Service port it names has ``appProtocol: kubernetes.io/h2c`` (the base grpc-infra-backend
Services and infra-backend-v1's port 8081 do; the BackendTLSPolicy case's Services do not, so
pyproxy reaches those by ALPN ``h2`` as for any GRPCRoute backend); a BackendTLSPolicy
targetRef to a Service becomes one to that Backend with the Service port's number as
``sectionName``; each Gateway's listeners share one free port. Further adaptations:

- Backends are ``H2Upstream`` scripts (``EchoBackend``) answering as echo-basic does, the
  EchoResponse sent as JSON rather than protobuf (nothing here compiles a .proto), with the
  request headers, the authority and the pod context; over TLS the backend also records the
  server name (SNI) the proxy sent, which the suite's TLS assertions carry. The CA ConfigMaps
  the suite generates are made with trustme.
- The old stored exact-method manifest names the service by the echo server's former package
  (``gateway_api_conformance.grpc_echo.grpcecho``); the suite's client calls
  ``gateway_api_conformance.echo_basic.grpcecho.GrpcEcho``, the name every later manifest
  uses, and so does the manifest here.
- Metadata keys are sent lower-cased, as grpc-go's ``metadata.New`` does (grpcio refuses
  upper-case keys); the authority is set with the ``grpc.default_authority`` channel option,
  as the suite's ``grpc.WithAuthority``.
- The suite retries each expectation until 3 pass in a row (``AwaitConvergence``) and runs
  them in parallel; pyproxy serves the whole config once ``start`` returns, so each request is
  sent once, in order, and ``GatewayAndRoutesMustBeAccepted`` / the policy conditions are read
  from the translator's statuses.
- GRPCRouteRequestHeaderModifier: the suite's ``compareResponse`` never looks at the headers
  its cases list, and those lists contradict the manifest (its three ``Echo`` rules have the
  same match, so by the GRPCRoute precedence rules the first, the ``set`` rule, serves every
  Echo call: no conformant implementation adds X-Header-Add or removes X-Header-Remove there;
  the EchoTwo lists name values the manifest never sets). The tests assert the backend and
  method as the suite does, and the headers the backend must see by the manifest and the
  spec (an ``add`` appends to an existing value as ``a,b``).
- GRPCRouteWeight keeps the suite's numbers (500 calls, 10 at a time, +/-0.05, up to 10
  samples); the weight-0 backend must see no call at all.
- BackendTLSPolicyGRPCRoute: "should fail" is asserted as pyproxy answers a failed upstream
  TLS handshake (UNAVAILABLE with Envoy's ``TLS_error`` reason), and the backend must see only
  the valid call.
- HTTPRouteBackendProtocolH2C: the backend speaks only HTTP/2 with prior knowledge, so its
  answer proves the protocol; the client is ``tests/helpers/h2client.py`` (prior knowledge).
"""
from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import trustme
import yaml

from pyproxy.runtime import Runtime, Settings
from tests.conftest import server_context
from tests.helpers.h2client import H2Client
from tests.helpers.h2server import H2Reply, H2Request, H2Upstream
from tests.helpers.recorder import free_port

MANIFESTS: dict[str, str] = yaml.safe_load(Path(__file__).with_suffix(".yaml").read_text())
BASE = "conformance/base/manifests.yaml"
NS = "gateway-conformance-infra"
SAME_NAMESPACE = "same-namespace"  # the base Gateway most cases attach to
SERVICE = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho"
BACKEND_GROUP = "gateway.envoyproxy.io"


# --------------------------------------------------------------------------- the echo backend
@dataclass
class EchoBackend:
    """echo-basic behind one Service: gRPC calls of ``Echo`` and ``EchoTwo`` are answered with
    an EchoResponse (as JSON) naming the method, the request's headers and authority, and the
    pod (``<name>-pod``, as the suite's pods are named after their Deployment); any other
    method is UNIMPLEMENTED, as grpc-go answers a method the server does not implement. Other
    requests get echo-basic's HTTP answer (JSON: path, method, host, namespace, pod)."""

    name: str
    server_names: list[str | None] = field(default_factory=list)  # SNI of each TLS handshake

    def __call__(self, request: H2Request) -> H2Reply:
        headers = [(k.decode(), v.decode()) for k, v in request.headers]
        pseudo = dict(kv for kv in headers if kv[0].startswith(":"))
        context = {"namespace": NS, "pod": f"{self.name}-pod"}
        if not (request.header("content-type") or "").startswith("application/grpc"):
            body = json.dumps({"path": pseudo[":path"], "method": pseudo[":method"], "host": pseudo[":authority"],
                               **context}).encode()
            return H2Reply(headers=[(b"content-type", b"application/json")], body=body)
        if pseudo[":path"] not in (f"/{SERVICE}/Echo", f"/{SERVICE}/EchoTwo"):
            return H2Reply(headers=[(b"content-type", b"application/grpc"), (b"grpc-status", b"12"),
                                    (b"grpc-message", b"unknown method")])
        message = json.dumps({"assertions": {
            "fully_qualified_method": pseudo[":path"],
            "headers": [[k, v] for k, v in headers if not k.startswith(":")],
            "authority": pseudo[":authority"],
            "context": context,
        }}).encode()
        return H2Reply(headers=[(b"content-type", b"application/grpc")],
                       body=b"\0" + len(message).to_bytes(4, "big") + message, trailers=[(b"grpc-status", b"0")])

    async def start(self, h2_upstream, ssl_context=None) -> H2Upstream:
        if ssl_context is not None:
            ssl_context.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)
        return await h2_upstream(self, ssl_context=ssl_context)


# --------------------------------------------------------------------------- the gRPC client
@dataclass(frozen=True)
class Reply:
    code: grpc.StatusCode
    details: str | None = None
    assertions: dict[str, Any] = field(default_factory=dict)  # the EchoResponse's, when OK

    @property
    def pod(self) -> str:
        return self.assertions["context"]["pod"]

    @property
    def headers(self) -> dict[str, str]:
        """The request headers the backend saw, repeated ones joined with ',' (RFC 9110)."""
        seen: dict[str, list[str]] = {}
        for name, value in self.assertions["headers"]:
            seen.setdefault(name, []).append(value)
        return {name: ",".join(values) for name, values in seen.items()}


class GrpcEchoClient:
    """The suite's DefaultClient: unary calls of GrpcEcho on raw bytes (an empty EchoRequest
    is zero bytes), one channel per authority, every call with a deadline."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.channels: dict[str | None, grpc.Channel] = {}

    def call(self, method: str, metadata: dict[str, str] | None = None, authority: str | None = None) -> Reply:
        if authority not in self.channels:
            options = [("grpc.default_authority", authority)] if authority else []
            self.channels[authority] = grpc.insecure_channel(f"127.0.0.1:{self.port}", options=options)
        stub = self.channels[authority].unary_unary(f"/{SERVICE}/{method}")
        pairs = tuple((k.lower(), v) for k, v in (metadata or {}).items())
        try:
            answer = stub(b"", metadata=pairs, timeout=10)
        except grpc.RpcError as exc:
            return Reply(exc.code(), exc.details())
        return Reply(grpc.StatusCode.OK, None, json.loads(answer)["assertions"])

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()


def matches(reply: Reply, method: str, backend: str) -> bool:
    """``compareResponse`` for an OK expectation: the method, the namespace, the pod."""
    return (reply.code == grpc.StatusCode.OK and reply.assertions["fully_qualified_method"] == f"/{SERVICE}/{method}"
            and reply.assertions["context"]["namespace"] == NS and reply.pod.startswith(backend))


# --------------------------------------------------------------------------- manifests and proxy
def backend(name: str, port: int, h2c: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"endpoints": [{"ip": {"address": "127.0.0.1", "port": port}}]}
    if h2c:
        spec["appProtocols"] = ["gateway.envoyproxy.io/h2c"]
    return {"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "Backend",
            "metadata": {"name": name, "namespace": NS}, "spec": spec}


def ca_configmap(name: str, ca: trustme.CA) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NS},
            "data": {"ca.crt": ca.cert_pem.bytes().decode()}}


def translate(manifest: str, endpoints: dict[str, int],
              extra: tuple[dict[str, Any], ...] = ()) -> tuple[str, dict[str, int]]:
    """The base manifests and the case's ``manifest`` (a file name of conformance/tests/) as
    pyproxy takes them, with a free port for each Gateway's listeners (see the module
    docstring). ``endpoints`` maps a Service name to the port of the backend serving it; only
    those Services become Backends, with ``appProtocols: [gateway.envoyproxy.io/h2c]`` when a
    backendRef names a port of theirs whose ``appProtocol`` is ``kubernetes.io/h2c``. Returns
    the config and the port of each Gateway by name."""
    docs = [d for path in (BASE, f"conformance/tests/{manifest}") for d in yaml.safe_load_all(MANIFESTS[path]) if d]
    service_ports = {d["metadata"]["name"]: d["spec"]["ports"] for d in docs if d["kind"] == "Service"}
    ports: dict[str, int] = {}
    h2c: set[str] = set()
    out = []
    for doc in docs:
        spec = doc.get("spec", {})
        if doc["kind"] == "Service":
            continue
        if doc["kind"] == "Gateway":
            spec["gatewayClassName"] = "pyproxy"
            port = ports[doc["metadata"]["name"]] = free_port()
            for listener in spec["listeners"]:
                listener["port"] = port
        for rule in spec.get("rules", ()):
            for ref in rule.get("backendRefs", ()):
                ref.update(group=BACKEND_GROUP, kind="Backend")
                if any(p["port"] == ref["port"] and p.get("appProtocol") == "kubernetes.io/h2c"
                       for p in service_ports[ref["name"]]):
                    h2c.add(ref["name"])
        for target in spec.get("targetRefs", ()):
            names = {p["name"]: str(p["port"]) for p in service_ports[target["name"]]}
            target.update(group=BACKEND_GROUP, kind="Backend", sectionName=names[target["sectionName"]])
        out.append(doc)
    out += [backend(name, port, name in h2c) for name, port in endpoints.items()]
    return yaml.safe_dump_all([*out, *extra]), ports


@asynccontextmanager
async def serve_case(tmp_path: Path, manifest: str, backends: dict[str, H2Upstream],
                     extra: tuple[dict[str, Any], ...] = ()):
    """The runtime serving the translated case on 127.0.0.1, every object accepted with its
    references resolved (the suite's ``GatewayAndRoutesMustBeAccepted``); yields (runtime,
    port of each Gateway by name). ``backends`` maps a Service name to the backend serving it."""
    config, ports = translate(manifest, {name: up.port for name, up in backends.items()}, extra)
    (tmp_path / "conformance.yaml").write_text(config)
    runtime = Runtime(Settings(config_paths=(str(tmp_path),), listen=("127.0.0.1", 0), bind_address="127.0.0.1",
                               access_log="off"))
    await runtime.start()
    try:
        assert runtime.result is not None
        problems = [(s.kind, s.name, c) for s in runtime.result.statuses for c in s.conditions if c.is_error]
        assert not problems
        yield runtime, ports
    finally:
        await runtime.stop()


async def calls(port: int, run: Callable[[GrpcEchoClient], Any]) -> Any:
    """``run(client)`` in a thread (grpcio's API blocks) while the proxy serves."""
    def in_thread() -> Any:
        client = GrpcEchoClient(port)
        try:
            return run(client)
        finally:
            client.close()
    return await asyncio.to_thread(in_thread)


async def echo_backends(h2_upstream, *names: str) -> dict[str, H2Upstream]:
    return {name: await EchoBackend(name).start(h2_upstream) for name in names}


V1, V2, V3 = "grpc-infra-backend-v1", "grpc-infra-backend-v2", "grpc-infra-backend-v3"
UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED


# --------------------------------------------------------------------------- GRPCExactMethodMatching
async def test_grpc_exact_method_matching(h2_upstream, tmp_path):
    ups = await echo_backends(h2_upstream, V1, V2)
    async with serve_case(tmp_path, "grpcroute-exact-method-matching.yaml", ups) as (_, ports):
        echo, two, three = await calls(ports[SAME_NAMESPACE],
                                       lambda c: [c.call("Echo"), c.call("EchoTwo"), c.call("EchoThree")])
    assert matches(echo, "Echo", V1)
    assert matches(two, "EchoTwo", V2)
    assert three.code == UNIMPLEMENTED
    # EchoThree matched no rule: the proxy answered it (404 → UNIMPLEMENTED), no backend saw it
    assert [r.header(":path") for u in ups.values() for r in u.requests] == [f"/{SERVICE}/Echo", f"/{SERVICE}/EchoTwo"]


# --------------------------------------------------------------------------- GRPCRouteHeaderMatching
# (request metadata, the backend it must reach or None for UNIMPLEMENTED), as the suite lists them
HEADER_CASES: list[tuple[dict[str, str], str | None]] = [
    ({"Version": "one"}, V1),
    ({"Version": "two"}, V2),
    ({"Version": "two", "Color": "orange"}, V1),
    ({"Version": "two", "Color": "blue"}, V2),
    ({"Color": "orange"}, None),
    ({"Some-Other-Header": "one"}, None),
    ({"Color": "blue"}, V1),
    ({"Color": "green"}, V1),
    ({"Color": "red"}, V2),
    ({"Color": "yellow"}, V2),
    ({"Color": "purple"}, None),
]


async def test_grpc_route_header_matching(h2_upstream, tmp_path):
    ups = await echo_backends(h2_upstream, V1, V2)
    async with serve_case(tmp_path, "grpcroute-header-matching.yaml", ups) as (_, ports):
        replies = await calls(ports[SAME_NAMESPACE],
                              lambda c: [c.call("Echo", metadata) for metadata, _ in HEADER_CASES])
    answered = [reply.pod.removesuffix("-pod") if reply.code == grpc.StatusCode.OK else reply.code
                for reply in replies]
    assert answered == [want or UNIMPLEMENTED for _, want in HEADER_CASES]
    assert all(matches(reply, "Echo", want) for reply, (_, want) in zip(replies, HEADER_CASES, strict=True) if want)
    assert sum(len(up.requests) for up in ups.values()) == sum(1 for _, want in HEADER_CASES if want)  # 404s: the proxy's


# --------------------------------------------------------------------------- GRPCRouteListenerHostnameMatching
AUTHORITIES: dict[str, str | None] = {
    "bar.com": V1,
    "foo.bar.com": V2,
    "baz.bar.com": V3,
    "boo.bar.com": V3,
    "multiple.prefixes.bar.com": V3,
    "multiple.prefixes.foo.com": V3,
    "foo.com": None,
    "no.matching.host": None,
}


async def test_grpc_route_listener_hostname_matching(h2_upstream, tmp_path):
    ups = await echo_backends(h2_upstream, V1, V2, V3)
    async with serve_case(tmp_path, "grpcroute-listener-hostname-matching.yaml", ups) as (_, ports):
        replies = await calls(ports["grpcroute-listener-hostname-matching"],
                              lambda c: {a: c.call("Echo", authority=a) for a in AUTHORITIES})
    answered = {a: r.pod.removesuffix("-pod") if r.code == grpc.StatusCode.OK else r.code for a, r in replies.items()}
    assert answered == {a: want or UNIMPLEMENTED for a, want in AUTHORITIES.items()}
    assert all(matches(replies[a], "Echo", want) for a, want in AUTHORITIES.items() if want)
    assert all(replies[a].assertions["authority"] == a for a, want in AUTHORITIES.items() if want)
    assert sorted(r.header(":authority") for up in ups.values() for r in up.requests) == sorted(
        a for a, want in AUTHORITIES.items() if want)  # no listener took the others: the proxy answered them


# --------------------------------------------------------------------------- GRPCRouteNamedRule
async def test_grpc_route_named_rule(h2_upstream, tmp_path):
    ups = await echo_backends(h2_upstream, V1, V2)
    async with serve_case(tmp_path, "grpcroute-named-rule.yaml", ups) as (_, ports):
        echo, two = await calls(ports[SAME_NAMESPACE], lambda c: [c.call("Echo"), c.call("EchoTwo")])
    assert matches(echo, "Echo", V1)
    assert matches(two, "EchoTwo", V2)


# --------------------------------------------------------------------------- GRPCRouteRequestHeaderModifier
@dataclass(frozen=True)
class ModifierCase:
    name: str  # the suite's TestCaseName
    method: str
    metadata: dict[str, str]
    backend: str
    seen: dict[str, str]  # headers the backend must see, with these values
    absent: tuple[str, ...] = ()  # headers it must not see


# The suite's requests. What the backend sees follows the manifest: every Echo call is served by
# the first rule (the ``set`` one), the three Echo rules having the same match (see the module
# docstring for where the suite's unchecked lists differ).
MODIFIER_CASES = [
    ModifierCase("Set headers -- X-Header-Set should have the original value", "Echo",
                 {"Some-Other-Header": "this-header-should-be-set"}, V1,
                 {"some-other-header": "this-header-should-be-set", "x-header-set": "set-overwrites-values"}),
    ModifierCase("Set headers -- X-Header-Set should get overwritten with the original value", "Echo",
                 {"Some-Other-Header": "this-header-should-be-set", "X-Header-Set": "this-value-should-be-overwritten"},
                 V1, {"some-other-header": "this-header-should-be-set", "x-header-set": "set-overwrites-values"}),
    ModifierCase("Add headers -- X-Header-Add should have the original value", "Echo",
                 {"Some-Other-Header": "this-header-should-be-set"}, V1,
                 {"some-other-header": "this-header-should-be-set", "x-header-set": "set-overwrites-values"},
                 absent=("x-header-add",)),
    ModifierCase("Add headers -- X-Header-Add should append the new value to the original value", "Echo",
                 {"Some-Other-Header": "this-header-should-be-set", "X-Header-Add": "this-value-should-be-appended"},
                 V1, {"x-header-add": "this-value-should-be-appended", "x-header-set": "set-overwrites-values"}),
    ModifierCase("Remove headers -- X-Header-Remove should be removed", "Echo",
                 {"X-Header-Remove": "this-should-be-removed"}, V1,
                 {"x-header-remove": "this-should-be-removed", "x-header-set": "set-overwrites-values"}),
    ModifierCase("Multiple operations - all header operations should be applied", "EchoTwo",
                 {"X-Header-Set-2": "set-header-2", "X-Header-Add-2": "add-header-2",
                  "X-Header-Remove-2": "should-be-removed-2", "Some-Other-Header": "another-header-val"}, V2,
                 {"x-header-set-1": "header-set-1", "x-header-set-2": "header-set-2", "x-header-add-1": "header-add-1",
                  "x-header-add-2": "add-header-2,header-add-2", "some-other-header": "another-header-val"},
                 absent=("x-header-remove-2",)),
    ModifierCase("Case sensitivity check for header names", "EchoTwo",
                 {"x-header-set-1": "original-set-1", "x-header-add-1": "existing-add-1",
                  "x-header-remove-1": "should-be-removed-1"}, V2,
                 {"x-header-set-1": "header-set-1", "x-header-set-2": "header-set-2",
                  "x-header-add-1": "existing-add-1,header-add-1", "x-header-add-2": "header-add-2"},
                 absent=("x-header-remove-1",)),
]


async def test_grpc_route_request_header_modifier(h2_upstream, tmp_path):
    ups = await echo_backends(h2_upstream, V1, V2)
    async with serve_case(tmp_path, "grpcroute-request-header-modifier.yaml", ups) as (_, ports):
        replies = await calls(ports[SAME_NAMESPACE],
                              lambda c: [c.call(case.method, case.metadata, SERVICE) for case in MODIFIER_CASES])
    for case, reply in zip(MODIFIER_CASES, replies, strict=True):
        assert matches(reply, case.method, case.backend), (case.name, reply)
        seen = reply.headers
        assert {name: seen.get(name) for name in case.seen} == case.seen, case.name
        assert not set(case.absent) & set(seen), case.name
        assert reply.assertions["authority"] == SERVICE, case.name


# --------------------------------------------------------------------------- GRPCRouteWeight
EXPECTED_WEIGHTS = {V1: 0.7, V2: 0.3, V3: 0.0}
TOTAL_REQUESTS, CONCURRENT_REQUESTS, TOLERANCE, TRIES = 500, 10, 0.05, 10  # testGRPCDistribution's


def distribution(client: GrpcEchoClient) -> list[str]:
    """``testGRPCDistribution``: the problems with one sample of TOTAL_REQUESTS calls (none: it passed)."""
    with ThreadPoolExecutor(CONCURRENT_REQUESTS) as pool:
        replies = list(pool.map(lambda _: client.call("Echo"), range(TOTAL_REQUESTS)))
    failed = [r for r in replies if r.code != grpc.StatusCode.OK]
    assert not failed, failed[:3]
    seen = Counter(next((b for b in EXPECTED_WEIGHTS if r.pod.startswith(b)), r.pod) for r in replies)
    problems = [f"unexpected pod {pod!r}" for pod in seen if pod not in EXPECTED_WEIGHTS]
    if len(seen) != 2:
        problems.append(f"expected only two backends to receive traffic: {dict(seen)}")
    for name, want in EXPECTED_WEIGHTS.items():
        if math.fabs(seen[name] / TOTAL_REQUESTS - want) > TOLERANCE:
            problems.append(f"{name}: {seen[name] / TOTAL_REQUESTS} not within {want} +/- {TOLERANCE}")
    return problems


async def test_grpc_route_weight(h2_upstream, tmp_path):
    ups = await echo_backends(h2_upstream, V1, V2, V3)

    def sample(client: GrpcEchoClient) -> tuple[Reply, list[list[str]]]:
        first = client.call("Echo")  # the request must succeed before the distribution is checked
        attempts = []
        for _ in range(TRIES):
            attempts.append(distribution(client))
            if not attempts[-1]:
                break
        return first, attempts

    async with serve_case(tmp_path, "grpcroute-weight.yaml", ups) as (_, ports):
        first, attempts = await calls(ports[SAME_NAMESPACE], sample)
    assert first.code == grpc.StatusCode.OK and first.assertions["context"]["namespace"] == NS
    assert not attempts[-1], attempts
    assert ups[V3].requests == []  # weight 0: never


# --------------------------------------------------------------------------- BackendTLSPolicyGRPCRoute
async def test_backend_tls_policy_grpc_route(h2_upstream, ca, tmp_path):
    """grpc-infra-backend-v1's TLS port serves a certificate for abc.example.com signed by the
    CA in ``tls-checks-ca-certificate``; ``mismatch-ca-certificate`` holds another CA."""
    echo = EchoBackend(V1)
    tls = await echo.start(h2_upstream, server_context(ca, "abc.example.com", "other.example.com"))
    services = ("backendtlspolicy-grpc-test", "backendtlspolicy-grpc-host-mismatch-test",
                "backendtlspolicy-grpc-cert-mismatch-test")
    configmaps = (ca_configmap("tls-checks-ca-certificate", ca), ca_configmap("mismatch-ca-certificate", trustme.CA()))
    async with serve_case(tmp_path, "backendtlspolicy-grpcroute.yaml", dict.fromkeys(services, tls),
                          configmaps) as (runtime, ports):
        port = ports[SAME_NAMESPACE]
        policies = {s.name: {(c.type, c.status) for c in s.conditions}
                    for s in runtime.result.statuses if s.kind == "BackendTLSPolicy"}
        valid = await calls(port, lambda c: c.call("Echo", authority="abc.example.com"))
        valid_sni = list(echo.server_names)
        host_mismatch = await calls(port, lambda c: c.call("EchoTwo", authority="abc.example.com"))
        host_mismatch_sni = echo.server_names[len(valid_sni):]
        cert_mismatch = await calls(port, lambda c: c.call("Echo", authority="cert-mismatch.example.com"))
    # BackendTLSPolicyMustHaveCondition: Accepted and ResolvedRefs, for each of the three
    assert {name: {("Accepted", True), ("ResolvedRefs", True)} <= conds for name, conds in policies.items()} == {
        "grpc-normative-test": True, "grpc-host-mismatch": True, "grpc-cert-mismatch": True}
    assert matches(valid, "Echo", V1)
    assert valid.assertions["authority"] == "abc.example.com"
    assert valid_sni and set(valid_sni) == {"abc.example.com"}  # validation.hostname is the SNI
    for failed in (host_mismatch, cert_mismatch):
        assert failed.code == grpc.StatusCode.UNAVAILABLE
        assert "TLS_error" in (failed.details or "")
    assert host_mismatch_sni and set(host_mismatch_sni) == {"mismatch.example.com"}
    assert [r.header(":path") for r in tls.requests] == [f"/{SERVICE}/Echo"]  # the failures never got through


# --------------------------------------------------------------------------- HTTPRouteBackendProtocolH2C
async def test_httproute_backend_protocol_h2c(h2_upstream, tmp_path):
    """http2 prior knowledge request should reach backend: the backend speaks HTTP/2 only."""
    up = await EchoBackend("infra-backend-v1").start(h2_upstream)
    async with serve_case(tmp_path, "httproute-backend-protocol-h2c.yaml", {"infra-backend-v1": up}) as (_, ports):
        port = ports[SAME_NAMESPACE]
        client = await H2Client.connect(port)
        try:
            response = await client.response(await client.start("/", authority=f"127.0.0.1:{port}".encode()))
        finally:
            await client.close()
    assert response.status == 200
    echoed = json.loads(response.body)
    assert (echoed["path"], echoed["method"], echoed["namespace"]) == ("/", "GET", NS)
    assert echoed["pod"].startswith("infra-backend-v1")
    assert [(r.header(":method"), r.header(":path")) for r in up.requests] == [("GET", "/")]

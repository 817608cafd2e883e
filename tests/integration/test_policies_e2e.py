"""Traffic policies from YAML to the wire: a ClientTrafficPolicy and a BackendTrafficPolicy
loaded by the runtime change what clients and upstreams see, through the same translate and
data plane as ``serve`` (each field's behaviour is tested in depth next to its code; this
checks that the YAML reaches it)."""
from __future__ import annotations

from pathlib import Path

from pyproxy.runtime import Runtime, Settings
from tests.helpers.http import Client, Upstream
from tests.helpers.proc import free_port

HOST = "app.example.com"


def config(port: int, live: int, dead: int) -> str:
    return f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  gatewayClassName: pyproxy
  listeners:
  - name: web
    port: {port}
    protocol: HTTP
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: app
spec:
  parentRefs:
  - name: gw
  hostnames: [{HOST}]
  rules:
  - name: main
    backendRefs:
    - group: gateway.envoyproxy.io
      kind: Backend
      name: two
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata:
  name: two
spec:
  endpoints:
  - ip:
      address: 127.0.0.1
      port: {dead}
  - ip:
      address: 127.0.0.1
      port: {live}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: ClientTrafficPolicy
metadata:
  name: clients
spec:
  targetRefs:
  - group: gateway.networking.k8s.io
    kind: Gateway
    name: gw
  headers:
    withUnderscoresAction: Allow
    requestID: PreserveOrGenerate
  clientIPDetection:
    xForwardedFor:
      numTrustedHops: 1
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata:
  name: backends
spec:
  targetRefs:
  - group: gateway.networking.k8s.io
    kind: HTTPRoute
    name: app
    sectionName: main
  loadBalancer:
    type: RoundRobin
  retry:
    numRetries: 1
    retryOn:
      triggers: [connect-failure]
    perRetry:
      backOff:
        baseInterval: 1ms
"""


async def test_client_and_backend_policies_reach_the_data_plane(upstream: Upstream, tmp_path: Path):
    port = free_port()
    (tmp_path / "policies.yaml").write_text(config(port, upstream.port, free_port()))
    runtime = Runtime(Settings(config_paths=(str(tmp_path),), bind_address="127.0.0.1", access_log="off"))
    await runtime.start()
    try:
        statuses = {(s.kind, s.name): [(c.type, c.status) for c in s.conditions] for s in runtime.result.statuses}
        client = await Client.connect(port)
        answers = []
        for _ in range(4):  # round robin: every other first attempt meets the dead endpoint
            answers.append((await client.request("GET", "/", host=HOST, headers={
                "x_under": "1", "x-request-id": "client-id", "x-forwarded-for": "203.0.113.9"})).status)
        await client.close()
    finally:
        await runtime.stop()
    assert ("Accepted", True) in statuses[("ClientTrafficPolicy", "clients")]
    assert ("Accepted", True) in statuses[("BackendTrafficPolicy", "backends")]
    assert answers == [200] * 4  # the dead endpoint's turns were retried on the live one
    assert len(upstream.seen) == 4
    seen = dict(upstream.seen[0].headers)
    assert seen["x_under"] == "1"  # withUnderscoresAction: Allow
    assert seen["x-request-id"] == "client-id"  # requestID: PreserveOrGenerate
    assert seen["x-envoy-external-address"] == "203.0.113.9"  # numTrustedHops: 1

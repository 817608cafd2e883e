"""``/stats/prometheus`` and ``/clusters`` after real traffic: a runtime serving a config file,
its admin, a real upstream and a dead one; the exposition is read back with prometheus-client's
own parser."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from pyproxy import admin, ir
from pyproxy.dataplane.compile import compile_config
from pyproxy.metrics import buckets
from pyproxy.runtime import Runtime, Settings
from pyproxy.stats import Histogram, Stats
from pyproxy.translate.status import Result
from tests.conftest import destination, forward, listener
from tests.helpers.http import Client, raw_exchange
from tests.helpers.proxy import serve_with_admin
from tests.helpers.recorder import free_port

APP, DEAD, SILENT = "backend/default/app", "backend/default/dead", "backend/default/silent"


def write_config(directory: Path, app_port: int, dead_port: int) -> None:
    documents = []
    for name, port in (("app", app_port), ("dead", dead_port)):
        documents.append(f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: {name}
spec:
  hostnames: [{name}.example]
  rules:
  - backendRefs:
    - group: gateway.envoyproxy.io
      kind: Backend
      name: {name}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata:
  name: {name}
spec:
  endpoints:
  - ip:
      address: 127.0.0.1
      port: {port}
""")
    (directory / "config.yaml").write_text("---\n".join(documents))


async def admin_get(port: int, path: str) -> bytes:
    raw = await raw_exchange(port, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    return body


async def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """Every sample of /stats/prometheus: (name, labels) -> value."""
    text = (await admin_get(port, "/stats/prometheus")).decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def labels(**pairs: str) -> frozenset:
    return frozenset(pairs.items())


async def test_prometheus_counts_requests_by_listener_and_cluster(tmp_path, upstream):
    """7 requests to a live backend (5× 200, 1× 404, 1× 503 from the upstream) and 2 to a
    dead one (connection refused: 503 UF): every request counted once downstream, the live
    cluster's attempts and statuses, the dead cluster's connect failures."""
    write_config(tmp_path, upstream.port, free_port())
    async with serve_with_admin(tmp_path) as (runtime, admin_port):
        proxy_port = runtime.ports[("127.0.0.1", 0)]
        app = await Client.connect(proxy_port)
        statuses = [(await app.request("GET", path, host="app.example")).status
                    for path in ["/status/200"] * 5 + ["/status/404", "/status/503"]]
        dead = await Client.connect(proxy_port)
        statuses += [(await dead.request("GET", "/", host="dead.example")).status for _ in range(2)]
        samples = await scrape(admin_port)
        clusters = json.loads(await admin_get(admin_port, "/clusters?format=json"))
        await app.close()
        await dead.close()
    assert statuses == [200] * 5 + [404, 503, 503, 503]

    prefix = {"envoy_http_conn_manager_prefix": f"http-{proxy_port}"}
    assert samples["envoy_http_downstream_rq_total", labels(**prefix)] == 9
    for code_class, count in {"1": 0, "2": 5, "3": 0, "4": 1, "5": 3}.items():
        assert samples["envoy_http_downstream_rq_xx", labels(**prefix, envoy_response_code_class=code_class)] == count
    assert samples["envoy_http_downstream_rq_time_count", labels(**prefix)] == 9
    assert samples["envoy_http_downstream_rq_time_bucket", labels(**prefix, le="+Inf")] == 9
    assert samples["envoy_http_downstream_cx_total", labels(**prefix)] == 2
    assert samples["envoy_http_downstream_cx_active", labels(**prefix)] == 2  # both still open at the scrape
    assert samples["envoy_http_downstream_rq_active", labels(**prefix)] == 0

    app_label, dead_label = {"envoy_cluster_name": APP}, {"envoy_cluster_name": DEAD}
    assert samples["envoy_cluster_upstream_rq_total", labels(**app_label)] == 7
    assert samples["envoy_cluster_upstream_rq_xx", labels(**app_label, envoy_response_code_class="2")] == 5
    assert samples["envoy_cluster_upstream_rq_xx", labels(**app_label, envoy_response_code_class="5")] == 1
    assert samples["envoy_cluster_upstream_rq_time_count", labels(**app_label)] == 7
    assert samples["envoy_cluster_upstream_cx_total", labels(**app_label)] == 1  # one keep-alive connection
    assert samples["envoy_cluster_upstream_cx_active", labels(**app_label)] == 1
    assert samples["envoy_cluster_upstream_cx_connect_fail", labels(**app_label)] == 0

    assert samples["envoy_cluster_upstream_cx_connect_fail", labels(**dead_label)] == 2
    assert samples["envoy_cluster_upstream_cx_total", labels(**dead_label)] == 2
    assert samples["envoy_cluster_upstream_cx_active", labels(**dead_label)] == 0
    assert samples["envoy_cluster_upstream_rq_total", labels(**dead_label)] == 0  # never sent
    assert samples["envoy_cluster_upstream_rq_xx", labels(**dead_label, envoy_response_code_class="5")] == 2

    assert samples["envoy_server_live", labels()] == 1
    assert samples["pyproxy_config_generation", labels()] == 1
    assert samples["pyproxy_config_reloads_total", labels(result="success")] == 0
    assert samples["pyproxy_access_log_dropped_total", labels()] == 0

    by_name = {c["name"]: c["host_statuses"] for c in clusters["cluster_statuses"]}
    [app_host] = by_name[APP]
    assert app_host["address"] == {"socket_address": {"address": "127.0.0.1", "port_value": upstream.port}}
    assert app_host["health_status"] == {"eds_health_status": "HEALTHY"}
    assert {stat["name"]: stat["value"] for stat in app_host["stats"]} == {
        "cx_total": 1, "cx_active": 1, "cx_connect_fail": 0, "rq_total": 7, "rq_active": 0, "rq_error": 1}
    [dead_host] = by_name[DEAD]
    assert {stat["name"]: stat["value"] for stat in dead_host["stats"]}["cx_connect_fail"] == 2


async def test_retries_and_timeouts_are_counted_on_the_cluster(upstream):
    """A route retrying 503 twice, and one to an upstream that never answers, whose request
    timeout expires."""
    silent = await asyncio.start_server(lambda _reader, _writer: None, "127.0.0.1", 0)
    retrying = forward("httproute/default/retry/rule/0/match/0", destination(upstream.port, name=APP),
                       match=ir.Match(ir.PathMatch("PathPrefix", "/status")),
                       retry=ir.Retry(retries=2, codes=(503,), backoff=0.001))
    slow = forward("httproute/default/slow/rule/0/match/0",
                   destination(silent.sockets[0].getsockname()[1], name=SILENT), timeouts=ir.Timeouts(request=0.05))
    runtime = Runtime(Settings(config_paths=(), access_log="off"))
    runner = await admin.start(runtime, "127.0.0.1", 0)
    try:
        await runtime.serve(Result(ir.Config((listener(retrying, slow),)), ()))
        client = await Client.connect(runtime.ports[("127.0.0.1", 0)])
        assert (await client.request("GET", "/status/503")).status == 503
        assert (await client.request("GET", "/never")).status == 504
        await client.close()
        samples = await scrape(runner.addresses[0][1])
    finally:
        await runtime.stop()
        await runner.cleanup()
        silent.close()
    app = labels(envoy_cluster_name=APP)
    assert samples["envoy_cluster_upstream_rq_retry", app] == 2
    assert samples["envoy_cluster_upstream_rq_total", app] == 3
    assert samples["envoy_cluster_upstream_rq_xx", labels(envoy_cluster_name=APP, envoy_response_code_class="5")] == 3
    assert samples["envoy_cluster_upstream_rq_timeout", app] == 0
    slow_cluster = labels(envoy_cluster_name=SILENT)
    assert samples["envoy_cluster_upstream_rq_timeout", slow_cluster] == 1
    assert samples["envoy_cluster_upstream_rq_total", slow_cluster] == 1
    assert samples["envoy_cluster_upstream_rq_xx", labels(envoy_cluster_name=SILENT, envoy_response_code_class="5")] == 1
    assert samples["envoy_cluster_upstream_rq_time_count", slow_cluster] == 0  # no response ended


async def test_a_recompiled_config_keeps_counting_into_the_same_stats():
    """What a reload relies on: destinations are looked up by name in the runtime's registry."""
    stats = Stats()
    config = ir.Config((listener(forward("route", destination(1, name=APP))),))
    first = await compile_config(config, stats)
    first.destinations[APP].stats.rq_retry += 1
    second = await compile_config(config, stats)
    assert second.destinations[APP].stats is first.destinations[APP].stats
    assert list(stats.clusters) == [APP]


def test_histogram_buckets_are_cumulative_and_inclusive():
    """Envoy's bounds in ms; a value equal to a bound is in that bucket (``le``)."""
    histogram = Histogram()
    for ms in (0.5, 1, 1.01, 4_000_000):
        histogram.record(ms)
    counts = dict(buckets(histogram))
    assert list(counts)[:4] == ["0.5", "1", "5", "10"] and list(counts)[-2:] == ["3600000", "+Inf"]
    assert (counts["0.5"], counts["1"], counts["5"], counts["3600000"], counts["+Inf"]) == (1, 2, 3, 3, 4)
    assert histogram.sum == 0.5 + 1 + 1.01 + 4_000_000

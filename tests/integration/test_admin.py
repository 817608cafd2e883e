"""The admin interface over real HTTP: what /config_dump may reveal and whom the admin answers."""
from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.http import raw_exchange
from tests.helpers.proc import shim, start_proxy
from tests.helpers.proxy import serve_with_admin
from tests.helpers.wire import Wire

KEY_LABELS = ("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY")

CONFIG = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
spec:
  rules:
  - backendRefs:
    - group: gateway.envoyproxy.io
      kind: Backend
      name: tls-backend
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata:
  name: tls-backend
spec:
  endpoints:
  - ip:
      address: 127.0.0.1
      port: 9443
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata:
  name: tls-backend
spec:
  targetRefs:
  - group: gateway.envoyproxy.io
    kind: Backend
    name: tls-backend
  validation:
    hostname: backend.test
    caCertificateRefs:
    - group: ""
      kind: ConfigMap
      name: ca
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: ca
data:
  ca.crt: |
{bundle}
"""


def key_block(ca: trustme.CA, label: str) -> tuple[str, list[str]]:
    """A PEM block with ``label`` around the body of a real key, and the body's lines."""
    body = [line for line in ca.private_key_pem.bytes().decode().splitlines() if not line.startswith("-----")]
    return "\n".join([f"-----BEGIN {label}-----", *body, f"-----END {label}-----"]) + "\n", body


def write_config(directory: Path, bundle: str) -> None:
    indented = "\n".join("    " + line for line in bundle.splitlines())
    (directory / "config.yaml").write_text(CONFIG.format(bundle=indented))


@asynccontextmanager
async def admin_serving(config_dir: Path):
    """A runtime serving ``config_dir`` with its admin on 127.0.0.1; yields the admin port."""
    async with serve_with_admin(config_dir) as (_runtime, port):
        yield port


async def get(port: int, path: str, host: str | None, method: str = "GET") -> tuple[int, bytes]:
    """One request over a raw socket, so the test controls the Host header exactly. ``None``:
    no Host header, sent as HTTP/1.0 (aiohttp itself answers 400 to HTTP/1.1 without Host)."""
    status, _, body = await call(port, path, host, method)
    return status, body


async def call(port: int, path: str, host: str | None = "127.0.0.1", method: str = "GET",
               headers: str = "") -> tuple[int, str, bytes]:
    """``get`` that also returns the response head."""
    if host is None:
        head = f"{method} {path} HTTP/1.0\r\n{headers}\r\n"
    else:
        head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{headers}\r\n"
    raw = await raw_exchange(port, head.encode())
    status_line, _, rest = raw.partition(b"\r\n")
    response_head, _, body = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), response_head.decode("latin-1").lower(), body


@pytest.mark.parametrize("label", KEY_LABELS)
async def test_config_dump_redacts_a_private_key_inside_a_ca_bundle(tmp_path, ca, label):
    """A ca.crt bundle that also holds a private key: the certificate is dumped, the key never is."""
    key, key_lines = key_block(ca, label)
    cert = ca.cert_pem.bytes().decode()
    bundle = cert + key + cert
    write_config(tmp_path, bundle)
    async with admin_serving(tmp_path) as port:
        status, body = await get(port, "/config_dump", f"127.0.0.1:{port}")
    assert status == 200
    text = body.decode()
    assert "PRIVATE KEY" not in text
    assert not [line for line in key_lines if line in text]
    assert text.count("[redacted private key]") == 1
    assert text.count("BEGIN CERTIFICATE") == 2  # the rest of the bundle is intact


async def test_config_dump_redacts_a_private_key_in_any_string_even_cut_short(tmp_path, ca):
    """A key pasted on one line into a header value, without its END line: redacted to the end."""
    write_config(tmp_path, ca.cert_pem.bytes().decode())
    _, key_lines = key_block(ca, "PRIVATE KEY")
    (tmp_path / "pasted.yaml").write_text(f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: pasted
spec:
  hostnames: [pasted.example]
  rules:
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set:
        - name: x-key
          value: "-----BEGIN PRIVATE KEY-----{''.join(key_lines)}"
    backendRefs:
    - group: gateway.envoyproxy.io
      kind: Backend
      name: tls-backend
""")
    async with admin_serving(tmp_path) as port:
        status, body = await get(port, "/config_dump", "localhost")
    assert status == 200
    text = body.decode()
    assert not [line for line in key_lines if line in text]
    pasted = json.loads(text)["config"]["listeners"][0]["virtual_hosts"][0]["routes"][0]
    assert pasted["request_headers"]["set"] == [["x-key", "[redacted private key]"]]


@pytest.mark.parametrize("host", [
    "127.0.0.1", "127.0.0.1:{port}", "10.1.2.3:19000", "localhost", "LocalHost:{port}", "[::1]", "[::1]:{port}",
])
async def test_admin_answers_a_host_that_is_an_ip_literal_or_localhost(tmp_path, ca, host):
    write_config(tmp_path, ca.cert_pem.bytes().decode())
    async with admin_serving(tmp_path) as port:
        assert await get(port, "/ready", host.format(port=port)) == (200, b"LIVE\n")


@pytest.mark.parametrize("host", [
    None, "", "attacker.example", "attacker.example:{port}", "localhost.attacker.example", "127.0.0.1.nip.io",
    "::1", "[::1", "[attacker.example]", "127.0.0.1:http", "localhost:{port}:1",
])
async def test_admin_refuses_any_other_host_dns_rebinding_guard(tmp_path, ca, host):
    write_config(tmp_path, ca.cert_pem.bytes().decode())
    async with admin_serving(tmp_path) as port:
        for path in ("/", "/ready", "/config_dump", "/clusters", "/server_info", "/stats/prometheus", "/logging",
                     "/absent"):
            status, body = await get(port, path, None if host is None else host.format(port=port))
            assert status == 403, (path, host)
            assert b"BEGIN" not in body and b"listeners" not in body


@pytest.fixture
def pyproxy_log_level():
    """Restore the pyproxy logger's level after a test that changes it through the admin."""
    logger = logging.getLogger("pyproxy")
    level = logger.level
    logger.setLevel(logging.INFO)
    yield logger
    logger.setLevel(level)


async def test_index_lists_every_endpoint_and_which_want_post(tmp_path, ca):
    write_config(tmp_path, ca.cert_pem.bytes().decode())
    async with admin_serving(tmp_path) as port:
        status, body = await get(port, "/", "127.0.0.1")
        assert await get(port, "/help", "127.0.0.1") == (status, body)
    assert status == 200
    lines = {line.split()[0]: line.split()[1] for line in body.decode().splitlines()[1:]}
    assert lines == {"/": "GET", "/ready": "GET", "/server_info": "GET", "/config_dump": "GET", "/clusters": "GET",
                     "/stats/prometheus": "GET", "/logging": "GET,", "/reopen_logs": "POST"}


async def test_server_info_reports_state_generation_and_files(tmp_path, ca):
    write_config(tmp_path, ca.cert_pem.bytes().decode())
    async with admin_serving(tmp_path) as port:
        status, body = await get(port, "/server_info", "localhost")
    assert status == 200
    info = json.loads(body)
    assert info.pop("uptime_current_epoch").endswith("s") and info.pop("uptime_all_epochs").endswith("s")
    assert info == {"version": "0.1.0", "state": "LIVE", "generation": 1,
                    "config_files": [str(tmp_path / "config.yaml")], "reloads": {"success": 0, "failure": 0},
                    "last_reload_error": None}


async def test_clusters_lists_each_destination_with_its_addresses(tmp_path, ca):
    """Envoy's /clusters text lines, and its ?format=json shape; no health check, so healthy."""
    write_config(tmp_path, ca.cert_pem.bytes().decode())
    async with admin_serving(tmp_path) as port:
        status, text = await get(port, "/clusters", "127.0.0.1")
        json_status, body = await get(port, "/clusters?format=json", "127.0.0.1")
    assert (status, json_status) == (200, 200)
    prefix = "backend/default/tls-backend::127.0.0.1:9443::"
    assert text.decode().splitlines() == [prefix + line for line in (
        "cx_active::0", "cx_connect_fail::0", "cx_total::0", "rq_active::0", "rq_error::0", "rq_total::0",
        "hostname::", "health_flags::healthy", "weight::1")]
    assert json.loads(body) == {"cluster_statuses": [{"name": "backend/default/tls-backend", "host_statuses": [{
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 9443}},
        "stats": [{"name": "cx_active", "value": 0, "type": "GAUGE"},
                  {"name": "cx_connect_fail", "value": 0, "type": "COUNTER"},
                  {"name": "cx_total", "value": 0, "type": "COUNTER"},
                  {"name": "rq_active", "value": 0, "type": "GAUGE"},
                  {"name": "rq_error", "value": 0, "type": "COUNTER"},
                  {"name": "rq_total", "value": 0, "type": "COUNTER"}],
        "health_status": {"eds_health_status": "HEALTHY"},
        "weight": 1,
    }]}]}


async def test_logging_post_sets_the_level_and_get_never_does(tmp_path, ca, pyproxy_log_level):
    write_config(tmp_path, ca.cert_pem.bytes().decode())
    async with admin_serving(tmp_path) as port:
        status, body = await get(port, "/logging", "127.0.0.1")
        assert status == 200 and body.decode().startswith("active loggers:\n")
        assert "  pyproxy: info\n" in body.decode()

        status, body = await get(port, "/logging?level=debug", "127.0.0.1", method="POST")
        assert status == 200 and "  pyproxy: debug\n" in body.decode() and "  pyproxy.server: debug\n" in body.decode()
        assert pyproxy_log_level.level == logging.DEBUG

        # a mutation through GET is refused, as Envoy refuses any method but POST on /logging
        assert await get(port, "/logging?level=error", "127.0.0.1") == (405, b"Method GET not allowed, POST required.\n")
        for bad in ("verbose", "", "trace"):
            status, body = await get(port, f"/logging?level={bad}", "127.0.0.1", method="POST")
            assert status == 400 and b"debug, info, warning, error" in body
        assert (await get(port, "/logging?paths=x:debug", "127.0.0.1", method="POST"))[0] == 400
        assert pyproxy_log_level.level == logging.DEBUG

        status, body = await get(port, "/logging?level=WARNING", "127.0.0.1", method="POST")
        assert status == 200 and pyproxy_log_level.level == logging.WARNING


async def test_reopen_logs_is_post_only(tmp_path, ca):
    write_config(tmp_path, ca.cert_pem.bytes().decode())
    async with admin_serving(tmp_path) as port:
        assert (await get(port, "/reopen_logs", "127.0.0.1"))[0] == 405
        assert await get(port, "/reopen_logs", "127.0.0.1", method="POST") == (200, b"OK\n")


async def test_stats_prometheus_speaks_text_and_openmetrics(tmp_path, ca):
    write_config(tmp_path, ca.cert_pem.bytes().decode())
    async with admin_serving(tmp_path) as port:
        status, head, body = await call(port, "/stats/prometheus")
        om_status, om_head, om_body = await call(port, "/stats/prometheus",
                                                 headers="Accept: application/openmetrics-text\r\n")
    assert status == 200 and "content-type: text/plain; version=0.0.4; charset=utf-8" in head
    families = {family.name: family for family in text_string_to_metric_families(body.decode())}
    assert families["envoy_server_live"].samples[0].value == 1
    assert families["envoy_cluster_upstream_rq_xx"].type == "unknown"  # Envoy's name kept: no _total added
    assert families["envoy_http_downstream_rq_time"].type == "histogram"
    assert om_status == 200 and "content-type: application/openmetrics-text" in om_head
    assert om_body.endswith(b"# EOF\n")


@pytest.mark.parametrize(("method", "path", "status", "allow", "body"), [
    ("GET", "/absent", 404, None, b"404: Not Found"),
    ("POST", "/absent", 404, None, b"404: Not Found"),
    ("GET", "/ready/", 404, None, b"404: Not Found"),
    ("POST", "/ready", 405, "GET,HEAD", b"405: Method Not Allowed"),
    ("OPTIONS", "/stats/prometheus", 405, "GET,HEAD", b"405: Method Not Allowed"),
    ("PUT", "/logging", 405, "GET,HEAD,POST", b"405: Method Not Allowed"),
    ("GET", "/reopen_logs", 405, "POST", b"405: Method Not Allowed"),
    ("DELETE", "/reopen_logs", 405, "POST", b"405: Method Not Allowed"),
    ("GET", "/re%61dy", 200, None, b"LIVE\n"),  # the path matched percent-decoded, as aiohttp did
])
async def test_unknown_paths_are_404_and_other_methods_405_with_allow(tmp_path, ca, method, path, status, allow,
                                                                      body):
    write_config(tmp_path, ca.cert_pem.bytes().decode())
    async with admin_serving(tmp_path) as port:
        answer = await call(port, path, method=method)
    assert (answer[0], answer[2]) == (status, body)
    assert "content-type: text/plain; charset=utf-8" in answer[1]
    assert (f"allow: {allow.lower()}" in answer[1]) if allow else ("allow:" not in answer[1])


async def test_head_is_get_without_the_body_and_keep_alive_serves_many_requests(tmp_path, ca):
    write_config(tmp_path, ca.cert_pem.bytes().decode())
    async with admin_serving(tmp_path) as port:
        wire = await Wire.open(port)
        await wire.send(b"HEAD /clusters?format=json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = await wire.read_response(head=True)
        await wire.send(b"GET /clusters?format=json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        get = await wire.read_response()
        await wire.send(b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        last = await wire.read_response()
        assert await wire.closed()
    assert (head.status, head.body, head.header("content-length")) == (200, b"", str(len(get.body)))
    assert head.header("content-type") == get.header("content-type") == "application/json; charset=utf-8"
    assert json.loads(get.body)["cluster_statuses"]
    assert (last.status, last.body, last.header("connection")) == (200, b"LIVE\n", "close")


async def test_hostile_heads_and_bodies_are_refused_and_closed(tmp_path, ca):
    write_config(tmp_path, ca.cert_pem.bytes().decode())
    async with admin_serving(tmp_path) as port:
        huge_header = await call(port, "/ready", headers="X-Long: " + "a" * (64 * 1024) + "\r\n")
        huge_body = await call(port, "/reopen_logs", method="POST", headers="Content-Length: 1000000\r\n")
        garbage = await raw_exchange(port, b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n")
    assert huge_header[0] == 431 and "connection: close" in huge_header[1]
    assert huge_body[0] == 413 and "connection: close" in huge_body[1]
    assert garbage.startswith(b"HTTP/1.1 400 ") and garbage.endswith(b"\r\n\r\n400: Bad Request")


async def test_stopping_the_admin_closes_its_idle_connections(tmp_path, ca):
    write_config(tmp_path, ca.cert_pem.bytes().decode())
    async with admin_serving(tmp_path) as port:
        wire = await Wire.open(port)
        await wire.send(b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert (await wire.read_response()).status == 200
    assert await wire.closed()


def fetch(port: int, path: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return resp.status, resp.read()


async def test_a_serving_process_never_imports_aiohttp(tmp_path, ca):
    """aiohttp costs about 11 MiB of RSS: the CLI serves, admin included, with it unimportable."""
    (tmp_path / "config").mkdir()
    write_config(tmp_path / "config", ca.cert_pem.bytes().decode())
    proxy = start_proxy("--config", str(tmp_path / "config"), "--access-log", "off", env=shim(tmp_path, "aiohttp"))
    try:
        await asyncio.to_thread(proxy.wait_ready)
        for path in ("/", "/server_info", "/config_dump", "/clusters?format=json", "/stats/prometheus", "/logging"):
            assert (await asyncio.to_thread(fetch, proxy.admin_port, path))[0] == 200, path
    finally:
        code, _, err = proxy.stop()
    assert code == 0, err
    assert "Traceback" not in err

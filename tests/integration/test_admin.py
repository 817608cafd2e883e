"""The admin interface over real HTTP: what /config_dump may reveal and whom the admin answers."""
from __future__ import annotations

import json
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trustme

from pyproxy import admin
from pyproxy.runtime import Runtime, Settings
from tests.helpers.http import raw_exchange

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
    runtime = Runtime(Settings(config_paths=(str(config_dir),), listen=("127.0.0.1", 0), access_log="off"))
    runner = await admin.start(runtime, "127.0.0.1", 0)
    try:
        await runtime.start()
        yield runner.addresses[0][1]
    finally:
        await runtime.stop()
        await runner.cleanup()


async def get(port: int, path: str, host: str | None) -> tuple[int, bytes]:
    """One request over a raw socket, so the test controls the Host header exactly. ``None``:
    no Host header, sent as HTTP/1.0 (aiohttp itself answers 400 to HTTP/1.1 without Host)."""
    if host is None:
        head = f"GET {path} HTTP/1.0\r\n\r\n"
    else:
        head = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    raw = await raw_exchange(port, head.encode())
    status_line, _, rest = raw.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


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
        for path in ("/ready", "/config_dump", "/absent"):
            status, body = await get(port, path, None if host is None else host.format(port=port))
            assert status == 403, (path, host)
            assert b"BEGIN" not in body and b"listeners" not in body

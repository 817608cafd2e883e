"""The seed example, byte for byte, served by the real CLI against a local HTTPS upstream
named www.httpbin.org: DNS through --resolver (a loopback responder), trust through
SSL_CERT_FILE (the "System" store), the upstream on 127.0.0.2:443."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.conftest import server_context
from tests.helpers.dnsserver import DnsServer
from tests.helpers.http import Client, Upstream
from tests.helpers.proc import start_proxy

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "config" / "seed-example.yaml"
SHARED_SEED = ROOT.parent / "shared" / "seed-example.yaml"


def test_repository_seed_is_the_shared_seed():
    if not SHARED_SEED.exists():
        pytest.skip("../shared/seed-example.yaml is not beside this checkout")
    assert SEED.read_bytes() == SHARED_SEED.read_bytes()


@pytest.fixture
async def httpbin(ca):
    """A stand-in for www.httpbin.org on 127.0.0.2:443 with a certificate from the test CA."""
    try:
        up = await Upstream().start(host="127.0.0.2", port=443, ssl_context=server_context(ca, "www.httpbin.org"))
    except OSError as exc:  # not root, or the port is taken
        pytest.skip(f"cannot listen on 127.0.0.2:443: {exc}")
    yield up
    await up.stop()


async def test_seed_example_served_end_to_end(ca, httpbin, tmp_path):
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with DnsServer() as dns:
        dns.set("www.httpbin.org", ["127.0.0.2"])
        proxy = start_proxy("--config", str(SEED), "--resolver", dns.resolver_arg,
                            env={"SSL_CERT_FILE": str(ca_file), "SSL_CERT_DIR": str(tmp_path)})
        try:
            await asyncio.to_thread(proxy.wait_ready)
            client = await Client.connect(proxy.listen_port)
            resp = await client.request("GET", "/get?x=1", host="www.example.com")
            assert resp.status == 200, resp.body
            echoed = resp.json()
            headers = dict(echoed["headers"])
            assert echoed["path"] == "/get?x=1"
            assert headers["host"] == "www.httpbin.org"
            assert headers["x-forwarded-host"] == "www.example.com"
            assert echoed["sni"] == "www.httpbin.org"
            # a second request reuses the pooled TLS connection
            assert (await client.request("GET", "/anything", host="www.example.com")).status == 200
            # other hosts have no route
            assert (await client.request("GET", "/get", host="other.example.com")).status == 404
            await client.close()
            assert dns.queries("www.httpbin.org", "A") >= 1
        finally:
            code, out, err = proxy.stop()
    assert code == 0, err
    log_lines = [line for line in out.splitlines() if line.startswith("{")]
    assert len(log_lines) == 3
    assert '"response_code":200' in log_lines[0] and '"upstream_cluster":"backend/default/https-backend"' in log_lines[0]


async def test_seed_example_rejects_untrusted_upstream(ca, httpbin, tmp_path):
    """Without the test CA in the trust store the certificate fails verification: 503 with
    Envoy's body."""
    async with DnsServer() as dns:
        dns.set("www.httpbin.org", ["127.0.0.2"])
        proxy = start_proxy("--config", str(SEED), "--resolver", dns.resolver_arg,
                            env={"SSL_CERT_FILE": str(os.devnull), "SSL_CERT_DIR": str(tmp_path)})
        try:
            await asyncio.to_thread(proxy.wait_ready)
            client = await Client.connect(proxy.listen_port)
            resp = await client.request("GET", "/get", host="www.example.com")
            assert resp.status == 503
            assert resp.body.startswith(b"upstream connect error or disconnect/reset before headers. "
                                        b"reset reason: connection failure, transport failure reason: TLS_error:")
            await client.close()
        finally:
            proxy.stop()
    assert httpbin.seen == []

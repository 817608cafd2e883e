"""Forwarding to a TLS upstream through the proxy: SNI, chain and name verification, and
Envoy's 503 bodies when verification fails."""
from __future__ import annotations

import trustme

from pyproxy import ir
from tests.helpers.http import Upstream
from tests.helpers.proxy import proxy_to
from tests.helpers.wire import Wire

FAILURE_PREFIX = (b"upstream connect error or disconnect/reset before headers. reset reason: connection failure, "
                  b"transport failure reason: TLS_error:")


def pem(ca: trustme.CA) -> str:
    return ca.cert_pem.bytes().decode()


async def get(port: int, path: bytes = b"/tls") -> object:
    wire = await Wire.open(port)
    await wire.send(b"GET %s HTTP/1.1\r\nHost: front.example\r\n\r\n" % path)
    resp = await wire.read_response()
    await wire.send(b"GET %s HTTP/1.1\r\nHost: front.example\r\n\r\n" % path)
    again = await wire.read_response()
    await wire.close()
    assert again.status == resp.status
    return resp


async def test_verified_upstream_sees_sni(tls_upstream: Upstream, ca):
    async with proxy_to(tls_upstream.port, tls=ir.UpstreamTLS(sni="backend.test", ca=pem(ca))) as (rt, port):
        resp = await get(port)
        assert resp.status == 200
        assert resp.json()["sni"] == "backend.test"
        assert dict(resp.json()["headers"])["host"] == "front.example"
        assert rt.pool.connects == 1  # TLS connections are pooled too
    assert [s.sni for s in tls_upstream.seen] == ["backend.test", "backend.test"]


async def test_subject_alt_name_overrides_sni_check(tls_upstream: Upstream, ca):
    tls = ir.UpstreamTLS(sni="other.test", ca=pem(ca),
                         subject_alt_names=(ir.SubjectAltName("Hostname", "backend.test"),))
    async with proxy_to(tls_upstream.port, tls=tls) as (rt, port):
        resp = await get(port)
        assert resp.status == 200 and resp.json()["sni"] == "other.test"


async def test_wrong_name_is_503(tls_upstream: Upstream, ca):
    async with proxy_to(tls_upstream.port, tls=ir.UpstreamTLS(sni="wrong.test", ca=pem(ca))) as (rt, port):
        resp = await get(port)
        assert resp.status == 503
        assert resp.body == FAILURE_PREFIX + (b"|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:"
                                              b"verify cert failed: verify SAN list:TLS_error_end")
    assert tls_upstream.seen == []


async def test_untrusted_ca_is_503(tls_upstream: Upstream):
    other = trustme.CA()
    async with proxy_to(tls_upstream.port, tls=ir.UpstreamTLS(sni="backend.test", ca=pem(other))) as (rt, port):
        resp = await get(port)
        assert resp.status == 503
        assert resp.body.startswith(FAILURE_PREFIX + b"|268435581:SSL routines:OPENSSL_internal:"
                                                     b"CERTIFICATE_VERIFY_FAILED:verify cert failed: X509_verify_cert")
    assert tls_upstream.seen == []


async def test_plaintext_upstream_for_tls_destination_is_503(upstream: Upstream, ca):
    async with proxy_to(upstream.port, tls=ir.UpstreamTLS(sni="backend.test", ca=pem(ca))) as (rt, port):
        resp = await get(port)
        assert resp.status == 503 and resp.body.startswith(FAILURE_PREFIX)

"""Forwarding to a TLS upstream through the proxy: SNI, chain and name verification, TLS
versions, client certificates (mTLS), insecureSkipVerify, and Envoy's 503 bodies when a
handshake or verification fails."""
from __future__ import annotations

import logging
import ssl
import warnings
from contextlib import asynccontextmanager

import pytest
import trustme

from pyproxy import ir
from tests.conftest import destination, forward, server_context
from tests.helpers.http import Upstream
from tests.helpers.proxy import proxy_routes, proxy_to
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


# ------------------------------------------------------------------ versions, client certificates, no verification


def tls_server(ca: trustme.CA, minimum: ssl.TLSVersion | None = None, maximum: ssl.TLSVersion | None = None,
               client_ca: trustme.CA | None = None) -> ssl.SSLContext:
    """A server context for ``backend.test``; with ``client_ca``, a client certificate it
    issued is required (mTLS)."""
    ctx = server_context(ca, "backend.test")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1, on purpose
        if minimum is not None:
            ctx.minimum_version = minimum
        if maximum is not None:
            ctx.maximum_version = maximum
    if maximum is not None and maximum < ssl.TLSVersion.TLSv1_2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = maximum  # (the default context's minimum is TLS 1.2)
        ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:@SECLEVEL=0")
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=client_ca.cert_pem.bytes().decode())
    return ctx


@asynccontextmanager
async def upstream_with(ctx: ssl.SSLContext):
    up = await Upstream().start(ssl_context=ctx)
    try:
        yield up
    finally:
        await up.stop()


@pytest.mark.parametrize("server, tls, version", [
    ({}, {"max_version": "1.2"}, "TLSv1.2"),
    ({"maximum": ssl.TLSVersion.TLSv1_2}, {}, "TLSv1.2"),
    ({}, {}, "TLSv1.3"),
    ({"maximum": ssl.TLSVersion.TLSv1_1}, {"min_version": "1.1"}, "TLSv1.1"),
    ({"maximum": ssl.TLSVersion.TLSv1_2}, {"min_version": "1.3"}, None),
    ({"minimum": ssl.TLSVersion.TLSv1_3}, {"max_version": "1.2"}, None),
    ({"maximum": ssl.TLSVersion.TLSv1_1}, {}, None),  # below the default minimum, 1.2
], ids=["max-1.2", "server-1.2", "default-1.3", "min-1.1", "min-1.3-vs-1.2", "max-1.2-vs-1.3", "default-vs-1.1"])
async def test_tls_versions(ca, server, tls, version):
    async with upstream_with(tls_server(ca, **server)) as up:
        settings = ir.UpstreamTLS(sni="backend.test", ca=pem(ca), **tls)
        async with proxy_to(up.port, tls=settings) as (rt, port):
            resp = await get(port)
    if version is None:
        assert resp.status == 503 and resp.body.startswith(FAILURE_PREFIX)
        assert up.seen == []
    else:
        assert resp.status == 200
        assert {seen.tls_version for seen in up.seen} == {version}


def client_certificate(client_ca: trustme.CA) -> ir.Certificate:
    leaf = client_ca.issue_cert("client.test")
    chain = "".join(blob.bytes().decode() for blob in leaf.cert_chain_pems)
    return ir.Certificate("default/client-cert", chain, leaf.private_key_pem.bytes().decode())


@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"])
async def test_mutual_tls_presents_the_client_certificate(ca, maximum):
    client_ca = trustme.CA()
    async with upstream_with(tls_server(ca, maximum=maximum, client_ca=client_ca)) as up:
        with_cert = ir.UpstreamTLS(sni="backend.test", ca=pem(ca), client_certificate=client_certificate(client_ca))
        async with proxy_to(up.port, tls=with_cert) as (rt, port):
            resp = await get(port)
        assert resp.status == 200
        assert [dict(seen.client_cert["subjectAltName"]) for seen in up.seen] == [{"DNS": "client.test"}] * 2

        async with proxy_to(up.port, tls=ir.UpstreamTLS(sni="backend.test", ca=pem(ca))) as (rt, port):
            refused = await get(port)
        # TLS 1.2 fails the handshake; TLS 1.3 lets the client finish it and then refuses
        # the connection (Envoy sees the same: a connection failure, or a termination)
        assert refused.status == 503
        assert refused.body.startswith(FAILURE_PREFIX) or refused.body == (
            b"upstream connect error or disconnect/reset before headers. reset reason: connection termination")
        assert len(up.seen) == 2


async def test_insecure_skip_verify_is_logged_once_per_destination(caplog):
    """Any certificate is accepted (here one from an unknown CA, for another name); the
    compile logs a warning for the destination, once however many routes use it."""
    caplog.set_level(logging.WARNING, logger="pyproxy.compile")
    async with upstream_with(tls_server(trustme.CA())) as up:
        dest = destination(up.port, tls=ir.UpstreamTLS(sni="other.test", insecure_skip_verify=True))
        routes = (forward("r/a", dest, match=ir.Match(ir.PathMatch("PathPrefix", "/a"))), forward("r/b", dest))
        async with proxy_routes(*routes) as (rt, port):
            assert (await get(port, b"/a/x")).status == 200
            assert (await get(port, b"/b")).status == 200
    warned = [r for r in caplog.records if r.name == "pyproxy.compile" and r.levelno == logging.WARNING]
    assert [r.getMessage().split(":")[0] for r in warned] == ["destination backend/default/test"]
    assert "NOT verified" in warned[0].getMessage()

"""A listener's TLS options (ClientTrafficPolicy ``tls``) with real clients: Python's ssl
module, ``openssl s_client`` and curl against an HTTPS listener with a trustme certificate.
Versions outside minVersion..maxVersion and ciphers outside the list fail the handshake;
ALPN without h2 means HTTP/1.1 (and no HTTP/2 at all over TLS); a reload changes what new
handshakes allow on the same socket; and each HTTPS listener of a shared port applies its own
client settings to the connections its server name selects."""
from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import warnings
from contextlib import asynccontextmanager

import pytest
import trustme

from pyproxy import ir
from pyproxy.translate.status import Result
from tests.conftest import destination, forward, serve_ir
from tests.dataplane.test_misdirected import certificate
from tests.helpers.http import Client, Upstream
from tests.helpers.wire import Wire

NAME = "app.example"


def https_config(ca: trustme.CA, upstream_port: int, **tls_options) -> ir.Config:
    route = forward("httproute/default/app/rule/0/match/0", destination(upstream_port))
    return ir.Config((ir.Listener(
        name="gateway/default/gw/https", address="127.0.0.1", port=0, protocol="HTTPS",
        virtual_hosts=(ir.VirtualHost(name="vhost/app", hostname="*", routes=(route,)),),
        tls=ir.ListenerTLS((certificate(ca, (NAME,), "app"),), **tls_options),
    ),))


@asynccontextmanager
async def https(ca, upstream_port, **tls_options):
    async with serve_ir(https_config(ca, upstream_port, **tls_options)) as rt:
        yield rt.ports[("127.0.0.1", 0)]


def client_context(ca: trustme.CA, minimum=None, maximum=None, ciphers: str | None = None,
                   alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1 is, and meant
        if minimum is not None:
            ctx.minimum_version = minimum
        if maximum is not None:
            ctx.maximum_version = maximum
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    return ctx


async def handshake(port: int, ctx: ssl.SSLContext) -> ssl.SSLObject:
    """Connect and complete the handshake; raises ssl.SSLError (or a reset) when refused."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=NAME), 5)
    ssl_object = writer.get_extra_info("ssl_object")
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 2)
    except (TimeoutError, ConnectionError, ssl.SSLError):
        pass
    return ssl_object


async def get(port: int, ctx: ssl.SSLContext) -> int:
    """The status of a GET over a connection made with ``ctx``."""
    client = await Client.connect(port, ssl_context=ctx, server_hostname=NAME)
    status = (await client.request("GET", "/")).status
    await client.close()
    return status


async def refused(port: int, ctx: ssl.SSLContext) -> bool:
    try:
        await handshake(port, ctx)
    except (ssl.SSLError, ConnectionError):
        return True
    return False


async def test_default_versions_are_tls12_and_tls13(ca, upstream: Upstream):
    async with https(ca, upstream.port) as port:
        assert (await handshake(port, client_context(ca))).version() == "TLSv1.3"
        tls12 = client_context(ca, maximum=ssl.TLSVersion.TLSv1_2)
        assert (await handshake(port, tls12)).version() == "TLSv1.2"
        assert await refused(port, client_context(ca, minimum=ssl.TLSVersion.TLSv1,
                                                  maximum=ssl.TLSVersion.TLSv1_1, ciphers="ALL:@SECLEVEL=0"))


async def test_min_version_refuses_older_clients(ca, upstream: Upstream):
    async with https(ca, upstream.port, min_version="1.3") as port:
        assert await refused(port, client_context(ca, maximum=ssl.TLSVersion.TLSv1_2))
        assert (await handshake(port, client_context(ca))).version() == "TLSv1.3"


async def test_max_version_caps_the_version(ca, upstream: Upstream):
    async with https(ca, upstream.port, max_version="1.2") as port:
        assert (await handshake(port, client_context(ca))).version() == "TLSv1.2"
        assert await refused(port, client_context(ca, minimum=ssl.TLSVersion.TLSv1_3))


async def test_min_version_10_lets_a_tls10_client_in(ca, upstream: Upstream):
    """TLS 1.0 needs SHA-1 signatures and CBC suites, both off by default in OpenSSL 3: a
    listener that allows it gets them."""
    old = client_context(ca, minimum=ssl.TLSVersion.TLSv1, maximum=ssl.TLSVersion.TLSv1, ciphers="ALL:@SECLEVEL=0")
    async with https(ca, upstream.port, min_version="1.0") as port:
        assert (await handshake(port, old)).version() == "TLSv1"
        assert await get(port, old) == 200


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
async def test_openssl_s_client_below_min_version_is_refused(ca, upstream: Upstream, tmp_path):
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem.bytes())

    def s_client(port: int, version: str) -> subprocess.CompletedProcess:
        return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", NAME,
                               "-CAfile", str(ca_file), version], input="", capture_output=True, text=True, timeout=30)

    async with https(ca, upstream.port, min_version="1.3") as port:
        old = await asyncio.to_thread(s_client, port, "-tls1_2")
        new = await asyncio.to_thread(s_client, port, "-tls1_3")
    # refused: the handshake never completes (the proxy's transport closes without an alert)
    assert old.returncode != 0 and "New, (NONE), Cipher is (NONE)" in old.stdout, old.stdout + old.stderr
    assert new.returncode == 0 and "New, TLSv1.3, Cipher is" in new.stdout, new.stderr


async def test_ciphers_limit_the_tls12_suites(ca, upstream: Upstream):
    """The certificate is ECDSA (trustme's), so ECDSA suites; TLS 1.3 suites are OpenSSL's."""
    chosen, other = "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-GCM-SHA256"
    tls12 = ssl.TLSVersion.TLSv1_2
    async with https(ca, upstream.port, ciphers=(chosen,)) as port:
        got = await handshake(port, client_context(ca, maximum=tls12, ciphers=f"{other}:{chosen}"))
        assert got.cipher()[0] == chosen
        assert await refused(port, client_context(ca, maximum=tls12, ciphers=other))
        assert (await handshake(port, client_context(ca))).version() == "TLSv1.3"
    async with https(ca, upstream.port) as port:  # by default the other suite is fine
        assert (await handshake(port, client_context(ca, maximum=tls12, ciphers=other))).cipher()[0] == other


async def test_alpn_without_h2_means_http11(ca, upstream: Upstream):
    async with https(ca, upstream.port, alpn=("http/1.1",)) as port:
        got = await handshake(port, client_context(ca, alpn=["h2", "http/1.1"]))
        assert got.selected_alpn_protocol() == "http/1.1"
        # the HTTP/2 preface without ALPN is not taken as HTTP/2 either: it is no HTTP/1.1 request
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context(ca),
                                                       server_hostname=NAME)
        wire = Wire(reader, writer, 5)
        await wire.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        assert (await wire.read_response()).status == 400
        await wire.close()
    async with https(ca, upstream.port) as port:
        assert (await handshake(port, client_context(ca, alpn=["h2", "http/1.1"]))).selected_alpn_protocol() == "h2"


async def test_empty_alpn_offers_none(ca, upstream: Upstream):
    async with https(ca, upstream.port, alpn=()) as port:
        ctx = client_context(ca, alpn=["h2", "http/1.1"])
        assert (await handshake(port, ctx)).selected_alpn_protocol() is None
        assert await get(port, ctx) == 200


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_http2_gets_http11_when_alpn_has_no_h2(ca, upstream: Upstream, tmp_path):
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem.bytes())

    def curl(port: int) -> str:
        done = subprocess.run(["curl", "-sS", "--max-time", "20", "--http2", "--cacert", str(ca_file), "--resolve",
                               f"{NAME}:{port}:127.0.0.1", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
                               f"https://{NAME}:{port}/"], capture_output=True, text=True, timeout=30)
        return done.stdout + done.stderr

    async with https(ca, upstream.port, alpn=("http/1.1",)) as port:
        assert await asyncio.to_thread(curl, port) == "1.1 200"
    async with https(ca, upstream.port) as port:
        assert await asyncio.to_thread(curl, port) == "2 200"


async def test_a_reload_changes_the_versions_of_new_handshakes_on_the_same_socket(ca, upstream: Upstream):
    tls12 = client_context(ca, maximum=ssl.TLSVersion.TLSv1_2)
    async with serve_ir(https_config(ca, upstream.port)) as rt:
        port = rt.ports[("127.0.0.1", 0)]
        assert (await handshake(port, tls12)).version() == "TLSv1.2"
        await rt.serve(Result(https_config(ca, upstream.port, min_version="1.3"), ()))
        assert rt.ports[("127.0.0.1", 0)] == port
        assert await refused(port, tls12)
        await rt.serve(Result(https_config(ca, upstream.port), ()))
        assert (await handshake(port, tls12)).version() == "TLSv1.2"


async def test_each_https_listener_of_a_port_applies_its_own_client_settings(ca, upstream: Upstream):
    """The TLS server name selects the listener whose settings a connection takes (Envoy's
    filter chain per HTTPS listener): underscores allowed on one, rejected on the other."""
    route = forward("httproute/default/app/rule/0/match/0", destination(upstream.port))
    listeners = tuple(ir.Listener(
        name=f"gateway/default/gw/{name}", address="127.0.0.1", port=0, protocol="HTTPS", hostname=host,
        virtual_hosts=(ir.VirtualHost(name=f"vhost/{name}", hostname=host, routes=(route,)),),
        tls=ir.ListenerTLS((certificate(ca, (host,), name),)), client=settings,
    ) for name, host, settings in (
        ("strict", "strict.example", ir.ClientSettings()),
        ("lenient", "lenient.example", ir.ClientSettings(headers_with_underscores="Allow")),
    ))
    ctx = client_context(ca)
    async with serve_ir(ir.Config(listeners)) as rt:
        port = rt.ports[("127.0.0.1", 0)]
        statuses = {}
        for host in ("strict.example", "lenient.example"):
            client = await Client.connect(port, ssl_context=ctx, server_hostname=host)
            statuses[host] = (await client.request("GET", "/", {"X_Token": "1"}, host=host)).status
            await client.close()
    assert statuses == {"strict.example": 400, "lenient.example": 200}
    assert [dict(s.headers).get("x_token") for s in upstream.seen] == ["1"]

"""421 Misdirected Request on an HTTPS listener group: several Gateway listeners share one
port, TLS picks a listener by SNI, HTTP picks one by Host; when they differ the answer is 421
(404 when the Host matches no listener at all). The matrix is the Gateway API conformance test
HTTPRouteHTTPSListenerDetectMisdirectedRequests (names moved to ``.example``; sent over
HTTP/1.1 on TLS with the same SNI/Host pairs)."""
from __future__ import annotations

import ssl
from contextlib import asynccontextmanager

import pytest
import trustme

from pyproxy import ir
from tests.conftest import destination, forward, serve_ir
from tests.helpers.http import Client
from tests.helpers.recorder import response

pytest_plugins = ["tests.helpers.recorder_fixture"]  # the ``recorder`` fixture

PATH = "/detect-misdirected-requests"

# conformance name -> ours: example.org -> first.example, second-example.org -> second.example,
# *.wildcard.org -> *.wildcard.example, fourth-example.wildcard.org -> fourth.wildcard.example
FIRST, SECOND, UNKNOWN = "first.example", "second.example", "unknown.example"
THIRD, FOURTH, FIFTH = "third.wildcard.example", "fourth.wildcard.example", "fifth.wildcard.example"

# (listener name, listener hostname, route hostname (vhost), certificate names)
LISTENERS = [
    ("https", None, FIRST, (FIRST,)),
    ("https-with-hostname", SECOND, SECOND, (SECOND,)),
    ("https-with-wildcard-hostname", "*.wildcard.example", "*.wildcard.example", ("*.wildcard.example",)),
    ("https-with-hostname-matching-wildcard", FOURTH, FOURTH, (FOURTH,)),
]


def certificate(ca: trustme.CA, names: tuple[str, ...], name: str) -> ir.Certificate:
    leaf = ca.issue_cert(*names)
    chain = "".join(blob.bytes().decode() for blob in leaf.cert_chain_pems)
    return ir.Certificate(f"secret/default/{name}", chain, leaf.private_key_pem.bytes().decode())


def listener_group(ca: trustme.CA, upstream_port: int, which=LISTENERS, protocol: str = "HTTPS") -> ir.Config:
    """One listener per entry, all on 127.0.0.1 port 0 (one socket). Each route answers with
    an ``x-listener`` header naming its listener."""
    dest = destination(upstream_port)
    listeners = []
    for name, hostname, route_host, cert_names in which:
        route = forward(f"httproute/default/{name}/rule/0/match/0", dest,
                        match=ir.Match(ir.PathMatch("PathPrefix", PATH)),
                        response_headers=ir.HeaderMutation(set=(("x-listener", name),)))
        listeners.append(ir.Listener(
            name=f"gateway/default/same-namespace-with-https-listener/{name}",
            address="127.0.0.1", port=0, protocol=protocol, hostname=hostname,
            virtual_hosts=(ir.VirtualHost(name=f"vhost/{name}", hostname=route_host, routes=(route,)),),
            tls=ir.ListenerTLS((certificate(ca, cert_names, name),)) if protocol == "HTTPS" else None,
        ))
    return ir.Config(tuple(listeners))


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    """Trusts the test CA; the SNI is chosen per test and may name no certificate, so the
    name check is off (the chain is still verified)."""
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ctx.check_hostname = False
    return ctx


@asynccontextmanager
async def group(ca, upstream_port, which=LISTENERS):
    async with serve_ir(listener_group(ca, upstream_port, which)) as rt:
        yield rt.ports[("127.0.0.1", 0)]


async def connect(ca, port: int, sni: str | None) -> Client:
    """``sni`` None: no server name at all (an IP literal is never sent as SNI)."""
    return await Client.connect(port, ssl_context=client_context(ca), server_hostname=sni or "127.0.0.1")


# (SNI, Host, status, listener that answers)
MATRIX = [
    (FIRST, FIRST, 200, "https"),
    (FIRST, SECOND, 421, None),
    (FIRST, UNKNOWN, 404, None),
    (SECOND, SECOND, 200, "https-with-hostname"),
    (SECOND, FIRST, 421, None),
    (SECOND, UNKNOWN, 421, None),
    (THIRD, THIRD, 200, "https-with-wildcard-hostname"),
    (THIRD, FIFTH, 200, "https-with-wildcard-hostname"),
    (THIRD, FOURTH, 421, None),
    (THIRD, SECOND, 421, None),
    (THIRD, UNKNOWN, 421, None),
    (FOURTH, FOURTH, 200, "https-with-hostname-matching-wildcard"),
    (FOURTH, FIFTH, 421, None),
    (UNKNOWN, FIRST, 200, "https"),
    (UNKNOWN, UNKNOWN, 404, None),
]


@pytest.mark.parametrize("sni, host, status, answered_by", MATRIX,
                         ids=[f"{i}-sni={s}-host={h}" for i, (s, h, _, _) in enumerate(MATRIX)])
async def test_conformance_matrix(ca, recorder, sni, host, status, answered_by):
    up = await recorder(response(200, b"backend"))
    async with group(ca, up.port) as port:
        client = await connect(ca, port, sni)
        resp = await client.request("GET", PATH, host=host)
        await client.close()
    assert resp.status == status
    assert resp.header("x-listener") == answered_by
    assert len(up.requests) == (1 if status == 200 else 0)  # a 421 or 404 is never forwarded
    if status == 200:
        assert up.requests[0].header("host") == host


@pytest.mark.parametrize("sni, host, answered_by", [
    (SECOND, "second.example:443", "https-with-hostname"),
    (SECOND, "SECOND.Example", "https-with-hostname"),
    (SECOND, "second.example.", "https-with-hostname"),
    ("Second.EXAMPLE", SECOND, "https-with-hostname"),
    ("FOURTH.wildcard.example", "fourth.WILDCARD.example:8443", "https-with-hostname-matching-wildcard"),
    (THIRD.upper(), FIFTH, "https-with-wildcard-hostname"),
])
async def test_host_and_sni_compared_as_names(ca, recorder, sni, host, answered_by):
    """Case, a port and a trailing dot in Host, and the case of the SNI, do not make the
    listeners differ."""
    up = await recorder(response(200, b"backend"))
    async with group(ca, up.port) as port:
        client = await connect(ca, port, sni)
        resp = await client.request("GET", PATH, host=host)
        await client.close()
    assert (resp.status, resp.header("x-listener")) == (200, answered_by)


@pytest.mark.parametrize("host, answered_by", [
    (SECOND, "https-with-hostname"),
    (FIRST, "https"),
    (FOURTH, "https-with-hostname-matching-wildcard"),
])
async def test_without_sni_the_host_decides(ca, recorder, host, answered_by):
    up = await recorder(response(200, b"backend"))
    async with group(ca, up.port) as port:
        client = await connect(ca, port, None)
        resp = await client.request("GET", PATH, host=host)
        await client.close()
    assert (resp.status, resp.header("x-listener")) == (200, answered_by)


async def test_each_request_on_a_connection_is_checked(ca, recorder):
    up = await recorder(response(200, b"backend"))
    async with group(ca, up.port) as port:
        client = await connect(ca, port, SECOND)
        statuses = []
        for host in (SECOND, FIRST, SECOND, FOURTH, SECOND):
            resp = await client.request("GET", PATH, host=host)
            statuses.append(resp.status)
        await client.close()
    assert statuses == [200, 421, 200, 421, 200]
    assert len(up.requests) == 3


async def test_host_matching_no_listener_is_404(ca, recorder):
    """Without a listener lacking a hostname, a Host no listener covers is 404 (not 421),
    whatever the SNI."""
    up = await recorder(response(200, b"backend"))
    async with group(ca, up.port, LISTENERS[1:]) as port:
        for sni in (SECOND, THIRD, UNKNOWN):
            client = await connect(ca, port, sni)
            resp = await client.request("GET", PATH, host=UNKNOWN)
            await client.close()
            assert resp.status == 404, sni
        client = await connect(ca, port, SECOND)
        assert (await client.request("GET", PATH, host=THIRD)).status == 421
        assert (await client.request("GET", PATH, host=SECOND)).status == 200
        await client.close()


async def test_sni_selects_the_listener_certificate(ca, recorder):
    """The certificate served is the one of the listener the SNI names (the default, the
    first listener's, for any other name)."""
    up = await recorder(response(200, b"backend"))
    expected = {SECOND: SECOND, FOURTH: FOURTH, THIRD: "*.wildcard.example", UNKNOWN: FIRST}
    async with group(ca, up.port) as port:
        for sni, cert_name in expected.items():
            client = await connect(ca, port, sni)
            peer = client.writer.get_extra_info("ssl_object").getpeercert()
            await client.close()
            assert [v for k, v in peer["subjectAltName"] if k == "DNS"] == [cert_name], sni


async def test_plain_http_listener_group_never_answers_421(recorder, ca):
    up = await recorder(response(200, b"backend"))
    config = listener_group(ca, up.port, LISTENERS, protocol="HTTP")
    async with serve_ir(config) as rt:
        client = await Client.connect(rt.ports[("127.0.0.1", 0)])
        got = []
        for host in (SECOND, FIRST, FIFTH, FOURTH, UNKNOWN):
            resp = await client.request("GET", PATH, host=host)
            got.append((resp.status, resp.header("x-listener")))
        await client.close()
    assert got == [(200, "https-with-hostname"), (200, "https"), (200, "https-with-wildcard-hostname"),
                   (200, "https-with-hostname-matching-wildcard"), (404, None)]

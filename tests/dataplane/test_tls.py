"""TLS contexts, peer verification and failure reasons, over real handshakes on 127.0.0.1.

Handshake tests run on both the asyncio and the uvloop event loop (the data plane runs on
uvloop, whose SSL transport is a separate implementation). ``ca`` is the session's trustme CA
from conftest."""
from __future__ import annotations

import asyncio
import contextlib
import datetime
import errno
import json
import os
import socket
import ssl
import sys

import pytest
import trustme
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pyproxy import ir
from pyproxy.dataplane.compile import compile_config
from pyproxy.dataplane.tls import (
    client_context,
    dns_name_matches,
    server_context,
    system_trust_is_empty,
    transport_failure_reason,
    verify_peer,
)
from pyproxy.pem import ca_bundle_problem, key_pair_problem
from pyproxy.stats import Stats

SAN_FAILURE = (
    "TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:"
    "verify cert failed: verify SAN list:TLS_error_end"
)


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    """Run a coroutine to completion (bounded) on a fresh loop of the parametrized kind."""
    factory = asyncio.new_event_loop if request.param == "asyncio" else uvloop.new_event_loop

    def run(coro):
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(asyncio.wait_for(coro, 10))

    return run


def pem(ca: trustme.CA) -> str:
    return ca.cert_pem.bytes().decode()


def certificate(leaf: trustme.LeafCert, name: str = "cert") -> ir.Certificate:
    chain = "".join(blob.bytes().decode() for blob in leaf.cert_chain_pems)
    return ir.Certificate(name, chain, leaf.private_key_pem.bytes().decode())


def issue(ca: trustme.CA, dns_names=(), uris=(), common_name: str = "pyproxy test") -> ir.Certificate:
    """A leaf signed by ``ca`` with URI SANs (trustme only issues DNS/IP/email SANs)."""
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)
    )
    names = [x509.DNSName(n) for n in dns_names] + [x509.UniformResourceIdentifier(u) for u in uris]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ir.Certificate(common_name, cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode())


@contextlib.asynccontextmanager
async def serving(ctx: ssl.SSLContext):
    """A TLS server on 127.0.0.1 that holds each connection until the client closes it."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0, ssl=ctx)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def handshake(port: int, ctx: ssl.SSLContext, sni: str) -> tuple[dict, str | None]:
    """Connect, and return the peer certificate and the negotiated ALPN protocol."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port, ssl=ctx, server_hostname=sni)
    try:
        ssl_object = transport.get_extra_info("ssl_object")
        return ssl_object.getpeercert(), ssl_object.selected_alpn_protocol()
    finally:
        transport.close()


async def connect_and_verify(cert: ir.Certificate, tls: ir.UpstreamTLS) -> str | None:
    async with serving(server_context([cert])) as port:
        peercert, _ = await handshake(port, client_context(tls), tls.sni)
    return verify_peer(peercert, tls)


# ------------------------------------------------------------------ upstream verification


def test_the_right_name_passes(ca, run):
    cert = certificate(ca.issue_cert("backend.test"))
    tls = ir.UpstreamTLS(sni="backend.test", ca=pem(ca))

    async def scenario():
        async with serving(server_context([cert])) as port:
            return await handshake(port, client_context(tls), "backend.test")

    peercert, alpn = run(scenario())
    assert verify_peer(peercert, tls) is None
    assert alpn == "http/1.1"


def test_a_wrong_hostname_fails_the_name_check(ca, run):
    tls = ir.UpstreamTLS(sni="backend.test", ca=pem(ca))

    reason = run(connect_and_verify(certificate(ca.issue_cert("other.test")), tls))

    assert reason is not None and "Hostname backend.test" in reason
    assert transport_failure_reason(None, reason) == SAN_FAILURE


def test_a_wildcard_san_covers_one_label(ca, run):
    cert = certificate(ca.issue_cert("*.example.test"))

    assert run(connect_and_verify(cert, ir.UpstreamTLS(sni="a.example.test", ca=pem(ca)))) is None
    assert run(connect_and_verify(cert, ir.UpstreamTLS(sni="a.b.example.test", ca=pem(ca)))) is not None


def test_an_untrusted_ca_fails_the_handshake(ca, run):
    cert = certificate(trustme.CA().issue_cert("backend.test"))
    tls = ir.UpstreamTLS(sni="backend.test", ca=pem(ca))

    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        run(connect_and_verify(cert, tls))

    assert transport_failure_reason(caught.value) == (
        "TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:verify cert failed: "
        "X509_verify_cert: unable to get local issuer certificate:TLS_error_end"
    )


def test_insecure_skip_verify_accepts_anything(run):
    cert = issue(trustme.CA(), dns_names=["other.test"])
    tls = ir.UpstreamTLS(sni="backend.test", insecure_skip_verify=True)

    assert client_context(tls).verify_mode == ssl.CERT_NONE
    assert run(connect_and_verify(cert, tls)) is None


def test_subject_alt_names_replace_the_sni_check(ca, run):
    uri = "spiffe://cluster.local/ns/default/sa/backend"
    cert = issue(ca, dns_names=["internal.test"], uris=[uri])

    def verified(*sans: ir.SubjectAltName) -> str | None:
        return run(connect_and_verify(cert, ir.UpstreamTLS(sni="backend.test", ca=pem(ca), subject_alt_names=sans)))

    assert verified(ir.SubjectAltName("URI", uri)) is None
    assert verified(ir.SubjectAltName("Hostname", "nope.test"), ir.SubjectAltName("Hostname", "internal.test")) is None
    assert verified(ir.SubjectAltName("URI", uri + "/x")) is not None
    assert verified(ir.SubjectAltName("Hostname", "backend.test")) is not None


def test_a_certificate_without_sans_fails(ca, run):
    cert = issue(ca, common_name="backend.test")

    reason = run(connect_and_verify(cert, ir.UpstreamTLS(sni="backend.test", ca=pem(ca))))

    assert reason == "peer certificate has no subjectAltName"


def test_minimum_version_1_3_refuses_a_tls_1_2_server(ca, run):
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ca.issue_cert("backend.test").configure_cert(server_ctx)
    strict = ir.UpstreamTLS(sni="backend.test", ca=pem(ca), min_version="1.3")

    async def scenario(tls: ir.UpstreamTLS):
        async with serving(server_ctx) as port:
            return await handshake(port, client_context(tls), tls.sni)

    assert client_context(strict).minimum_version == ssl.TLSVersion.TLSv1_3
    with pytest.raises(OSError) as caught:  # an SSLError, or a reset if the server hangs up first
        run(scenario(strict))
    reason = transport_failure_reason(caught.value)
    assert reason.startswith("TLS_error:|") and reason.endswith(":TLS_error_end")
    run(scenario(ir.UpstreamTLS(sni="backend.test", ca=pem(ca))))


def test_a_refused_connection_is_a_delayed_connect_error(run):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused

        async def scenario():
            await asyncio.get_running_loop().create_connection(asyncio.Protocol, "127.0.0.1", port)

        with pytest.raises(OSError) as caught:
            run(scenario())

    assert transport_failure_reason(caught.value) == f"delayed connect error: {errno.ECONNREFUSED}"


# ------------------------------------------------------------------ client contexts


def test_client_contexts_are_cached_by_value(ca):
    first = client_context(ir.UpstreamTLS(sni="a.test", ca=pem(ca)))

    assert client_context(ir.UpstreamTLS(sni="a.test", ca=pem(ca))) is first
    assert client_context(ir.UpstreamTLS(sni="b.test", ca=pem(ca))) is not first


def test_client_context_defaults():
    ctx = client_context(ir.UpstreamTLS(sni="a.test"))

    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname is False
    assert {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"} <= {
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    }


@pytest.mark.parametrize("bundle", ["", "not a certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"])
def test_an_unparsable_ca_bundle_is_a_value_error(bundle):
    with pytest.raises(ValueError, match="ca.crt: no certificate could be loaded"):
        client_context(ir.UpstreamTLS(sni="a.test", ca=bundle))


# ------------------------------------------------------------------ System trust


SYSTEM_TRUST_PROBE = """
import json, socket, ssl, sys
from pyproxy import ir
from pyproxy.dataplane import tls
settings = ir.UpstreamTLS(sni="backend.test")
ctx = tls.client_context(settings)
result = {"empty": tls.system_trust_is_empty(), "cas": ctx.cert_store_stats()["x509_ca"]}
try:
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5) as sock:
        with ctx.wrap_socket(sock, server_hostname="backend.test") as tls_sock:
            result["verify"] = tls.verify_peer(tls_sock.getpeercert(), settings)
except ssl.SSLCertVerificationError as exc:
    result["error"] = tls.transport_failure_reason(exc)
print(json.dumps(result))
"""


async def probe_system_trust(port: int, cert_file: str, cert_dir: str) -> dict:
    """Run the probe in a subprocess, so SSL_CERT_FILE/SSL_CERT_DIR apply as at startup."""
    env = {**os.environ, "SSL_CERT_FILE": cert_file, "SSL_CERT_DIR": cert_dir}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SYSTEM_TRUST_PROBE, str(port), env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0
    return json.loads(out)


async def test_system_trust_follows_ssl_cert_file_and_falls_back_to_certifi(ca, tmp_path):
    trusted, untrusted, empty_dir = tmp_path / "ca.pem", tmp_path / "other.pem", tmp_path / "certs"
    ca.cert_pem.write_to_path(str(trusted))
    trustme.CA().cert_pem.write_to_path(str(untrusted))
    empty_dir.mkdir()

    async with serving(server_context([certificate(ca.issue_cert("backend.test"))])) as port:
        results = await asyncio.gather(
            probe_system_trust(port, str(trusted), str(empty_dir)),
            probe_system_trust(port, str(untrusted), str(empty_dir)),
            probe_system_trust(port, str(tmp_path / "missing.pem"), str(empty_dir)),
        )

    assert results[0] == {"empty": False, "cas": 1, "verify": None}
    assert results[1]["error"].endswith("unable to get local issuer certificate:TLS_error_end")
    assert results[2]["empty"] is True
    assert results[2]["cas"] > 50  # certifi's bundle
    assert "error" in results[2]


def verify_paths(cafile: str | None, capath: str | None) -> ssl.DefaultVerifyPaths:
    return ssl.DefaultVerifyPaths(cafile, capath, "SSL_CERT_FILE", "", "SSL_CERT_DIR", "")


def test_system_trust_is_empty_only_without_a_ca_file_and_hashed_certificates(tmp_path):
    (tmp_path / "README").write_text("not a certificate")

    assert system_trust_is_empty(verify_paths(None, None))
    assert system_trust_is_empty(verify_paths(None, str(tmp_path)))
    assert system_trust_is_empty(verify_paths(None, str(tmp_path / "missing")))
    assert not system_trust_is_empty(verify_paths(str(tmp_path / "README"), None))
    (tmp_path / "0123abcd.0").write_text("")
    assert not system_trust_is_empty(verify_paths(None, str(tmp_path)))


# ------------------------------------------------------------------ name rules as a table


@pytest.mark.parametrize(
    ("name", "pattern", "matches"),
    [
        ("backend.test", "backend.test", True),
        ("Backend.TEST", "backend.test", True),
        ("a.example.test", "*.example.test", True),
        ("A.Example.Test", "*.EXAMPLE.test", True),
        ("a.b.example.test", "*.example.test", False),
        ("example.test", "*.example.test", False),
        (".example.test", "*.example.test", False),
        ("ab.example.test", "a*.example.test", False),
        ("*.example.test", "*.example.test", True),
        ("backend.test", "other.test", False),
    ],
)
def test_dns_name_matches(name, pattern, matches):
    assert dns_name_matches(name, pattern) is matches


def peer(*sans: tuple[str, str]) -> dict:
    return {"subject": ((("commonName", "x"),),), "subjectAltName": sans}


@pytest.mark.parametrize(
    ("peercert", "sans", "ok"),
    [
        (peer(("DNS", "backend.test")), (), True),
        (peer(("DNS", "other.test"), ("DNS", "BACKEND.test")), (), True),
        (peer(("IP Address", "127.0.0.1")), (), False),
        (peer(("URI", "backend.test")), (), False),
        (peer(), (), False),
        (None, (), False),
        ({}, (), False),
        (peer(("DNS", "backend.test")), (ir.SubjectAltName("Hostname", "other.test"),), False),
        (peer(("DNS", "*.other.test")), (ir.SubjectAltName("Hostname", "a.other.test"),), True),
        (peer(("URI", "spiffe://a/b")), (ir.SubjectAltName("URI", "spiffe://a/b"),), True),
        (peer(("URI", "spiffe://a/b")), (ir.SubjectAltName("URI", "SPIFFE://a/b"),), False),
        (peer(("URI", "spiffe://a/b")), (ir.SubjectAltName("URI", "spiffe://a"),), False),
        (peer(("DNS", "spiffe://a/b")), (ir.SubjectAltName("URI", "spiffe://a/b"),), False),
    ],
)
def test_verify_peer_rules(peercert, sans, ok):
    reason = verify_peer(peercert, ir.UpstreamTLS(sni="backend.test", subject_alt_names=sans))

    assert (reason is None) is ok


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (None, ""),
        (TimeoutError(), ""),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), f"delayed connect error: {errno.ECONNREFUSED}"),
        (OSError(errno.EHOSTUNREACH, "No route to host"), f"delayed connect error: {errno.EHOSTUNREACH}"),
        (OSError("Multiple exceptions"), "delayed connect error: unknown"),
        (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), "TLS_error:|SSL routines:OPENSSL_internal:HANDSHAKE_FAILURE:TLS_error_end"),
        (ConnectionResetError(), "TLS_error:|system library:OPENSSL_internal:Connection reset by peer:TLS_error_end"),
    ],
)
def test_transport_failure_reason_shapes(exc, reason):
    assert transport_failure_reason(exc) == reason


# ------------------------------------------------------------------ listener contexts


def test_server_context_selects_the_certificate_by_sni(ca, run):
    ctx = server_context(
        [
            certificate(ca.issue_cert("default.test"), "default"),
            certificate(ca.issue_cert("*.wild.test"), "wildcard"),
            certificate(ca.issue_cert("exact.wild.test", "a.test"), "exact"),
        ]
    )
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    ca.configure_trust(client)

    async def served(sni: str) -> list[str]:
        async with serving(ctx) as port:
            peercert, _ = await handshake(port, client, sni)
        return [value for kind, value in peercert["subjectAltName"] if kind == "DNS"]

    assert run(served("A.test")) == ["exact.wild.test", "a.test"]
    assert run(served("exact.wild.test")) == ["exact.wild.test", "a.test"]
    assert run(served("other.wild.test")) == ["*.wild.test"]
    assert run(served("x.other.wild.test")) == ["default.test"]
    assert run(served("unknown.test")) == ["default.test"]
    assert run(served("")) == ["default.test"]  # no SNI at all


def test_server_context_settings_and_cache(ca):
    certs = [certificate(ca.issue_cert("a.test"))]
    ctx = server_context(certs)

    assert server_context(tuple(certs)) is ctx
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert all(c["protocol"] != "TLSv1.2" or c["name"].startswith("ECDHE-") for c in ctx.get_ciphers())


def test_server_context_leaves_no_key_on_disk(ca, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))

    server_context([certificate(ca.issue_cert("a.test")), certificate(ca.issue_cert("b.test"))])

    assert list(tmp_path.iterdir()) == []


def test_server_context_rejects_bad_input(ca):
    good = certificate(ca.issue_cert("a.test"))
    other_key = certificate(ca.issue_cert("b.test")).key_pem

    with pytest.raises(ValueError, match="at least one certificate"):
        server_context([])
    with pytest.raises(ValueError, match="certificate mismatched"):
        server_context([ir.Certificate("mismatched", good.cert_pem, other_key)])
    with pytest.raises(ValueError, match="certificate garbage"):
        server_context([ir.Certificate("garbage", "junk", "junk")])


# ------------------------------------------------------------------ PEM material (shared with translate)


def _encrypted(key_pem: str) -> str:
    key = serialization.load_pem_private_key(key_pem.encode(), None)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
    ).decode()


def _garbled(block: str) -> str:
    """The PEM markers of ``block`` around a body that is not DER."""
    lines = block.strip().splitlines()
    return f"{lines[0]}\nAAAAnot+der+AAAA\n{lines[-1]}\n"


def _truncated(block: str) -> str:
    lines = block.strip().splitlines()
    return "\n".join([*lines[:3], lines[-1]]) + "\n"


def test_key_pair_problems_name_the_key_and_the_reason(ca):
    good = certificate(ca.issue_cert("a.test"))
    other_key = certificate(ca.issue_cert("b.test")).key_pem

    assert key_pair_problem(good.cert_pem, good.key_pem) is None
    assert key_pair_problem(good.cert_pem, other_key) == "tls.key does not match tls.crt"
    assert key_pair_problem(_truncated(good.cert_pem), good.key_pem) == (
        "tls.crt: no certificate could be loaded: Error decoding PEM-encoded file"
    )
    assert key_pair_problem(good.cert_pem, _garbled(good.key_pem)) == (
        "tls.crt and tls.key could not be loaded: [SSL] PEM lib"
    )
    assert key_pair_problem(good.cert_pem, _encrypted(good.key_pem)) == (
        "tls.key: encrypted private keys are not supported"
    )


def test_ca_bundle_problems_give_openssl_reason(ca):
    assert ca_bundle_problem(ca.cert_pem.bytes().decode()) is None
    assert ca_bundle_problem(_garbled(ca.cert_pem.bytes().decode())) == (
        "ca.crt: no certificate could be loaded: no start line: cadata does not contain a certificate"
    )


def test_key_pair_check_leaves_no_key_on_disk(ca, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    good = certificate(ca.issue_cert("on-disk.test"))

    assert key_pair_problem(good.cert_pem, _garbled(good.key_pem)) is not None
    assert key_pair_problem(good.cert_pem, good.key_pem) is None
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ a part that fails to compile


def _listener(name: str, port: int, tls: ir.ListenerTLS | None = None) -> ir.Listener:
    route = ir.Route(name=f"{name}/route", match=ir.Match(ir.PathMatch("PathPrefix", "/")),
                     action=ir.DirectResponse(200, "ok"))
    vhost = ir.VirtualHost(name=f"{name}/*", hostname="*", routes=(route,))
    return ir.Listener(name=name, address="127.0.0.1", port=port, protocol="HTTPS" if tls else "HTTP",
                       virtual_hosts=(vhost,), tls=tls)


def test_a_socket_that_fails_to_compile_is_logged_as_a_bug_and_left_out(ca, run, caplog):
    """Translation never lets an unloadable certificate through; if one reaches compile
    anyway, only its socket is dropped."""
    good = certificate(ca.issue_cert("a.test"))
    broken = ir.ListenerTLS((ir.Certificate("secret/default/broken", good.cert_pem, _garbled(good.key_pem)),))
    config = ir.Config((_listener("gateway/default/gw/http", 1080), _listener("gateway/default/gw/https", 1443, broken)))

    snapshot = run(compile_config(config, Stats()))

    assert list(snapshot.groups) == [("127.0.0.1", 1080)]
    [record] = [r for r in caplog.records if r.name == "pyproxy.compile"]
    assert record.getMessage() == "bug: listener gateway/default/gw/https failed to compile; 127.0.0.1:1443 is not served"
    assert "certificate secret/default/broken" in record.exc_text


def test_a_destination_that_fails_to_compile_answers_500(ca, run, caplog):
    dest = ir.Destination(name="backend/default/broken", endpoints=(ir.Endpoint("ip", "127.0.0.1", 1),),
                          tls=ir.UpstreamTLS(sni="a.test", ca="-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
    route = ir.Route(name="route", match=ir.Match(ir.PathMatch("PathPrefix", "/")),
                     action=ir.Forward((ir.WeightedBackend(weight=1, destination=dest),)))
    vhost = ir.VirtualHost(name="vhost", hostname="*", routes=(route,))
    config = ir.Config((ir.Listener("listener", "127.0.0.1", 1080, "HTTP", (vhost,)),))

    snapshot = run(compile_config(config, Stats()))

    [backend] = snapshot.groups[("127.0.0.1", 1080)].listeners.find("x.test").vhosts.find("x.test").routes[0].backends
    assert backend.destination is None and backend.invalid_status == 500
    [record] = [r for r in caplog.records if r.name == "pyproxy.compile"]
    assert record.getMessage() == "bug: destination backend/default/broken failed to compile; its backendRefs answer 500"

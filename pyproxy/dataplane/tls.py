"""TLS for both sides: upstream client contexts with Gateway API name checks, listener server
contexts with certificate selection by SNI, and Envoy-shaped failure reasons.

Building a context loads CAs, certificates and keys from disk or memory, which blocks: run
``client_context`` and ``server_context`` off the event loop. Both are cached by value, so a
reload with unchanged settings reuses the contexts.

The upstream name check is ours, not OpenSSL's: contexts verify the chain with
``check_hostname`` off, and after the handshake ``verify_peer`` applies BackendTLSPolicy's
rules to ``getpeercert()``, because Python's built-in check cannot match a URI SAN or a name
other than the SNI.

DNS names are compared like Envoy's ``dnsNameMatch``: case-insensitively, and a certificate
SAN ``*.example.com`` matches exactly one extra leftmost label (``a.example.com``; not
``example.com``, not ``a.b.example.com``). Partial-label wildcards (``a*.example.com``) are
not wildcards: they only match themselves literally.
"""
from __future__ import annotations

import functools
import os
import re
import ssl
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pyproxy import ir, pem

ALPN = ["http/1.1"]  # to backends that speak HTTP/1.1
ALPN_H2 = ["h2", "http/1.1"]  # to backends that speak HTTP/2: the server's choice is spoken
SERVER_ALPN = ["h2", "http/1.1"]  # offered to clients on HTTPS listeners
# TLS 1.2 suites: ECDHE key exchange with AEAD ciphers only (Envoy's default list); TLS 1.3
# suites are OpenSSL's defaults, which are all AEAD.
CIPHERS_TLS12 = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
    ]
)
# Envoy's default suites that TLS 1.0 and 1.1 can use (CBC with SHA-1: the GCM suites above
# need TLS 1.2), offered besides CIPHERS_TLS12 only when a listener's or a destination's
# minimum version allows those versions (and a listener names no ciphers), at OpenSSL
# security level 0 (the distributions' default level refuses them).
CIPHERS_LEGACY = ":".join(
    [
        "ECDHE-ECDSA-AES128-SHA",
        "ECDHE-RSA-AES128-SHA",
        "AES128-GCM-SHA256",
        "AES128-SHA",
        "ECDHE-ECDSA-AES256-SHA",
        "ECDHE-RSA-AES256-SHA",
        "AES256-GCM-SHA384",
        "AES256-SHA",
    ]
)
SniCallback = Callable[[ssl.SSLObject, str | None, ssl.SSLContext], None]
VERSIONS = {"1.0": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1, "1.2": ssl.TLSVersion.TLSv1_2,
            "1.3": ssl.TLSVersion.TLSv1_3}
_HASHED_CERT_NAME = re.compile(r"^[0-9a-f]{8}\.\d+$")  # c_rehash / openssl rehash names

# Envoy's packed BoringSSL error for a failed verification, kept verbatim for clients that
# match on it.
_VERIFY_FAILED = "TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:verify cert failed: "


# ------------------------------------------------------------------ upstream (client) side


@functools.lru_cache(maxsize=128)
def client_context(tls: ir.UpstreamTLS, http2: bool = False) -> ssl.SSLContext:
    """The client context for one ``UpstreamTLS`` value, offering ALPN ``h2`` too when the
    destination speaks HTTP/2 (cached; blocking: run off the loop): TLS versions from
    ``min_version`` to ``max_version``, and the ``client_certificate`` presented when the
    upstream asks for one (mTLS).

    Raises ``pem.PemError`` (a ValueError) when ``tls.ca`` is not a loadable PEM bundle or
    the client certificate and key do not load; translation reports that first, with the
    same loader."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    legacy = tls.min_version in ("1.0", "1.1")
    with warnings.catch_warnings():
        # the ssl module deprecates TLS 1.0 and 1.1; a destination that names them asks for them
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = VERSIONS[tls.min_version]
        ctx.maximum_version = VERSIONS[tls.max_version]
    ctx.set_ciphers(CIPHERS_TLS12 + ":" + CIPHERS_LEGACY + ":@SECLEVEL=0" if legacy else CIPHERS_TLS12)
    ctx.set_alpn_protocols(ALPN_H2 if http2 else ALPN)
    ctx.check_hostname = False  # verify_peer does the Gateway API name check
    if tls.client_certificate is not None:
        cert = tls.client_certificate
        try:
            pem.load_key_pair(ctx, cert.cert_pem, cert.key_pem)
        except pem.PemError as exc:
            raise pem.PemError(f"client certificate {cert.name}: {exc}") from exc
    if tls.insecure_skip_verify:
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx.verify_mode = ssl.CERT_REQUIRED
    if tls.ca == "System":
        _load_system_trust(ctx)
    else:
        pem.load_ca_bundle(ctx, tls.ca)
    return ctx


def _load_system_trust(ctx: ssl.SSLContext) -> None:
    if system_trust_is_empty():
        import certifi  # only for this fallback: its importlib.resources and pathlib are 0.3 MiB of RSS

        ctx.load_verify_locations(cafile=certifi.where())
    else:
        ctx.set_default_verify_paths()


def system_trust_is_empty(paths: ssl.DefaultVerifyPaths | None = None) -> bool:
    """True when OpenSSL's default verify paths (after ``SSL_CERT_FILE``/``SSL_CERT_DIR``) hold
    nothing: the CA file does not exist and the CA directory has no hashed certificate names.
    Then "System" trust falls back to certifi's bundle."""
    paths = paths or ssl.get_default_verify_paths()
    if paths.cafile is not None:  # get_default_verify_paths() gives None for a missing file
        return False
    if paths.capath is None:
        return True
    try:
        return not any(_HASHED_CERT_NAME.match(entry) for entry in os.listdir(paths.capath))
    except OSError:
        return True


def verify_peer(peercert: dict | None, tls: ir.UpstreamTLS) -> str | None:
    """None when the peer certificate satisfies ``tls``'s name rules, else why not.

    ``peercert`` is ``SSLObject.getpeercert()`` of a connection whose chain OpenSSL already
    verified. Without ``subject_alt_names`` a DNS SAN must match ``tls.sni``; with them, one of
    them must match (Hostname against DNS SANs, URI exactly against URI SANs)."""
    if tls.insecure_skip_verify:
        return None
    if not peercert:
        return "no peer certificate"
    sans = peercert.get("subjectAltName", ())
    if not sans:
        return "peer certificate has no subjectAltName"
    dns_sans = [value for kind, value in sans if kind == "DNS"]
    uri_sans = [value for kind, value in sans if kind == "URI"]
    wanted = tls.subject_alt_names or (ir.SubjectAltName("Hostname", tls.sni),)
    for san in wanted:
        if san.kind == "URI" and san.value in uri_sans:
            return None
        if san.kind == "Hostname" and any(dns_name_matches(san.value, pattern) for pattern in dns_sans):
            return None
    expected = ", ".join(f"{san.kind} {san.value}" for san in wanted)
    return f"no subjectAltName of the peer certificate matches {expected}"


def dns_name_matches(name: str, pattern: str) -> bool:
    """Envoy's ``dnsNameMatch``: equal ignoring case, or ``*.suffix`` covering one more label."""
    name, pattern = name.lower(), pattern.lower()
    if name == pattern:
        return True
    if not pattern.startswith("*."):
        return False
    label, dot, rest = name.partition(".")
    return bool(label and dot) and "." + rest == pattern[1:]


def transport_failure_reason(exc: BaseException | None, verify_reason: str | None = None) -> str:
    """The ``transport failure reason`` of Envoy's 503 body for a failed upstream connect.

    A certificate the chain or the name check rejected gives Envoy's
    ``TLS_error:|268435581:…CERTIFICATE_VERIFY_FAILED:verify cert failed: …:TLS_error_end``;
    another TLS failure ``TLS_error:|SSL routines:OPENSSL_internal:<REASON>:TLS_error_end`` (or
    ``…Connection reset by peer…`` when the peer hangs up mid-handshake); a TCP failure
    ``delayed connect error: <errno>``. A timeout gives "" (Envoy reports it as the
    reset reason ``connection timeout``, with no transport reason). Only fixed library text
    is used: nothing the peer sent, nothing from the request."""
    if verify_reason is not None:
        return _VERIFY_FAILED + "verify SAN list:TLS_error_end"
    # library, reason and verify_message are set only on exceptions raised by the ssl module.
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = getattr(exc, "verify_message", None) or "certificate verification error"
        return _VERIFY_FAILED + f"X509_verify_cert: {detail}:TLS_error_end"
    if isinstance(exc, ssl.SSLError):
        library = getattr(exc, "library", None) or "SSL"
        reason = getattr(exc, "reason", None) or "HANDSHAKE_FAILURE"
        return f"TLS_error:|{library} routines:OPENSSL_internal:{reason}:TLS_error_end"
    if isinstance(exc, TimeoutError) or exc is None:
        return ""
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        # A TCP connect is refused or times out, it is never reset: a reset (with or without
        # an errno, as asyncio and uvloop raise it) means the peer hung up mid-handshake.
        return "TLS_error:|system library:OPENSSL_internal:Connection reset by peer:TLS_error_end"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"delayed connect error: {exc.errno}"
    if isinstance(exc, ConnectionError):
        return "TLS_error:|system library:OPENSSL_internal:Connection reset by peer:TLS_error_end"
    if isinstance(exc, OSError):
        return "delayed connect error: unknown"
    return "connection failure"


# ------------------------------------------------------------------ listener (server) side


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """A listener's TLS handshake options (``ir.ListenerTLS`` without its certificates):
    protocol versions, the OpenSSL cipher list for TLS 1.2 and below (empty: pyproxy's
    default, Envoy's ECDHE AEAD suites; TLS 1.3 suites are always OpenSSL's, all AEAD), and
    the ALPN protocols offered (empty: no ALPN)."""

    min_version: str = "1.2"
    max_version: str = "1.3"
    ciphers: tuple[str, ...] = ()
    alpn: tuple[str, ...] = tuple(SERVER_ALPN)

    @classmethod
    def of(cls, listener_tls: ir.ListenerTLS) -> ServerOptions:
        return cls(listener_tls.min_version, listener_tls.max_version, listener_tls.ciphers, listener_tls.alpn)


def configure_server(ctx: ssl.SSLContext, options: ServerOptions) -> None:
    """Apply ``options`` to a server context (also to a live socket's front context on a
    reload: handshakes that begin afterwards take them). TLS 1.0 and 1.1 need OpenSSL's
    security level 0 (their handshakes sign with SHA-1), so a listener that allows them gets
    it, and without ciphers of its own the CBC suites those versions can use."""
    legacy = VERSIONS[options.min_version] < ssl.TLSVersion.TLSv1_2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1 and TLSv1_1 are, and meant
        ctx.minimum_version = VERSIONS[options.min_version]
        ctx.maximum_version = VERSIONS[options.max_version]
    ciphers = ":".join(options.ciphers) or (CIPHERS_TLS12 + ":" + CIPHERS_LEGACY if legacy else CIPHERS_TLS12)
    ctx.set_ciphers(ciphers + ":@SECLEVEL=0" if legacy else ciphers)
    # no ALPN: the selection callback finds no overlap and answers without the extension
    ctx.set_alpn_protocols(list(options.alpn))


def server_context(certs: Sequence[ir.Certificate], options: ServerOptions | None = None) -> ssl.SSLContext:
    """The server context for an HTTPS listener (cached by value; blocking: run off the loop).

    The first certificate is the default; with several, the TLS server name picks the one
    whose DNS SAN (or, without SANs, subject CN) matches it: an exact name before a wildcard.
    Every context gets ``options`` (ALPN is answered by the context the server name selected;
    the versions and ciphers of a live socket are its front context's: ``switching_context``).
    Raises ValueError when ``certs`` is empty or a certificate or key cannot be loaded, or
    when no cipher of ``options`` is known to OpenSSL (``ssl.SSLError``)."""
    return _server_context(tuple(certs), options or ServerOptions())


@functools.lru_cache(maxsize=64)
def _server_context(certs: tuple[ir.Certificate, ...], options: ServerOptions) -> ssl.SSLContext:
    if not certs:
        raise ValueError("an HTTPS listener needs at least one certificate")
    loaded = [_load_certificate(cert, options) for cert in certs]
    default = loaded[0][0]
    default.sni_callback = _sni_selector(loaded)
    return default


def switching_context(current: Callable[[], ssl.SSLContext], options: ServerOptions | None = None) -> ssl.SSLContext:
    """A server context for a listening socket that outlives reloads: it carries no
    certificate of its own; at each handshake its ``sni_callback`` switches the connection to
    ``current()`` (the socket's context in the snapshot serving now) and lets that context's
    own selector pick the certificate. A reload that changes certificates thus needs no new
    socket, and handshakes in progress keep the context they started with. The versions and
    ciphers a handshake allows are this context's (OpenSSL fixes them when the connection is
    created, before the server name is known): ``configure_server`` changes them on a reload."""
    front = _new_server_context(options or ServerOptions())

    def switch(ssl_object: ssl.SSLObject, server_name: str | None, _front: ssl.SSLContext) -> None:
        ctx = current()
        ssl_object.context = ctx
        if ctx.sni_callback is not None and server_name is not None:
            ctx.sni_callback(ssl_object, server_name, ctx)

    front.sni_callback = switch
    return front


# The server name each TLS connection asked for: server-side SSLObjects do not expose it, so
# the sni_callback records it (needed to answer 421 when Host and SNI pick different listeners).
_server_names: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def server_name(ssl_object: ssl.SSLObject) -> str | None:
    """The SNI a client sent on a connection accepted with a ``server_context``."""
    return _server_names.get(ssl_object)


def _new_server_context(options: ServerOptions) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    configure_server(ctx, options)
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    return ctx


def _load_certificate(cert: ir.Certificate, options: ServerOptions) -> tuple[ssl.SSLContext, list[str]]:
    """A context serving ``cert`` and the names it covers (``pem.load_key_pair``: the same
    loader translation validates the certificate with)."""
    ctx = _new_server_context(options)
    try:
        decoded = pem.load_key_pair(ctx, cert.cert_pem, cert.key_pem)
    except pem.PemError as exc:
        raise pem.PemError(f"certificate {cert.name}: {exc}") from exc
    return ctx, _certificate_names(decoded)


def _certificate_names(decoded: dict) -> list[str]:
    names = [value.lower() for kind, value in decoded.get("subjectAltName", ()) if kind == "DNS"]
    if names:
        return names
    return [value.lower() for rdn in decoded.get("subject", ()) for key, value in rdn if key == "commonName"]


def _sni_selector(loaded: list[tuple[ssl.SSLContext, list[str]]]) -> SniCallback:
    """An ``sni_callback`` switching to the context whose names match the server name."""
    exact: dict[str, ssl.SSLContext] = {}
    wildcard: dict[str, ssl.SSLContext] = {}  # "example.com" for "*.example.com"
    for ctx, names in loaded:
        for name in names:
            if name.startswith("*."):
                wildcard.setdefault(name[2:], ctx)
            else:
                exact.setdefault(name, ctx)

    def select(ssl_object: ssl.SSLObject, server_name: str | None, _default: ssl.SSLContext) -> None:
        if server_name is None:
            return
        name = server_name.lower()
        _server_names[ssl_object] = name
        if len(loaded) == 1:
            return
        ctx = exact.get(name)
        if ctx is None:
            label, _, parent = name.partition(".")
            ctx = wildcard.get(parent) if label else None
        if ctx is not None:
            ssl_object.context = ctx

    return select

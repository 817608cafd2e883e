"""Envoy Gateway ``Backend``: endpoints and the upstream TLS settings of ``spec.tls``."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from .. import ir
from ..config import envoygateway as eg
from .certs import resolve_ca_refs, tls_secret
from .hostnames import hostname_problem
from .index import Index, Key
from .problems import Problem, kind_label
from .status import Condition, ObjectStatus, object_status

Version = Literal["1.0", "1.1", "1.2", "1.3"]

UNIX_PATH_MAX = 108
SYSTEM_CA = "System"
TLS_VERSIONS: tuple[Version, ...] = ("1.0", "1.1", "1.2", "1.3")
# HTTP/2 to the backend, as Envoy Gateway maps it (an HTTP/2 cluster): with prior knowledge in
# clear; over TLS (``spec.tls`` or a BackendTLSPolicy) ALPN offers h2 and http/1.1, and what the
# server selects is spoken
HTTP2_APP_PROTOCOL = "gateway.envoyproxy.io/h2c"
# WebSocket over HTTP/1.1 (plain or TLS): every route forwards websocket upgrades, so these
# need nothing more (Gateway API's HTTPRouteBackendProtocolWebSocket)
WEBSOCKET_APP_PROTOCOLS = ("gateway.envoyproxy.io/ws", "gateway.envoyproxy.io/wss")


@dataclass(frozen=True, slots=True)
class BackendTLS:
    """What ``spec.tls`` says; a BackendTLSPolicy overrides each field it sets (SNI and CA:
    the client certificate and TLS versions are the Backend's alone)."""

    sni: str | None
    ca: str | None  # "System", a PEM bundle, or None (not set here)
    insecure_skip_verify: bool
    client_certificate: ir.Certificate | None = None
    min_version: Version = "1.2"
    max_version: Version = "1.3"


@dataclass(frozen=True, slots=True)
class ResolvedBackend:
    """An accepted Backend (``problems`` empty) or why it is not accepted."""

    endpoints: tuple[ir.Endpoint, ...]
    tls: BackendTLS | None
    default_sni: str | None  # the hostname of its fqdn endpoints, SNI when nothing sets one
    problems: tuple[str, ...] = ()
    http2: bool = False  # appProtocols has gateway.envoyproxy.io/h2c


def translate_backends(index: Index) -> tuple[dict[Key, ResolvedBackend], list[ObjectStatus]]:
    resolved: dict[Key, ResolvedBackend] = {}
    statuses: list[ObjectStatus] = []
    for key, backend in index.backends.items():
        resolved[key] = _resolve(index, backend)
        statuses.append(_status(backend, resolved[key]))
    return resolved, statuses


def _resolve(index: Index, backend: eg.Backend) -> ResolvedBackend:
    spec = backend.spec
    problems: list[str] = []
    if spec.type == "DynamicResolver":
        problems.append("spec.type DynamicResolver is not supported; use type Endpoints with spec.endpoints")
        return ResolvedBackend((), None, None, tuple(problems))
    endpoints = _endpoints(spec.endpoints, problems)
    fqdns = sorted({e.host for e in endpoints if e.kind == "fqdn"})
    default_sni = fqdns[0] if len(fqdns) == 1 else None
    tls = _tls(index, backend, default_sni, problems) if spec.tls else None
    return ResolvedBackend(endpoints, tls, default_sni, tuple(problems), HTTP2_APP_PROTOCOL in spec.app_protocols)


def _endpoints(specs: tuple[eg.BackendEndpoint, ...], problems: list[str]) -> tuple[ir.Endpoint, ...]:
    endpoints: list[ir.Endpoint] = []
    for i, spec in enumerate(specs):
        endpoint = _endpoint(spec, f"spec.endpoints[{i}]", problems)
        if endpoint is not None:
            endpoints.append(endpoint)
    if not specs:
        problems.append("spec.endpoints is empty; list at least one fqdn, ip or unix endpoint")
    kinds = {e.kind for e in endpoints}
    if "fqdn" in kinds and len(kinds) > 1:
        problems.append(
            "spec.endpoints mixes fqdn with ip or unix endpoints; an fqdn Backend must have only fqdn endpoints"
        )
    return tuple(endpoints)


def _endpoint(spec: eg.BackendEndpoint, where: str, problems: list[str]) -> ir.Endpoint | None:
    given = [name for name in ("fqdn", "ip", "unix") if getattr(spec, name) is not None]
    if len(given) != 1:
        problems.append(f"{where}: set exactly one of fqdn, ip or unix (found {', '.join(given) or 'none'})")
        return None
    if spec.fqdn is not None:
        return _checked(
            ir.Endpoint("fqdn", spec.fqdn.hostname, spec.fqdn.port),
            hostname_problem(spec.fqdn.hostname, wildcard=False),
            where + ".fqdn",
            problems,
        )
    if spec.ip is not None:
        return _checked(
            ir.Endpoint("ip", spec.ip.address, spec.ip.port), _ip_problem(spec.ip.address), where + ".ip", problems
        )
    path = spec.unix.path  # type: ignore[union-attr]
    problem = None if 0 < len(path.encode()) <= UNIX_PATH_MAX else f"path must be 1 to {UNIX_PATH_MAX} bytes long"
    return _checked(ir.Endpoint("unix", path, 0), problem, where + ".unix", problems)


def _checked(endpoint: ir.Endpoint, problem: str | None, where: str, problems: list[str]) -> ir.Endpoint | None:
    if problem is None and endpoint.kind != "unix" and not 0 < endpoint.port < 65536:
        problem = f"port {endpoint.port} is not between 1 and 65535"
    if problem is not None:
        problems.append(f"{where}: {problem}")
        return None
    return endpoint


def _ip_problem(address: str) -> str | None:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return f"address {address!r} is not an IPv4 or IPv6 address"
    return None


def _tls(index: Index, backend: eg.Backend, default_sni: str | None, problems: list[str]) -> BackendTLS:
    tls = backend.spec.tls
    assert tls is not None
    if tls.sni is not None and (problem := hostname_problem(tls.sni, wildcard=False)):
        problems.append(f"spec.tls.sni: {problem}")
    if tls.sni is None and default_sni is None:
        problems.append("spec.tls.sni is required when the Backend has no fqdn endpoint (or several fqdn names)")
    ca = _tls_ca(index, backend, problems)
    if tls.insecure_skip_verify and ca is not None:
        problems.append(
            "spec.tls.insecureSkipVerify cannot be combined with caCertificateRefs or wellKnownCACertificates"
        )
    low, high = tls_version(tls.min_version, "1.2"), tls_version(tls.max_version, "1.3")
    if problem := version_order_problem(low, high, "spec.tls"):
        problems.append(problem)
    certificate = _client_certificate(index, backend, problems)
    return BackendTLS(tls.sni, ca, tls.insecure_skip_verify, certificate, low, high)


def tls_version(value: str | None, default: Version) -> Version:
    """A TLSVersion of Envoy Gateway's; ``Auto`` (or unset) is ``default``."""
    return next((version for version in TLS_VERSIONS if version == value), default)


def version_order_problem(low: Version, high: Version, where: str) -> str | None:
    if TLS_VERSIONS.index(low) > TLS_VERSIONS.index(high):
        return f"{where}: minVersion {low} is above maxVersion {high}"
    return None


def _client_certificate(index: Index, backend: eg.Backend, problems: list[str]) -> ir.Certificate | None:
    """``spec.tls.clientCertificateRef``: a kubernetes.io/tls Secret in the Backend's namespace,
    presented when the upstream asks for a client certificate (mTLS)."""
    ref = backend.spec.tls.client_certificate_ref  # type: ignore[union-attr]
    if ref is None:
        return None
    where, namespace = "spec.tls.clientCertificateRef", backend.metadata.namespace
    found: ir.Certificate | Problem
    if ref.group != "" or ref.kind != "Secret":
        found = Problem("InvalidKind", f'{where}: kind {kind_label(ref.kind, ref.group)} is not supported; use a '
                                       'Secret (group "")')
    elif ref.namespace not in (None, namespace):
        found = Problem("RefNotPermitted", f"{where}: Secret {ref.namespace}/{ref.name} must be in the Backend's "
                                           f"namespace {namespace}")
    else:
        found = tls_secret(index, namespace, ref.name, where)
    if isinstance(found, Problem):
        problems.append(found.message)
        return None
    return found


def _tls_ca(index: Index, backend: eg.Backend, problems: list[str]) -> str | None:
    tls = backend.spec.tls
    assert tls is not None
    known, refs = tls.well_known_ca_certificates, tls.ca_certificate_refs
    if known is not None and refs:
        problems.append("spec.tls: set either caCertificateRefs or wellKnownCACertificates, not both")
    if known is not None and known != SYSTEM_CA:
        problems.append(f"spec.tls.wellKnownCACertificates: {known!r} is not supported; use System")
    if known is not None:
        return SYSTEM_CA
    if not refs:
        return None
    pem, ref_problems = resolve_ca_refs(index, backend.metadata.namespace, refs, "spec.tls.caCertificateRefs")
    problems.extend(p.message for p in ref_problems)
    return pem


def _status(backend: eg.Backend, resolved: ResolvedBackend) -> ObjectStatus:
    if resolved.problems:
        message = "; ".join(resolved.problems) + ". Routes to this Backend answer 500"
        return object_status("Backend", backend, [Condition("Accepted", False, "Invalid", message)])
    notes = []
    ignored = [p for p in backend.spec.app_protocols
               if p != HTTP2_APP_PROTOCOL and p not in WEBSOCKET_APP_PROTOCOLS]
    if ignored:
        notes.append(f"spec.appProtocols {', '.join(ignored)} is ignored")
    if backend.spec.fallback:
        notes.append("spec.fallback is ignored (not supported)")
    return object_status("Backend", backend, [Condition("Accepted", True, "Accepted", "; ".join(notes))])

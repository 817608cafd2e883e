"""PEM material from Secrets and ConfigMaps: CA bundles and listener certificates.

Material that is present is also loaded (``pyproxy.pem``, the loader the data plane builds
its SSLContexts with), so a key that does not match its certificate or a PEM block with a
garbage body is a condition here, never a failure when serving."""

from __future__ import annotations

from .. import ir, pem
from ..config import resources as res
from .index import Index
from .problems import Problem, kind_label
from .refgrants import Reference, permitted

CA_KEY = "ca.crt"
TLS_SECRET_TYPE = "kubernetes.io/tls"
_BEGIN_CERT = "-----BEGIN CERTIFICATE-----"
_END_CERT = "-----END CERTIFICATE-----"


def looks_like_certificates(pem: str) -> bool:
    return _BEGIN_CERT in pem and _END_CERT in pem


def _looks_like_private_key(pem: str) -> bool:
    return "-----BEGIN " in pem and "PRIVATE KEY-----" in pem


def resolve_ca_refs(
    index: Index, namespace: str, refs: tuple[res.LocalObjectReference, ...], field: str
) -> tuple[str | None, list[Problem]]:
    """The PEM bundle of every valid ref (None if none is valid) and a problem per invalid one.

    A ref names a ConfigMap or Secret (core group) in ``namespace`` whose ``ca.crt`` key holds
    PEM certificates. Reasons: InvalidKind (another kind), InvalidCACertificateRef (missing
    object or key, no PEM certificate in it, or one OpenSSL cannot load)."""
    bundles: list[str] = []
    problems: list[Problem] = []
    for i, ref in enumerate(refs):
        where = f"{field}[{i}]"
        pem_or_problem = _ca_pem(index, namespace, ref, where)
        if isinstance(pem_or_problem, Problem):
            problems.append(pem_or_problem)
        else:
            bundles.append(pem_or_problem if pem_or_problem.endswith("\n") else pem_or_problem + "\n")
    return ("".join(bundles) if bundles else None), problems


def _ca_pem(index: Index, namespace: str, ref: res.LocalObjectReference, where: str) -> str | Problem:
    if ref.group != "" or ref.kind not in ("ConfigMap", "Secret"):
        return Problem(
            "InvalidKind",
            f"{where}: kind {kind_label(ref.kind, ref.group)} cannot hold a CA certificate; "
            'use a ConfigMap or Secret (group "") with key ca.crt',
        )
    table = index.config_maps if ref.kind == "ConfigMap" else index.secrets
    obj = table.get((namespace, ref.name))
    if obj is None:
        return Problem("InvalidCACertificateRef", f"{where}: {ref.kind} {namespace}/{ref.name} not found")
    data = obj.data.get(CA_KEY)
    if data is None:
        return Problem("InvalidCACertificateRef", f"{where}: {ref.kind} {namespace}/{ref.name} has no key {CA_KEY}")
    if not looks_like_certificates(data):
        return Problem(
            "InvalidCACertificateRef",
            f"{where}: {ref.kind} {namespace}/{ref.name} key {CA_KEY} holds no PEM certificate ({_BEGIN_CERT})",
        )
    if problem := pem.ca_bundle_problem(data):
        return Problem("InvalidCACertificateRef", f"{where}: {ref.kind} {namespace}/{ref.name}: {problem}")
    return data


def listener_certificate(
    index: Index, gateway: res.Gateway, ref: res.SecretObjectReference, where: str
) -> ir.Certificate | Problem:
    """The certificate and key of a listener's ``certificateRefs`` entry: a Secret of type
    kubernetes.io/tls with keys tls.crt and tls.key that load as a certificate and its private
    key; another namespace needs a ReferenceGrant from the Gateway. Reasons:
    InvalidCertificateRef, RefNotPermitted."""
    gw_ns = gateway.metadata.namespace
    namespace = ref.namespace or gw_ns
    if ref.group != "" or ref.kind != "Secret":
        return Problem(
            "InvalidCertificateRef",
            f'{where}: kind {kind_label(ref.kind, ref.group)} is not supported; use a Secret (group "")',
        )
    grant = Reference(res.GATEWAY_GROUP, "Gateway", gw_ns, "", "Secret", namespace, ref.name)
    if not permitted(index, grant):
        return Problem(
            "RefNotPermitted", f"{where}: Secret {namespace}/{ref.name} is in another namespace; add {grant.describe()}"
        )
    return tls_secret(index, namespace, ref.name, where)


def tls_secret(index: Index, namespace: str, name: str, where: str) -> ir.Certificate | Problem:
    """The certificate and key of Secret ``namespace/name``: type kubernetes.io/tls, keys
    tls.crt and tls.key that load as a certificate and its private key (InvalidCertificateRef
    otherwise)."""
    secret = index.secrets.get((namespace, name))
    if secret is None:
        return Problem("InvalidCertificateRef", f"{where}: Secret {namespace}/{name} not found")
    if secret.type != TLS_SECRET_TYPE:
        return Problem(
            "InvalidCertificateRef",
            f"{where}: Secret {namespace}/{name} has type {secret.type}; expected {TLS_SECRET_TYPE}",
        )
    cert, key = secret.data.get("tls.crt", ""), secret.data.get("tls.key", "")
    if not looks_like_certificates(cert) or not _looks_like_private_key(key):
        return Problem(
            "InvalidCertificateRef",
            f"{where}: Secret {namespace}/{name} needs a PEM certificate in tls.crt and a PEM private key in tls.key",
        )
    if problem := pem.key_pair_problem(cert, key):
        return Problem("InvalidCertificateRef", f"{where}: Secret {namespace}/{name}: {problem}")
    return ir.Certificate(name=f"secret/{namespace}/{name}", cert_pem=cert, key_pem=key)

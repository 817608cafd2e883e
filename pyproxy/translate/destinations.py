"""backendRefs → ``ir.Destination``: kind, ReferenceGrant, Backend and BackendTLSPolicy."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .. import ir
from ..config import resources as res
from .backends import SYSTEM_CA, ResolvedBackend
from .backendtls import PolicyTable, PolicyTLS
from .index import Index, Key
from .problems import Problem, kind_label
from .refgrants import Reference, permitted


@dataclass(frozen=True, slots=True)
class Referrer:
    """The route a reference is written in: its kind is the ``from`` a ReferenceGrant names."""

    kind: str
    namespace: str


@dataclass(slots=True)
class Destinations:
    """Resolves backendRefs of routes; equal references share one Destination object."""

    index: Index
    backends: dict[Key, ResolvedBackend]
    policies: PolicyTable
    _cache: dict[tuple[str, str, str | None, bool], ir.Destination | Problem] = field(default_factory=dict)

    def resolve(self, ref: res.BackendObjectReference, referrer: Referrer) -> ir.Destination | Problem:
        """The Destination ``ref`` (written in the route ``referrer``) names, or the Problem
        that makes it invalid (reason BackendNotFound, InvalidKind or RefNotPermitted; the
        message starts with what was wrong, not with the field).

        A GRPCRoute's backends are always reached over HTTP/2, as Envoy Gateway sets HTTP/2
        protocol options on every GRPCRoute cluster; where the Backend itself does not declare
        h2c, that is a destination of its own (named with a ``:http2`` suffix) beside the
        HTTP/1.1 one an HTTPRoute to the same Backend uses."""
        if ref.group == "" and ref.kind == "Service":
            return Problem(
                "BackendNotFound",
                f"Service {ref.name}: Services are not supported in file mode (as in Envoy Gateway standalone); "
                f"use group {res.ENVOY_GROUP}, kind Backend",
            )
        if ref.group != res.ENVOY_GROUP or ref.kind != "Backend":
            return Problem(
                "InvalidKind",
                f"kind {kind_label(ref.kind, ref.group)} is not supported; use group {res.ENVOY_GROUP}, kind Backend",
            )
        namespace = ref.namespace or referrer.namespace
        grant = Reference(
            res.GATEWAY_GROUP, referrer.kind, referrer.namespace, res.ENVOY_GROUP, "Backend", namespace, ref.name
        )
        if not permitted(self.index, grant):
            return Problem(
                "RefNotPermitted", f"Backend {namespace}/{ref.name} is in another namespace; add {grant.describe()}"
            )
        section, policy = self.policies.lookup(namespace, ref.name, ref.port)
        key = (namespace, ref.name, section, referrer.kind == "GRPCRoute")
        if key not in self._cache:
            self._cache[key] = self._destination(*key, policy)
        return self._cache[key]

    def _destination(
        self, namespace: str, name: str, section: str | None, grpc: bool, policy: PolicyTLS | None
    ) -> ir.Destination | Problem:
        backend = self.backends.get((namespace, name))
        if backend is None:
            return Problem("BackendNotFound", f"Backend {namespace}/{name} not found")
        if backend.problems:
            return Problem(
                "BackendNotFound", f"Backend {namespace}/{name} is not accepted: {'; '.join(backend.problems)}"
            )
        if policy is not None and policy.problem is not None:
            return Problem("BackendNotFound", f"Backend {namespace}/{name}: {policy.problem}")
        destination_name = f"backend/{namespace}/{name}" + (f"/{section}" if section else "")
        if grpc and not backend.http2:
            destination_name += ":http2"
        return ir.Destination(name=destination_name, endpoints=backend.endpoints, tls=upstream_tls(backend, policy),
                              http2=backend.http2 or grpc)


def upstream_tls(backend: ResolvedBackend, policy: PolicyTLS | None) -> ir.UpstreamTLS | None:
    """Merge the policy over the Backend's ``spec.tls``: each field the policy sets wins.

    Without either there is no TLS. A policy always sets SNI and a CA, so it also turns off
    the Backend's insecureSkipVerify; it sets no client certificate or TLS versions, so the
    Backend's apply. With ``spec.tls`` alone the CA defaults to System and the SNI to the
    Backend's fqdn hostname (backends.py rejects a Backend that has neither)."""
    tls = backend.tls
    if policy is None and tls is None:
        return None
    if policy is not None:
        verified = ir.UpstreamTLS(sni=policy.sni, ca=policy.ca or SYSTEM_CA, subject_alt_names=policy.subject_alt_names)
    else:
        assert tls is not None
        sni = tls.sni or backend.default_sni
        assert sni is not None
        verified = ir.UpstreamTLS(sni=sni, ca=tls.ca or SYSTEM_CA, insecure_skip_verify=tls.insecure_skip_verify)
    if tls is None:
        return verified
    return dataclasses.replace(verified, client_certificate=tls.client_certificate, min_version=tls.min_version,
                               max_version=tls.max_version)

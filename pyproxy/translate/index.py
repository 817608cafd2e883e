"""The input resources grouped by kind and keyed by (namespace, name), in a stable order."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ..config import envoygateway as eg
from ..config import resources as res

Key = tuple[str, str]  # (namespace, name)


def key_of(resource: object) -> Key:
    meta = resource.metadata  # type: ignore[attr-defined]
    return (meta.namespace, meta.name)


@dataclass(slots=True)
class Index:
    gateways: dict[Key, res.Gateway] = field(default_factory=dict)
    routes: dict[Key, res.HTTPRoute] = field(default_factory=dict)
    grpc_routes: dict[Key, res.GRPCRoute] = field(default_factory=dict)
    backends: dict[Key, eg.Backend] = field(default_factory=dict)
    policies: dict[Key, res.BackendTLSPolicy] = field(default_factory=dict)
    backend_traffic_policies: dict[Key, eg.BackendTrafficPolicy] = field(default_factory=dict)
    client_traffic_policies: dict[Key, eg.ClientTrafficPolicy] = field(default_factory=dict)
    grants: dict[Key, res.ReferenceGrant] = field(default_factory=dict)
    config_maps: dict[Key, res.ConfigMap] = field(default_factory=dict)
    secrets: dict[Key, res.Secret] = field(default_factory=dict)
    namespaces: dict[str, res.Namespace] = field(default_factory=dict)

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        """The labels of ``namespace``, with the ``kubernetes.io/metadata.name`` label that
        Kubernetes sets on every Namespace (so selectors work without a Namespace document)."""
        ns = self.namespaces.get(namespace)
        labels = dict(ns.metadata.labels) if ns else {}
        labels["kubernetes.io/metadata.name"] = namespace
        return labels


_BUCKETS: dict[type, str] = {
    res.Gateway: "gateways",
    res.HTTPRoute: "routes",
    res.GRPCRoute: "grpc_routes",
    eg.Backend: "backends",
    res.BackendTLSPolicy: "policies",
    eg.BackendTrafficPolicy: "backend_traffic_policies",
    eg.ClientTrafficPolicy: "client_traffic_policies",
    res.ReferenceGrant: "grants",
    res.ConfigMap: "config_maps",
    res.Secret: "secrets",
}


def build_index(resources: Iterable[object]) -> Index:
    """Group ``resources`` by kind, sorted by (namespace, name). The loader rejects two objects
    of one kind with the same namespace and name; should a caller pass such twins anyway, the
    first one is used."""
    index = Index()
    for resource in resources:
        if isinstance(resource, res.Namespace):
            index.namespaces.setdefault(resource.metadata.name, resource)
        else:
            getattr(index, _BUCKETS[type(resource)]).setdefault(key_of(resource), resource)
    for name in _BUCKETS.values():
        setattr(index, name, dict(sorted(getattr(index, name).items())))
    return index

"""The kinds pyproxy reads: each kind's accepted apiVersions and the class it parses into."""
from __future__ import annotations

from .envoygateway import Backend, BackendTrafficPolicy, ClientTrafficPolicy
from .resources import BackendTLSPolicy, ConfigMap, Gateway, GRPCRoute, HTTPRoute, Namespace, ReferenceGrant, Secret

Resource = (
    Gateway | HTTPRoute | GRPCRoute | Backend | BackendTLSPolicy | BackendTrafficPolicy | ClientTrafficPolicy
    | ReferenceGrant | ConfigMap | Secret | Namespace
)

_ENVOY_GATEWAY = ("gateway.envoyproxy.io/v1alpha1",)

# kind -> (accepted apiVersions, class)
KINDS: dict[str, tuple[tuple[str, ...], type]] = {
    "Gateway": (("gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1"), Gateway),
    "HTTPRoute": (("gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1"), HTTPRoute),
    "GRPCRoute": (("gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1alpha2"), GRPCRoute),
    "Backend": (_ENVOY_GATEWAY, Backend),
    "BackendTLSPolicy": (("gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1alpha3"), BackendTLSPolicy),
    "BackendTrafficPolicy": (_ENVOY_GATEWAY, BackendTrafficPolicy),
    "ClientTrafficPolicy": (_ENVOY_GATEWAY, ClientTrafficPolicy),
    "ReferenceGrant": (
        ("gateway.networking.k8s.io/v1beta1", "gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1alpha2"),
        ReferenceGrant,
    ),
    "ConfigMap": (("v1",), ConfigMap),
    "Secret": (("v1",), Secret),
    "Namespace": (("v1",), Namespace),
}

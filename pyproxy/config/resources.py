"""Typed, frozen resources: what config/ hands to translate/.

Each class mirrors a Gateway API type (Envoy Gateway's kinds are in ``envoygateway.py``, the
kinds read in ``kinds.py``). The parser (``parse.py``) builds them from YAML generically,
driven by these declarations:

- the YAML name of a field is its camelCase spelling (``ca_certificate_refs`` ->
  ``caCertificateRefs``), or ``metadata={"yaml": ...}`` where Python needs another name;
- a field without a default is required;
- ``str`` values are single-line: CR, LF, NUL and other control characters (except TAB) are a
  config error, since such values can reach the wire. ``Text`` allows line breaks (PEM data);
  ``Duration`` is a GEP-2257 duration string (``1h30m``, ``500ms``);
- ``HeaderName`` is an HTTP header name, an RFC 9110 token (the CRDs' HTTPHeaderName);
  ``HeadText`` is a ``str`` the data plane writes into an HTTP/1.1 message head (a header
  value, a Host, a request path, a Location), so it must be latin-1;
- ``GoDuration`` is a Kubernetes ``metav1.Duration`` (Go's ``time.ParseDuration``: ``1.5s``,
  ``300ms``), where Envoy Gateway uses one; ``Quantity`` a size as Envoy Gateway's
  resource.Quantity fields accept it (``32768``, ``32Ki``, ``1Mi``);
- ``Literal[...]`` is an enum; ``tuple[X, ...]`` a list; ``dict[str, V]`` a map;
- what Envoy Gateway has and pyproxy does not implement is refused, not ignored: a class's
  ``NOT_SUPPORTED`` keys, and enum values marked ``Annotated[Literal[...], NotSupported(...)]``,
  are config errors that say "not supported by pyproxy";
- ``UNION`` declares a discriminated union (Envoy Gateway's ``+union``): the ``type`` value
  names the one member field that must be set, and the others must not be;
- a match ``value`` whose ``type`` is RegularExpression must compile with RE2, and a GRPCRoute
  method match names a service or a method (protobuf names when Exact, RE2 patterns
  otherwise) (``checks.py``): what the CRDs' validation would refuse is refused as early as a
  malformed duration.

Semantic checks (references, cross-field rules) belong to translate/, not here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NewType

Text = NewType("Text", str)
Duration = NewType("Duration", str)
GoDuration = NewType("GoDuration", str)
Quantity = NewType("Quantity", str)
HeaderName = NewType("HeaderName", str)
HeadText = NewType("HeadText", str)


@dataclass(frozen=True, slots=True, init=False)
class NotSupported:
    """Marks enum values Envoy Gateway accepts and pyproxy does not implement:
    ``Annotated[Literal["HTTP", "TCP"], NotSupported("GRPC")]``."""

    values: tuple[str, ...]

    def __init__(self, *values: str) -> None:
        object.__setattr__(self, "values", values)

GATEWAY_GROUP = "gateway.networking.k8s.io"
ENVOY_GROUP = "gateway.envoyproxy.io"


@dataclass(frozen=True, slots=True)
class Location:
    file: str
    document: int  # 1-based index of the document in its file
    line: int  # 1-based line of the document's first key
    item: int | None = None  # 0-based index in the ``items`` of a ``kind: List`` document

    @property
    def where(self) -> str:
        """``routes.yaml: document 2``, or ``list.yaml: document 1, items[3]``."""
        where = f"{self.file}: document {self.document}"
        return where if self.item is None else f"{where}, items[{self.item}]"

    def __str__(self) -> str:
        return f"{self.where}, line {self.line}"


@dataclass(frozen=True, slots=True)
class Metadata:
    name: str
    namespace: str = "default"
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, Text] = field(default_factory=dict)
    creation_timestamp: str | None = None  # for route precedence; what else the API server
    # fills in (uid, managedFields, ...) is accepted and ignored (parse.py ``_IGNORED``)


# --------------------------------------------------------------------------- shared references


@dataclass(frozen=True, slots=True)
class ParentReference:
    name: str
    group: str = GATEWAY_GROUP
    kind: str = "Gateway"
    namespace: str | None = None
    section_name: str | None = None
    port: int | None = None


@dataclass(frozen=True, slots=True)
class BackendObjectReference:
    name: str
    group: str = ""
    kind: str = "Service"
    namespace: str | None = None
    port: int | None = None


@dataclass(frozen=True, slots=True)
class BackendRef(BackendObjectReference):
    weight: int = 1


@dataclass(frozen=True, slots=True)
class SecretObjectReference:
    name: str
    group: str = ""
    kind: str = "Secret"
    namespace: str | None = None


@dataclass(frozen=True, slots=True)
class LocalObjectReference:
    group: str
    kind: str
    name: str


@dataclass(frozen=True, slots=True)
class LocalPolicyTargetReferenceWithSectionName:
    group: str
    kind: str
    name: str
    section_name: str | None = None


# --------------------------------------------------------------------------- Gateway


@dataclass(frozen=True, slots=True)
class LabelSelectorRequirement:
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LabelSelector:
    match_labels: dict[str, str] = field(default_factory=dict)
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()


@dataclass(frozen=True, slots=True)
class RouteNamespaces:
    from_: Literal["All", "Same", "Selector"] = field(default="Same", metadata={"yaml": "from"})
    selector: LabelSelector | None = None


@dataclass(frozen=True, slots=True)
class RouteGroupKind:
    kind: str
    group: str = GATEWAY_GROUP


@dataclass(frozen=True, slots=True)
class AllowedRoutes:
    namespaces: RouteNamespaces = field(default_factory=RouteNamespaces)
    kinds: tuple[RouteGroupKind, ...] = ()


@dataclass(frozen=True, slots=True)
class GatewayTLSConfig:
    mode: Literal["Terminate", "Passthrough"] = "Terminate"
    certificate_refs: tuple[SecretObjectReference, ...] = ()
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GatewayListener:
    name: str
    port: int
    protocol: str
    hostname: str | None = None
    tls: GatewayTLSConfig | None = None
    allowed_routes: AllowedRoutes = field(default_factory=AllowedRoutes)


@dataclass(frozen=True, slots=True)
class GatewayAddress:
    value: str
    type: str = "IPAddress"


@dataclass(frozen=True, slots=True)
class GatewaySpec:
    gateway_class_name: str
    listeners: tuple[GatewayListener, ...]
    addresses: tuple[GatewayAddress, ...] = ()


# --------------------------------------------------------------------------- HTTPRoute


@dataclass(frozen=True, slots=True)
class HTTPPathMatch:
    type: Literal["Exact", "PathPrefix", "RegularExpression"] = "PathPrefix"
    value: str = "/"


@dataclass(frozen=True, slots=True)
class HTTPHeaderMatch:
    name: HeaderName
    value: str
    type: Literal["Exact", "RegularExpression"] = "Exact"


@dataclass(frozen=True, slots=True)
class HTTPQueryParamMatch:
    name: str
    value: str
    type: Literal["Exact", "RegularExpression"] = "Exact"


HTTPMethod = Literal["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]


@dataclass(frozen=True, slots=True)
class HTTPRouteMatch:
    path: HTTPPathMatch | None = None  # None: the default PathPrefix "/"
    headers: tuple[HTTPHeaderMatch, ...] = ()
    query_params: tuple[HTTPQueryParamMatch, ...] = ()
    method: HTTPMethod | None = None


@dataclass(frozen=True, slots=True)
class HTTPHeader:
    name: HeaderName
    value: HeadText


@dataclass(frozen=True, slots=True)
class HTTPHeaderFilter:
    set: tuple[HTTPHeader, ...] = ()
    add: tuple[HTTPHeader, ...] = ()
    remove: tuple[HeaderName, ...] = ()


@dataclass(frozen=True, slots=True)
class HTTPPathModifier:
    type: Literal["ReplaceFullPath", "ReplacePrefixMatch"]
    replace_full_path: HeadText | None = None
    replace_prefix_match: HeadText | None = None


@dataclass(frozen=True, slots=True)
class HTTPRequestRedirectFilter:
    scheme: Literal["http", "https"] | None = None
    hostname: HeadText | None = None
    path: HTTPPathModifier | None = None
    port: int | None = None
    status_code: Literal[301, 302, 303, 307, 308] = 302


@dataclass(frozen=True, slots=True)
class HTTPURLRewriteFilter:
    hostname: HeadText | None = None
    path: HTTPPathModifier | None = None


@dataclass(frozen=True, slots=True)
class Fraction:
    numerator: int
    denominator: int = 100


@dataclass(frozen=True, slots=True)
class HTTPRequestMirrorFilter:
    backend_ref: BackendObjectReference
    percent: int | None = None
    fraction: Fraction | None = None


@dataclass(frozen=True, slots=True)
class HTTPCORSFilter:
    allow_origins: tuple[str, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[HeaderName, ...] = ()
    expose_headers: tuple[HeaderName, ...] = ()
    allow_credentials: bool | None = None
    max_age: int = 5


HTTPRouteFilterType = Literal[
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestMirror",
    "RequestRedirect",
    "URLRewrite",
    "ExtensionRef",
    "CORS",
]


@dataclass(frozen=True, slots=True)
class HTTPRouteFilter:
    type: HTTPRouteFilterType
    request_header_modifier: HTTPHeaderFilter | None = None
    response_header_modifier: HTTPHeaderFilter | None = None
    request_mirror: HTTPRequestMirrorFilter | None = None
    request_redirect: HTTPRequestRedirectFilter | None = None
    url_rewrite: HTTPURLRewriteFilter | None = field(default=None, metadata={"yaml": "urlRewrite"})
    extension_ref: LocalObjectReference | None = None
    cors: HTTPCORSFilter | None = field(default=None, metadata={"yaml": "cors"})


@dataclass(frozen=True, slots=True)
class HTTPBackendRef(BackendRef):
    filters: tuple[HTTPRouteFilter, ...] = ()


@dataclass(frozen=True, slots=True)
class HTTPRouteTimeouts:
    request: Duration | None = None
    backend_request: Duration | None = None


@dataclass(frozen=True, slots=True)
class HTTPRouteRetry:
    codes: tuple[int, ...] = ()
    attempts: int | None = None
    backoff: Duration | None = None


@dataclass(frozen=True, slots=True)
class HTTPRouteRule:
    name: str | None = None
    matches: tuple[HTTPRouteMatch, ...] = ()  # empty: one PathPrefix "/" match
    filters: tuple[HTTPRouteFilter, ...] = ()
    backend_refs: tuple[HTTPBackendRef, ...] = ()
    timeouts: HTTPRouteTimeouts | None = None
    retry: HTTPRouteRetry | None = None


@dataclass(frozen=True, slots=True)
class HTTPRouteSpec:
    parent_refs: tuple[ParentReference, ...] = ()
    hostnames: tuple[str, ...] = ()
    rules: tuple[HTTPRouteRule, ...] = ()  # empty: one rule with the default match


# --------------------------------------------------------------------------- GRPCRoute


@dataclass(frozen=True, slots=True)
class GRPCMethodMatch:
    """``service`` and ``method`` empty or omitted match any; at least one must be given
    (``parse.py`` checks it, with the syntax of Exact names and RE2 for RegularExpression)."""

    type: Literal["Exact", "RegularExpression"] = "Exact"
    service: str | None = None
    method: str | None = None


@dataclass(frozen=True, slots=True)
class GRPCRouteMatch:
    method: GRPCMethodMatch | None = None  # None: every service and method
    headers: tuple[HTTPHeaderMatch, ...] = ()  # GRPCHeaderMatch has HTTPHeaderMatch's fields


GRPCRouteFilterType = Literal["RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror", "ExtensionRef"]


@dataclass(frozen=True, slots=True)
class GRPCRouteFilter:
    type: GRPCRouteFilterType
    request_header_modifier: HTTPHeaderFilter | None = None
    response_header_modifier: HTTPHeaderFilter | None = None
    request_mirror: HTTPRequestMirrorFilter | None = None
    extension_ref: LocalObjectReference | None = None


@dataclass(frozen=True, slots=True)
class GRPCBackendRef(BackendRef):
    filters: tuple[GRPCRouteFilter, ...] = ()


@dataclass(frozen=True, slots=True)
class GRPCRouteRule:
    name: str | None = None
    matches: tuple[GRPCRouteMatch, ...] = ()  # empty: every gRPC request
    filters: tuple[GRPCRouteFilter, ...] = ()
    backend_refs: tuple[GRPCBackendRef, ...] = ()


@dataclass(frozen=True, slots=True)
class GRPCRouteSpec:
    parent_refs: tuple[ParentReference, ...] = ()
    hostnames: tuple[str, ...] = ()
    rules: tuple[GRPCRouteRule, ...] = ()  # empty: the route routes nothing


# --------------------------------------------------------------------------- BackendTLSPolicy


@dataclass(frozen=True, slots=True)
class SubjectAltNameSpec:
    type: Literal["Hostname", "URI"]
    hostname: str | None = None
    uri: str | None = None


@dataclass(frozen=True, slots=True)
class BackendTLSPolicyValidation:
    hostname: str
    ca_certificate_refs: tuple[LocalObjectReference, ...] = ()
    well_known_ca_certificates: str | None = field(default=None, metadata={"yaml": "wellKnownCACertificates"})
    subject_alt_names: tuple[SubjectAltNameSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class BackendTLSPolicySpec:
    target_refs: tuple[LocalPolicyTargetReferenceWithSectionName, ...]
    validation: BackendTLSPolicyValidation
    options: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- ReferenceGrant


@dataclass(frozen=True, slots=True)
class ReferenceGrantFrom:
    group: str
    kind: str
    namespace: str


@dataclass(frozen=True, slots=True)
class ReferenceGrantTo:
    group: str
    kind: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ReferenceGrantSpec:
    from_: tuple[ReferenceGrantFrom, ...] = field(metadata={"yaml": "from"})
    to: tuple[ReferenceGrantTo, ...]


# --------------------------------------------------------------------------- top-level kinds


@dataclass(frozen=True, slots=True)
class Gateway:
    metadata: Metadata
    spec: GatewaySpec
    location: Location


@dataclass(frozen=True, slots=True)
class HTTPRoute:
    metadata: Metadata
    spec: HTTPRouteSpec
    location: Location


@dataclass(frozen=True, slots=True)
class GRPCRoute:
    metadata: Metadata
    spec: GRPCRouteSpec
    location: Location


@dataclass(frozen=True, slots=True)
class BackendTLSPolicy:
    metadata: Metadata
    spec: BackendTLSPolicySpec
    location: Location


@dataclass(frozen=True, slots=True)
class ReferenceGrant:
    metadata: Metadata
    spec: ReferenceGrantSpec
    location: Location


@dataclass(frozen=True, slots=True)
class ConfigMap:
    metadata: Metadata
    location: Location
    data: dict[str, Text] = field(default_factory=dict)
    binary_data: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Secret:
    """``data`` holds the base64-decoded values (as text), merged with ``stringData``."""

    metadata: Metadata
    location: Location
    type: str = "Opaque"
    data: dict[str, Text] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Namespace:
    metadata: Metadata
    location: Location


RouteResource = HTTPRoute | GRPCRoute

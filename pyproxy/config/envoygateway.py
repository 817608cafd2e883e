"""Envoy Gateway's kinds (gateway.envoyproxy.io/v1alpha1): Backend, BackendTrafficPolicy and
ClientTrafficPolicy, declared as ``resources.py`` describes.

Field names, shapes and enums are Envoy Gateway's (``api/v1alpha1``). Durations are
``Duration`` (GEP-2257) where Envoy Gateway uses ``gwapiv1.Duration`` and ``GoDuration`` where
it uses ``metav1.Duration`` (the health check and retry timings). Every field Envoy Gateway has
and pyproxy does not implement is refused by name (``NOT_SUPPORTED``, ``NotSupported``), so a
policy never half-applies without saying so. Defaults are applied in translate/, where ``None``
means "not set".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, ClassVar, Literal

from .resources import (
    Duration,
    GoDuration,
    HeaderName,
    HeadText,
    LocalObjectReference,
    LocalPolicyTargetReferenceWithSectionName,
    Location,
    Metadata,
    NotSupported,
    Quantity,
    SecretObjectReference,
    Text,
)

TLSVersion = Literal["Auto", "1.0", "1.1", "1.2", "1.3"]
TargetRef = LocalPolicyTargetReferenceWithSectionName

# --------------------------------------------------------------------------- Backend


@dataclass(frozen=True, slots=True)
class FQDNEndpoint:
    hostname: str
    port: int


@dataclass(frozen=True, slots=True)
class IPEndpoint:
    address: str
    port: int


@dataclass(frozen=True, slots=True)
class UnixSocket:
    path: str


@dataclass(frozen=True, slots=True)
class BackendEndpoint:
    fqdn: FQDNEndpoint | None = None
    ip: IPEndpoint | None = None
    unix: UnixSocket | None = None
    hostname: str | None = None
    zone: str | None = None


@dataclass(frozen=True, slots=True)
class BackendTLSSettings:
    """``spec.tls``, with the v1.6 BackendTLSConfig fields (client certificate, versions)."""

    ca_certificate_refs: tuple[LocalObjectReference, ...] = ()
    well_known_ca_certificates: str | None = field(default=None, metadata={"yaml": "wellKnownCACertificates"})
    insecure_skip_verify: bool = False
    sni: str | None = None
    client_certificate_ref: SecretObjectReference | None = None
    min_version: TLSVersion | None = None
    max_version: TLSVersion | None = None

    NOT_SUPPORTED: ClassVar = ("ciphers", "ecdhCurves", "signatureAlgorithms", "alpnProtocols",
                               "autoSNIFromEndpointHostname")


@dataclass(frozen=True, slots=True)
class BackendSpec:
    type: Literal["Endpoints", "DynamicResolver"] = "Endpoints"
    endpoints: tuple[BackendEndpoint, ...] = ()
    app_protocols: tuple[str, ...] = ()
    fallback: bool | None = None
    tls: BackendTLSSettings | None = None


# --------------------------------------------------------------------------- BackendTrafficPolicy


@dataclass(frozen=True, slots=True)
class ConsistentHashHeader:
    name: HeaderName


@dataclass(frozen=True, slots=True)
class ConsistentHashCookie:
    name: str
    ttl: Duration | None = None
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ConsistentHashSpec:
    type: Annotated[Literal["SourceIP", "Header", "Cookie"], NotSupported("Headers", "QueryParams")]
    header: ConsistentHashHeader | None = None
    cookie: ConsistentHashCookie | None = None

    NOT_SUPPORTED: ClassVar = ("headers", "queryParams", "tableSize")
    UNION: ClassVar = {"Header": "header", "Cookie": "cookie"}


@dataclass(frozen=True, slots=True)
class SlowStart:
    window: Duration


@dataclass(frozen=True, slots=True)
class LoadBalancerSpec:
    type: Annotated[Literal["ConsistentHash", "LeastRequest", "Random", "RoundRobin"],
                    NotSupported("BackendUtilization", "DynamicModule")]
    consistent_hash: ConsistentHashSpec | None = None
    slow_start: SlowStart | None = None

    NOT_SUPPORTED: ClassVar = ("zoneAware", "endpointOverride", "backendUtilization", "dynamicModule")
    UNION: ClassVar = {"ConsistentHash": "consistentHash"}


@dataclass(frozen=True, slots=True)
class HTTPActiveHealthCheckSpec:
    path: HeadText
    hostname: HeadText | None = None
    method: str | None = None
    expected_statuses: tuple[int, ...] = ()

    NOT_SUPPORTED: ClassVar = ("expectedResponse", "retriableStatuses", "requestBody")


@dataclass(frozen=True, slots=True)
class HealthCheckPayload:
    """``binary`` is base64 (decoded in translate/: any bytes, not only text)."""

    type: Literal["Text", "Binary"]
    text: Text | None = None
    binary: str | None = None

    UNION: ClassVar = {"Text": "text", "Binary": "binary"}


@dataclass(frozen=True, slots=True)
class TCPActiveHealthCheckSpec:
    send: HealthCheckPayload | None = None
    receive: HealthCheckPayload | None = None


@dataclass(frozen=True, slots=True)
class HealthCheckOverrides:
    port: int


@dataclass(frozen=True, slots=True)
class ActiveHealthCheckSpec:
    type: Annotated[Literal["HTTP", "TCP"], NotSupported("GRPC")]
    timeout: GoDuration | None = None
    interval: GoDuration | None = None
    unhealthy_threshold: int | None = None
    healthy_threshold: int | None = None
    http: HTTPActiveHealthCheckSpec | None = None
    tcp: TCPActiveHealthCheckSpec | None = None
    overrides: HealthCheckOverrides | None = None

    NOT_SUPPORTED: ClassVar = ("grpc", "initialJitter")
    UNION: ClassVar = {"HTTP": "http", "TCP": "tcp"}


@dataclass(frozen=True, slots=True)
class PassiveHealthCheckSpec:
    interval: GoDuration | None = None
    consecutive_5xx_errors: int | None = field(default=None, metadata={"yaml": "consecutive5XxErrors"})
    consecutive_gateway_errors: int | None = None
    consecutive_local_origin_failures: int | None = None
    base_ejection_time: GoDuration | None = None
    max_ejection_percent: int | None = None
    split_external_local_origin_errors: bool | None = None
    always_eject_one_endpoint: bool | None = None

    NOT_SUPPORTED: ClassVar = ("failurePercentageThreshold",)


@dataclass(frozen=True, slots=True)
class HealthCheckSpec:
    active: ActiveHealthCheckSpec | None = None
    passive: PassiveHealthCheckSpec | None = None
    panic_threshold: int | None = None


RetryTrigger = Annotated[
    Literal["5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "retriable-4xx",
            "refused-stream", "retriable-status-codes"],
    NotSupported("cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"),
]


@dataclass(frozen=True, slots=True)
class RetryOnSpec:
    triggers: tuple[RetryTrigger, ...] = ()
    http_status_codes: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class BackOffSpec:
    base_interval: GoDuration | None = None
    max_interval: GoDuration | None = None


@dataclass(frozen=True, slots=True)
class PerRetrySpec:
    timeout: GoDuration | None = None
    back_off: BackOffSpec | None = None


@dataclass(frozen=True, slots=True)
class RetrySpec:
    num_retries: int | None = None
    retry_on: RetryOnSpec | None = None
    per_retry: PerRetrySpec | None = None

    NOT_SUPPORTED: ClassVar = ("numAttemptsPerPriority",)


@dataclass(frozen=True, slots=True)
class BackendTCPTimeout:
    connect_timeout: Duration | None = None


@dataclass(frozen=True, slots=True)
class BackendHTTPTimeout:
    request_timeout: Duration | None = None
    connection_idle_timeout: Duration | None = None

    NOT_SUPPORTED: ClassVar = ("maxConnectionDuration", "maxStreamDuration", "streamIdleTimeout")


@dataclass(frozen=True, slots=True)
class BackendTimeoutSpec:
    tcp: BackendTCPTimeout | None = None
    http: BackendHTTPTimeout | None = None


@dataclass(frozen=True, slots=True)
class CircuitBreakerSpec:
    max_connections: int | None = None
    max_pending_requests: int | None = None
    max_parallel_requests: int | None = None
    max_parallel_retries: int | None = None

    NOT_SUPPORTED: ClassVar = ("maxRequestsPerConnection", "perEndpoint", "retryBudget")


@dataclass(frozen=True, slots=True)
class DNSSpec:
    dns_refresh_rate: Duration | None = None
    respect_dns_ttl: bool | None = None
    lookup_family: Literal["IPv4", "IPv6", "IPv4Preferred", "IPv6Preferred", "IPv4AndIPv6"] | None = None


@dataclass(frozen=True, slots=True)
class BackendTrafficPolicySpec:
    """Exactly one of ``targetRefs`` and the deprecated ``targetRef`` (``checks.py``)."""

    target_refs: tuple[TargetRef, ...] = ()
    target_ref: TargetRef | None = None
    load_balancer: LoadBalancerSpec | None = None
    health_check: HealthCheckSpec | None = None
    retry: RetrySpec | None = None
    timeout: BackendTimeoutSpec | None = None
    circuit_breaker: CircuitBreakerSpec | None = None
    dns: DNSSpec | None = None

    NOT_SUPPORTED: ClassVar = (
        "targetSelectors", "rateLimit", "faultInjection", "proxyProtocol", "tcpKeepalive", "compression",
        "compressor", "connection", "http2", "httpUpgrade", "responseOverride", "mergeType", "useClientProtocol",
        "telemetry", "requestBuffer", "routingType", "bandwidthLimit", "admissionControl",
    )


# --------------------------------------------------------------------------- ClientTrafficPolicy


@dataclass(frozen=True, slots=True)
class ClientHTTPTimeout:
    request_received_timeout: Duration | None = None
    request_headers_received_timeout: Duration | None = None
    idle_timeout: Duration | None = None

    NOT_SUPPORTED: ClassVar = ("streamIdleTimeout", "maxConnectionDuration")


@dataclass(frozen=True, slots=True)
class ClientTimeoutSpec:
    http: ClientHTTPTimeout | None = None

    NOT_SUPPORTED: ClassVar = ("tcp",)


@dataclass(frozen=True, slots=True)
class ConnectionLimitSpec:
    value: int

    NOT_SUPPORTED: ClassVar = ("closeDelay", "maxConnectionDuration", "maxRequestsPerConnection", "maxStreamDuration")


@dataclass(frozen=True, slots=True)
class ClientConnectionSpec:
    connection_limit: ConnectionLimitSpec | None = None
    buffer_limit: Quantity | None = None

    NOT_SUPPORTED: ClassVar = ("socketBufferLimit", "maxAcceptPerSocketEvent")


@dataclass(frozen=True, slots=True)
class HeaderSettingsSpec:
    with_underscores_action: Literal["Allow", "RejectRequest", "DropHeader"] | None = None
    request_id: Literal["PreserveOrGenerate", "Preserve", "Generate", "Disable"] | None = field(
        default=None, metadata={"yaml": "requestID"})
    max_request_header_limit: Quantity | None = None

    NOT_SUPPORTED: ClassVar = (
        "enableEnvoyHeaders", "disableRateLimitHeaders", "xForwardedClientCert", "preserveXRequestID",
        "earlyRequestHeaders", "lateResponseHeaders", "host",
    )


@dataclass(frozen=True, slots=True)
class XForwardedForSpec:
    num_trusted_hops: int | None = None

    NOT_SUPPORTED: ClassVar = ("trustedCIDRs",)


@dataclass(frozen=True, slots=True)
class ClientIPDetectionSpec:
    x_forwarded_for: XForwardedForSpec | None = None

    NOT_SUPPORTED: ClassVar = ("customHeader",)


@dataclass(frozen=True, slots=True)
class PathSettingsSpec:
    escaped_slashes_action: Literal["KeepUnchanged", "RejectRequest", "UnescapeAndForward",
                                    "UnescapeAndRedirect"] | None = None
    disable_merge_slashes: bool | None = None


@dataclass(frozen=True, slots=True)
class ClientTLSSpec:
    """``alpnProtocols`` unset keeps the listener's default; an empty list turns ALPN off."""

    min_version: TLSVersion | None = None
    max_version: TLSVersion | None = None
    ciphers: tuple[str, ...] = ()
    alpn_protocols: tuple[Literal["http/1.0", "http/1.1", "h2"], ...] | None = None

    NOT_SUPPORTED: ClassVar = ("ecdhCurves", "signatureAlgorithms", "clientValidation", "session", "fingerprints")


@dataclass(frozen=True, slots=True)
class ClientTrafficPolicySpec:
    """Exactly one of ``targetRefs`` and the deprecated ``targetRef`` (``checks.py``)."""

    target_refs: tuple[TargetRef, ...] = ()
    target_ref: TargetRef | None = None
    timeout: ClientTimeoutSpec | None = None
    connection: ClientConnectionSpec | None = None
    headers: HeaderSettingsSpec | None = None
    client_ip_detection: ClientIPDetectionSpec | None = field(default=None, metadata={"yaml": "clientIPDetection"})
    path: PathSettingsSpec | None = None
    tls: ClientTLSSpec | None = None

    NOT_SUPPORTED: ClassVar = (
        "targetSelectors", "tcpKeepalive", "enableProxyProtocol", "proxyProtocol", "http1", "http2", "http3",
        "healthCheck", "scheme",
    )


# --------------------------------------------------------------------------- top-level kinds


@dataclass(frozen=True, slots=True)
class Backend:
    metadata: Metadata
    spec: BackendSpec
    location: Location


@dataclass(frozen=True, slots=True)
class BackendTrafficPolicy:
    metadata: Metadata
    spec: BackendTrafficPolicySpec
    location: Location


@dataclass(frozen=True, slots=True)
class ClientTrafficPolicy:
    metadata: Metadata
    spec: ClientTrafficPolicySpec
    location: Location

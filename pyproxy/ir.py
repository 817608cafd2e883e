"""The intermediate representation: the contract between translate/ and dataplane/.

Plain frozen data. It knows no Gateway API kinds, no sockets and no SSLContexts; the
translator produces it, the data plane compiles it. Names record where things came from
(``httproute/<ns>/<name>/rule/<i>/match/<j>``, ``gateway/<ns>/<name>/<listener>``,
``backend/<ns>/<name>``) so logs, metrics and dumps can point back at the config.

Durations are float seconds. ``None`` means "not set" unless a field says otherwise.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

DEFAULT_ROUTE_TIMEOUT = 15.0
DEFAULT_CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class PathMatch:
    """``kind`` Exact: whole path equal; PathPrefix: element-wise prefix (``/foo`` matches
    ``/foo``, ``/foo/``, ``/foo/bar``, not ``/foobar``); RegularExpression: full match of an
    RE2 pattern (``pyproxy.regex``), as for header and query-parameter values."""

    kind: Literal["Exact", "PathPrefix", "RegularExpression"]
    value: str


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    name: str  # lower-case
    kind: Literal["Exact", "RegularExpression"]
    value: str


@dataclass(frozen=True, slots=True)
class QueryMatch:
    name: str  # case-sensitive
    kind: Literal["Exact", "RegularExpression"]
    value: str


@dataclass(frozen=True, slots=True)
class Match:
    path: PathMatch
    headers: tuple[HeaderMatch, ...] = ()
    query_params: tuple[QueryMatch, ...] = ()
    method: str | None = None


@dataclass(frozen=True, slots=True)
class HeaderMutation:
    """Applied in the order remove, then set, then add (Gateway API allows one action per name).

    ``set`` overwrites, ``add`` appends a value to an existing header (``foo`` + ``bar`` is sent
    as ``foo,bar``) or creates it. Names are lower-case, never ``host`` nor a connection or
    framing header (translate/ refuses those: the data plane writes them)."""

    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PathModifier:
    """``ReplaceFullPath`` replaces the path with ``value``. ``ReplacePrefixMatch`` replaces the
    element-wise ``prefix`` (the rule's PathPrefix match value) with ``value``."""

    kind: Literal["ReplaceFullPath", "ReplacePrefixMatch"]
    value: str
    prefix: str | None = None


@dataclass(frozen=True, slots=True)
class URLRewrite:
    hostname: str | None = None  # the original Host is appended to x-forwarded-host
    path: PathModifier | None = None


@dataclass(frozen=True, slots=True)
class Redirect:
    """A local redirect. ``port`` None means: the scheme's default port when ``scheme`` is set,
    else the listener's port. The default port of the scheme is omitted from Location."""

    status_code: int = 302
    scheme: str | None = None
    hostname: str | None = None
    port: int | None = None
    path: PathModifier | None = None


@dataclass(frozen=True, slots=True)
class DirectResponse:
    status: int
    body: str = ""


@dataclass(frozen=True, slots=True)
class SubjectAltName:
    kind: Literal["Hostname", "URI"]
    value: str


@dataclass(frozen=True, slots=True)
class UpstreamTLS:
    """TLS towards a destination.

    ``sni`` is sent as server name. The peer certificate must carry a DNS SAN equal to ``sni``
    unless ``subject_alt_names`` is non-empty, in which case one of those must match instead.
    ``ca`` is ``"System"`` (OpenSSL default verify paths, certifi when those are empty) or a PEM
    bundle. ``insecure_skip_verify`` turns verification off (explicit user request only, logged
    loudly). ``client_certificate``: the certificate and key presented when the upstream asks
    for one (Backend ``tls.clientCertificateRef``)."""

    sni: str
    ca: str = "System"
    subject_alt_names: tuple[SubjectAltName, ...] = ()
    min_version: Literal["1.0", "1.1", "1.2", "1.3"] = "1.2"
    max_version: Literal["1.0", "1.1", "1.2", "1.3"] = "1.3"
    insecure_skip_verify: bool = False
    client_certificate: Certificate | None = None  # mTLS: presented to the upstream


@dataclass(frozen=True, slots=True)
class Endpoint:
    """``kind`` ip: ``host`` is an address literal; fqdn: a DNS name resolved and refreshed by
    the data plane (every address an endpoint); unix: ``host`` is a socket path, ``port`` 0."""

    kind: Literal["ip", "fqdn", "unix"]
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class DnsSettings:
    """How FQDN endpoints are resolved (BackendTrafficPolicy ``dns``). ``respect_ttl``: the
    answer's TTL (at least 1 s) sets when it is refreshed instead of ``refresh``.
    ``lookup_family``: IPv4 / IPv6 ask for one family; IPv4Preferred / IPv6Preferred ask for
    the other only when the preferred one has no address; IPv4AndIPv6 uses both."""

    refresh: float | None = None  # None: the runtime default (--dns-refresh)
    respect_ttl: bool = False
    lookup_family: Literal["IPv4", "IPv6", "IPv4Preferred", "IPv6Preferred", "IPv4AndIPv6"] = "IPv4Preferred"


@dataclass(frozen=True, slots=True)
class ConsistentHash:
    """What ConsistentHash load balancing hashes: the client address (``SourceIP``), a request
    header (``name``, lower-case) or a cookie (``name``; with ``cookie_ttl`` the proxy sets
    the cookie on the response when the request had none, as Envoy does). A request without
    the header or cookie is balanced as by ``Random``."""

    on: Literal["SourceIP", "Header", "Cookie"]
    name: str | None = None
    cookie_ttl: float | None = None
    cookie_path: str | None = None


@dataclass(frozen=True, slots=True)
class LoadBalancer:
    """How a request's endpoint is chosen among the healthy ones (Envoy's lb_policy).
    ``LeastRequest``: of two endpoints drawn at random, the one with fewer active requests
    (Envoy's default, power of two choices). ``slow_start_window``: an endpoint that (re)joins
    the rotation ramps its share up linearly over this many seconds."""

    kind: Literal["RoundRobin", "Random", "LeastRequest", "ConsistentHash"] = "LeastRequest"
    consistent_hash: ConsistentHash | None = None
    slow_start_window: float | None = None


@dataclass(frozen=True, slots=True)
class HttpHealthCheck:
    """An HTTP probe: ``method`` ``path`` with Host ``hostname`` (None: the endpoint's DNS name
    for FQDN endpoints, else its address); healthy when the status is in
    ``expected_statuses``."""

    path: str
    method: str = "GET"
    expected_statuses: tuple[int, ...] = (200,)
    hostname: str | None = None


@dataclass(frozen=True, slots=True)
class TcpHealthCheck:
    """A TCP probe: connect, write ``send`` (if any), and expect ``receive`` (if any) to be
    contained in what comes back."""

    send: bytes = b""
    receive: bytes = b""


@dataclass(frozen=True, slots=True)
class ActiveHealthCheck:
    """Probes every endpoint each ``interval``; ``unhealthy_threshold`` failures in a row take
    it out of the rotation, ``healthy_threshold`` successes in a row bring it back. Exactly one
    of ``http`` / ``tcp``. ``port``: probe this port instead of the endpoint's."""

    http: HttpHealthCheck | None = None
    tcp: TcpHealthCheck | None = None
    interval: float = 3.0
    timeout: float = 1.0
    unhealthy_threshold: int = 3
    healthy_threshold: int = 1
    port: int | None = None


@dataclass(frozen=True, slots=True)
class PassiveHealthCheck:
    """Outlier detection: an endpoint with ``consecutive_5xx`` 5xx answers in a row,
    ``consecutive_gateway_errors`` 502/503/504 in a row (None: not counted apart), or
    ``consecutive_local_origin_failures`` connect failures, resets or timeouts in a row is
    ejected for ``base_ejection_time`` × the number of times it was ejected; never more than
    ``max_ejection_percent`` of the endpoints at once (Envoy: an ejection that would pass it
    is refused, so 10 % of fewer than 10 endpoints ejects none, unless
    ``always_eject_one_endpoint``). Checked every ``interval``, when ejections end.

    ``split_external_local_origin_errors`` False (Envoy's default): the proxy's own failures
    (connect failure, reset: 503; timeout: 504) count as those 5xx answers, and
    ``consecutive_local_origin_failures`` is not used; True: they count only towards it."""

    interval: float = 3.0
    consecutive_5xx: int = 5
    consecutive_gateway_errors: int | None = None
    consecutive_local_origin_failures: int = 5
    base_ejection_time: float = 30.0
    max_ejection_percent: int = 10
    split_external_local_origin_errors: bool = False
    always_eject_one_endpoint: bool = False


@dataclass(frozen=True, slots=True)
class CircuitBreaker:
    """Envoy's cluster thresholds: connections to the destination, requests waiting for a
    connection, requests in flight, retries in flight. Over ``max_pending_requests`` or
    ``max_parallel_requests``: 503 with flag ``UO``; over ``max_connections`` a request waits
    for one of the open connections (an address with none may always open one); a retry over
    ``max_parallel_retries`` is not attempted."""

    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_parallel_requests: int = 1024
    max_parallel_retries: int = 1024


@dataclass(frozen=True, slots=True)
class Destination:
    """A set of endpoints and how to talk to them (an Envoy cluster).

    ``http2``: the endpoints speak HTTP/2 (an Envoy cluster with HTTP/2 protocol options).
    In clear it is spoken with prior knowledge; over TLS, ALPN offers ``h2`` and
    ``http/1.1`` and the protocol the server selects is spoken (HTTP/1.1 when it selects
    none). Otherwise the endpoints are spoken to in HTTP/1.1 (ALPN ``http/1.1`` over TLS).

    A destination that a BackendTrafficPolicy shapes (load balancing, health checks, circuit
    breaker …) is a destination of its own, named after the Backend and the policy, so that
    its endpoints' health and counters are its own. ``panic_threshold``: when fewer than this
    percentage of the endpoints are healthy, requests are spread over all of them (0: never)."""

    name: str
    endpoints: tuple[Endpoint, ...]
    tls: UpstreamTLS | None = None
    dns: DnsSettings = field(default_factory=DnsSettings)
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    http2: bool = False
    load_balancer: LoadBalancer = field(default_factory=LoadBalancer)
    active_health_check: ActiveHealthCheck | None = None
    passive_health_check: PassiveHealthCheck | None = None
    panic_threshold: float = 50.0
    circuit_breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    idle_timeout: float | None = None  # upstream keep-alive idle; None: the pool's default


@dataclass(frozen=True, slots=True)
class WeightedBackend:
    """One backendRef. ``destination`` None means the ref is invalid: its share of the traffic
    gets ``DirectResponse(invalid_status)``. Per-backendRef header filters apply after the
    rule's."""

    weight: int
    destination: Destination | None
    invalid_status: int = 500
    request_headers: HeaderMutation | None = None
    response_headers: HeaderMutation | None = None


@dataclass(frozen=True, slots=True)
class Forward:
    backends: tuple[WeightedBackend, ...]


@dataclass(frozen=True, slots=True)
class Mirror:
    destination: Destination
    percent: float = 100.0


@dataclass(frozen=True, slots=True)
class Timeouts:
    """``request``: from the end of the client request to the end of the response; ``None``
    disables it. ``backend_request``: per upstream attempt; ``None`` means only ``request``."""

    request: float | None = DEFAULT_ROUTE_TIMEOUT
    backend_request: float | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    """Retries of one request (HTTPRoute ``retry``, BackendTrafficPolicy ``retry``).
    ``retries`` is the number of further attempts after the first (Envoy Gateway maps
    ``attempts`` to Envoy's ``num_retries``). ``on`` lists Envoy's retry triggers: an attempt
    is retried when one of them happened (``retriable-status-codes``: the upstream answered one
    of ``codes``; ``connect-failure``/``reset``: connecting, or the connection, failed before a
    response). ``backoff`` is the base wait before a retry, doubled each time up to
    ``backoff_max`` and jittered (Envoy's exponential back-off); ``per_try_timeout`` bounds
    each attempt. A request whose body is larger than the data plane keeps for replay is sent
    once."""

    retries: int
    codes: tuple[int, ...] = ()
    backoff: float | None = None
    on: tuple[Literal["connect-failure", "reset", "reset-before-request", "5xx", "gateway-error", "retriable-4xx",
                      "refused-stream", "retriable-status-codes"], ...] = (
        "connect-failure", "reset", "retriable-status-codes")
    per_try_timeout: float | None = None
    backoff_max: float | None = None  # None: 10 × backoff, as Envoy


@dataclass(frozen=True, slots=True)
class Cors:
    """The CORS filter: the proxy answers preflight requests itself and adds the
    ``access-control-*`` headers to responses of allowed origins. Origins may hold a ``*``
    wildcard in the host (``https://*.example.com``) or be ``*``; methods and headers may be
    ``*``."""

    allow_origins: tuple[str, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    allow_credentials: bool = False
    max_age: int = 5


Action = Forward | Redirect | DirectResponse


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    match: Match
    action: Action
    request_headers: HeaderMutation | None = None
    response_headers: HeaderMutation | None = None
    url_rewrite: URLRewrite | None = None
    mirrors: tuple[Mirror, ...] = ()
    timeouts: Timeouts = field(default_factory=Timeouts)
    retry: Retry | None = None
    cors: Cors | None = None


@dataclass(frozen=True, slots=True)
class VirtualHost:
    """Routes for one hostname: ``*`` (any host), ``*.example.com`` (suffix, at least one more
    label) or an exact name. ``routes`` are already in precedence order: first match wins."""

    name: str
    hostname: str
    routes: tuple[Route, ...]


@dataclass(frozen=True, slots=True)
class Certificate:
    name: str
    cert_pem: str
    key_pem: str


@dataclass(frozen=True, slots=True)
class ListenerTLS:
    """``min_version``/``max_version``/``ciphers`` (OpenSSL names; empty: OpenSSL's defaults)
    and ``alpn`` (the protocols offered, in order) for the listener's TLS."""

    certificates: tuple[Certificate, ...]
    min_version: Literal["1.0", "1.1", "1.2", "1.3"] = "1.2"
    max_version: Literal["1.0", "1.1", "1.2", "1.3"] = "1.3"
    ciphers: tuple[str, ...] = ()
    alpn: tuple[str, ...] = ("h2", "http/1.1")


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """How a listener treats its clients (ClientTrafficPolicy); ``None`` means the runtime's
    ``Limits`` value, a timeout of 0 none. Listeners sharing a port are one socket: a
    connection takes the settings of the listener its TLS server name selects (HTTPS), else
    of the first listener on the port; the TLS handshake options are the first HTTPS
    listener's (``dataplane/client.py``).

    ``request_headers_timeout``: the whole request head must arrive within it (408 and close);
    ``request_timeout``: the whole request, body included; ``idle_timeout``: a keep-alive
    connection with no request is closed after it. ``connection_limit``: connections served
    at once; one more is closed at once (Envoy's connection limit filter), those served are
    unharmed.
    ``buffer_limit``: per-connection body buffering. ``headers_with_underscores``: Envoy's
    action (RejectRequest → 400, DropHeader, Allow). ``request_id``: what happens to
    ``x-request-id`` (Generate: always a new one; PreserveOrGenerate: the client's is kept;
    Preserve: the client's or none; Disable: none generated, and as in Envoy the client's
    passes too). ``max_request_header_bytes`` → 431.
    ``xff_trusted_hops``: the client address is taken that many hops from the right of
    ``x-forwarded-for`` (0: the peer address). ``escaped_slashes`` (``%2F``, ``%5C``):
    KeepUnchanged, RejectRequest (400), UnescapeAndForward, UnescapeAndRedirect;
    ``merge_slashes``: ``//`` becomes ``/``."""

    request_headers_timeout: float | None = None
    request_timeout: float | None = None
    idle_timeout: float | None = None
    connection_limit: int | None = None
    buffer_limit: int | None = None
    headers_with_underscores: Literal["Allow", "RejectRequest", "DropHeader"] = "RejectRequest"
    request_id: Literal["PreserveOrGenerate", "Preserve", "Generate", "Disable"] = "Generate"
    max_request_header_bytes: int | None = None
    xff_trusted_hops: int = 0
    escaped_slashes: Literal["KeepUnchanged", "RejectRequest", "UnescapeAndForward", "UnescapeAndRedirect"] = (
        "UnescapeAndRedirect")
    merge_slashes: bool = True


@dataclass(frozen=True, slots=True)
class Listener:
    """One Gateway listener (or the implicit one). Listeners sharing an address and port are
    served by one socket; a request goes to the most specific listener whose ``hostname``
    matches its Host (exact, then longest wildcard, then ``None`` = any)."""

    name: str
    address: str
    port: int
    protocol: Literal["HTTP", "HTTPS"]
    virtual_hosts: tuple[VirtualHost, ...]
    hostname: str | None = None
    tls: ListenerTLS | None = None
    client: ClientSettings = field(default_factory=ClientSettings)


@dataclass(frozen=True, slots=True)
class Config:
    listeners: tuple[Listener, ...] = ()


def to_dict(value: object) -> object:
    """The IR as JSON-ready data (for /config_dump and golden files); private keys redacted."""
    if isinstance(value, Certificate):
        return {"name": value.name, "cert_pem": value.cert_pem, "key_pem": "[redacted]"}
    if dataclasses.is_dataclass(value):
        tagged = isinstance(value, (Forward, Redirect, DirectResponse))
        out: dict[str, object] = {"type": type(value).__name__} if tagged else {}
        for f in dataclasses.fields(value):
            out[f.name] = to_dict(getattr(value, f.name))
        return out
    if isinstance(value, tuple):
        return [to_dict(v) for v in value]
    if isinstance(value, bytes):  # health check payloads: text, other bytes as \xNN escapes
        return value.decode("ascii", "backslashreplace")
    return value

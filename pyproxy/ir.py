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
    bundle. ``insecure_skip_verify`` turns verification off (explicit user request only)."""

    sni: str
    ca: str = "System"
    subject_alt_names: tuple[SubjectAltName, ...] = ()
    min_version: Literal["1.2", "1.3"] = "1.2"
    insecure_skip_verify: bool = False


@dataclass(frozen=True, slots=True)
class Endpoint:
    """``kind`` ip: ``host`` is an address literal; fqdn: a DNS name resolved and refreshed by
    the data plane (every address an endpoint); unix: ``host`` is a socket path, ``port`` 0."""

    kind: Literal["ip", "fqdn", "unix"]
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class DnsSettings:
    refresh: float | None = None  # None: the runtime default (--dns-refresh)


@dataclass(frozen=True, slots=True)
class Destination:
    """A set of endpoints and how to talk to them (an Envoy cluster).

    ``http2``: the endpoints speak HTTP/2 (an Envoy cluster with HTTP/2 protocol options).
    In clear it is spoken with prior knowledge; over TLS, ALPN offers ``h2`` and
    ``http/1.1`` and the protocol the server selects is spoken (HTTP/1.1 when it selects
    none). Otherwise the endpoints are spoken to in HTTP/1.1 (ALPN ``http/1.1`` over TLS)."""

    name: str
    endpoints: tuple[Endpoint, ...]
    tls: UpstreamTLS | None = None
    dns: DnsSettings = field(default_factory=DnsSettings)
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    http2: bool = False


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
    """Retries of one request (HTTPRoute ``retry``). ``retries`` is the number of further
    attempts after the first (Envoy Gateway maps ``attempts`` to Envoy's ``num_retries``).
    An attempt is retried when the upstream answers one of ``codes``, or when connecting or
    the connection fails before a response; ``backoff`` is the wait before each retry."""

    retries: int
    codes: tuple[int, ...] = ()
    backoff: float | None = None


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
    certificates: tuple[Certificate, ...]


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
    return value

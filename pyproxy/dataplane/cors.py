"""The HTTPRoute CORS filter: preflight requests answered by the proxy (200 with the policy
for an allowed origin, 403 otherwise), ``access-control-*`` headers added to the responses of
allowed origins. Other requests from an origin that is not allowed pass through untouched (the
browser enforces the missing headers)."""
from __future__ import annotations

from .. import ir


def _split_origin(origin: str) -> tuple[str, str, str] | None:
    """(scheme, host, port) of an Origin, the port made explicit."""
    scheme, sep, rest = origin.partition("://")
    if not sep or not rest or "/" in rest:
        return None
    host, _, port = rest.rpartition(":") if rest.rfind(":") > rest.rfind("]") else (rest, "", "")
    if not port:
        port = {"http": "80", "https": "443"}.get(scheme.lower(), "")
    return scheme.lower(), host.lower(), port


class CompiledCors:
    __slots__ = ("any_origin", "origins", "methods", "headers", "expose", "credentials", "max_age")

    def __init__(self, cors: ir.Cors) -> None:
        self.any_origin = "*" in cors.allow_origins
        self.origins = tuple(p for p in (_split_origin(o) for o in cors.allow_origins if o != "*") if p)
        self.methods = cors.allow_methods
        self.headers = cors.allow_headers
        self.expose = cors.expose_headers
        self.credentials = cors.allow_credentials
        self.max_age = cors.max_age

    def allows(self, origin: str) -> bool:
        """Exact origins, ``*``, or a host wildcard (``https://*.example.com`` matches any
        number of labels before ``.example.com``); scheme and port must match."""
        if self.any_origin:
            return True
        parts = _split_origin(origin)
        if parts is None:
            return False
        scheme, host, port = parts
        for p_scheme, p_host, p_port in self.origins:
            if p_scheme != scheme or p_port != port:
                continue
            wildcard = p_host.startswith("*.") and host.endswith(p_host[1:]) and len(host) > len(p_host) - 1
            if p_host == host or wildcard:
                return True
        return False

    def _common(self, origin: bytes) -> list[tuple[bytes, bytes]]:
        out = [(b"access-control-allow-origin", origin)]
        if self.credentials:
            out.append((b"access-control-allow-credentials", b"true"))
        if self.expose:
            out.append((b"access-control-expose-headers", ", ".join(self.expose).encode("latin-1")))
        return out

    def preflight(self, origin: bytes, method: bytes, request_headers: bytes | None) -> list[tuple[bytes, bytes]]:
        """Headers of the proxy's answer to an allowed preflight. Wildcard methods or headers
        answer with what was asked (``*`` is not honoured by browsers for credentialed
        requests)."""
        out = self._common(origin)
        methods = method if "*" in self.methods else ", ".join(self.methods).encode("latin-1")
        if methods:
            out.append((b"access-control-allow-methods", methods))
        if "*" in self.headers:
            if request_headers:
                out.append((b"access-control-allow-headers", request_headers))
        elif self.headers:
            out.append((b"access-control-allow-headers", ", ".join(self.headers).encode("latin-1")))
        out.append((b"access-control-max-age", str(self.max_age).encode()))
        return out

    def response(self, origin: bytes) -> list[tuple[bytes, bytes]]:
        """Headers added to the upstream's response for an allowed origin."""
        return self._common(origin)


def request_origin(headers: list[tuple[bytes, bytes]]) -> tuple[bytes | None, bytes | None, bytes | None]:
    """(Origin, Access-Control-Request-Method, Access-Control-Request-Headers) of a request;
    an empty value counts as absent (as Envoy does)."""
    origin = method = req_headers = None
    for name, value in headers:
        if name == b"origin":
            origin = value or None
        elif name == b"access-control-request-method":
            method = value or None
        elif name == b"access-control-request-headers":
            req_headers = value or None
    return origin, method, req_headers

"""Where a request goes, decided without I/O and shared by every downstream protocol: the
listener (by Host, checked against the TLS server name), the virtual host and route, the
route's CORS, redirect or direct response, and the backend.

``decide`` raises the ``ProxyError`` to answer with (``NoRoute``, ``Misdirected``,
``CorsForbidden``, ``InvalidBackend``), returns a ``Local`` answer the proxy writes itself
(a redirect, a direct response, a CORS preflight), or returns ``None`` with the exchange's
route and backend set: forward it.
"""
from __future__ import annotations

from .. import errors
from .compile import DIRECT, REDIRECT, Snapshot
from .cors import CompiledCors, request_origin
from .exchange import Exchange
from .filters import redirect_location

Headers = list[tuple[bytes, bytes]]


class Local:
    """An answer the proxy writes itself that is not an error."""

    __slots__ = ("status", "body", "headers", "details")

    def __init__(self, status: int, body: bytes = b"", headers: Headers | None = None,
                 details: str = "direct_response") -> None:
        self.status = status
        self.body = body
        self.headers = headers
        self.details = details


def decide(snapshot: Snapshot, group_key: tuple[str, int], sni: str | None, scheme: str, ex: Exchange) -> Local | None:
    head = ex.head
    if head.path_rejected:
        # the listener's escaped_slashes action is RejectRequest (Envoy: an empty 400)
        return Local(400, details="path_normalization_failed")
    if head.redirect is not None:
        # UNESCAPE_AND_REDIRECT (Envoy Gateway's default): an escaped slash or backslash in the
        # path is answered with a redirect to the unescaped, normalised path (never matched as is)
        return Local(307, headers=[(b"location", head.redirect.encode("latin-1"))],
                     details="path_normalization_redirect")
    group = snapshot.groups.get(group_key)
    listener = group.listeners.find(head.host) if group is not None else None
    if listener is not None and sni is not None and group is not None and group.listeners.find(sni) is not listener:
        raise errors.Misdirected()
    vhost = listener.vhosts.find(head.host) if listener is not None else None
    route = vhost.match(head.method, head.path, head.query, head.headers) if vhost is not None else None
    if route is None:
        raise errors.NoRoute()
    ex.route = route
    if route.cors is not None:
        preflight = _cors(ex, route.cors)
        if preflight is not None:
            return preflight
    if route.kind == REDIRECT:
        assert route.redirect is not None
        location = redirect_location(route.redirect, scheme, head.host, group_key[1], head.path, head.query)
        return Local(route.redirect.status_code, headers=[(b"location", location.encode("latin-1"))])
    if route.kind == DIRECT:
        assert route.direct is not None
        return Local(route.direct.status, route.direct.body.encode())
    backend = route.pick()
    ex.backend = backend
    if backend.destination is None:
        raise errors.InvalidBackend(backend.invalid_status)
    ex.response_filters = backend.response_filters
    return None


def _cors(ex: Exchange, cors: CompiledCors) -> Local | None:
    """Apply the route's CORS filter: a preflight is the proxy's to answer (200 with the
    policy, or 403 for another origin); an allowed origin's responses get the headers."""
    origin, method, request_headers = request_origin(ex.head.headers)
    if origin is None:
        return None
    allowed = cors.allows(origin.decode("latin-1"))
    if ex.head.method == "OPTIONS" and method is not None:
        if not allowed:
            raise errors.CorsForbidden()
        return Local(200, headers=cors.preflight(origin, method, request_headers), details="cors_response")
    if allowed:
        ex.cors_headers = cors.response(origin)
    return None

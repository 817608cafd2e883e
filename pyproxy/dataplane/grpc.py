"""gRPC requests answered by the proxy itself. As Envoy does for a request whose content-type
is ``application/grpc`` (or ``application/grpc+proto``, ``application/grpc;...``), a local
reply becomes a gRPC status: HTTP 200, ``content-type: application/grpc``, ``grpc-status``
from the HTTP status by Envoy's mapping (``Grpc::Utility::httpToGrpcStatus``, itself gRPC's
``doc/http-grpc-status-mapping.md``) and ``grpc-message`` the reply's body, percent-encoded;
sent as a trailers-only response (on HTTP/2 one HEADERS frame with END_STREAM).

One departure from that table: the proxy's own 504 (a route or backend request timeout; an
upstream's 504 is relayed, not converted) is ``4 DEADLINE_EXCEEDED``, where Envoy's table
says 14: a call whose time ran out is reported as a gRPC client reports its own deadline."""
from __future__ import annotations

Headers = list[tuple[bytes, bytes]]

UNKNOWN = 2
# HTTP status -> gRPC status code; any other status is UNKNOWN
HTTP_TO_GRPC = {
    400: 13,  # INTERNAL
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 12,  # UNIMPLEMENTED
    429: 14,  # UNAVAILABLE
    502: 14,
    503: 14,
    504: 4,  # DEADLINE_EXCEEDED: only the proxy's own timeouts answer 504 locally
}
_CONTENT_TYPE = b"application/grpc"


def is_grpc(headers: Headers) -> bool:
    """Whether the request is a gRPC call (Envoy's ``Grpc::Common::hasGrpcContentType``)."""
    for name, value in headers:
        if name == b"content-type":
            return value.startswith(_CONTENT_TYPE) and value[16:17] in (b"", b"+", b";")
    return False


def status_headers(status: int, message: bytes) -> Headers:
    """The gRPC status fields of a local reply with HTTP ``status`` and body ``message``."""
    out = [(b"content-type", _CONTENT_TYPE), (b"grpc-status", b"%d" % HTTP_TO_GRPC.get(status, UNKNOWN))]
    if message:
        out.append((b"grpc-message", percent_encode(message)))
    return out


def percent_encode(message: bytes) -> bytes:
    """gRPC's encoding of ``grpc-message``: bytes outside printable ASCII, and ``%``, as %XX."""
    return b"".join(b"%%%02X" % c if c < 0x20 or c > 0x7E or c == 0x25 else bytes((c,)) for c in message)

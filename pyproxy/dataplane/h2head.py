"""An HTTP/2 request's header list as the request head an HTTP/1.1 request would have: the
pseudo-headers become the method, the target and Host, split ``cookie`` fields are joined
into one, and header names with ``_`` get the listener's action. ``framing.validate`` then
checks the head as it checks an HTTP/1.1 one. No I/O."""
from __future__ import annotations

from .client import REJECT
from .framing import RequestHead


def request_head(headers: list[tuple[bytes, bytes]], underscores: int) -> tuple[RequestHead, bytes, bool]:
    """The head (method and headers filled in, Host first), the ``:path`` to validate, and
    whether a header name holds ``_`` where the listener rejects such requests (Envoy resets
    the stream then). With DropHeader such a header is left out; with Allow it is kept."""
    head = RequestHead()
    pseudo: dict[bytes, bytes] = {}
    regular: list[tuple[bytes, bytes]] = []
    cookies: list[bytes] = []
    rejected = False
    for name, value in headers:
        if name[:1] == b":":
            pseudo[name] = value
        elif underscores and b"_" in name:
            rejected = rejected or underscores == REJECT
        elif name == b"cookie":
            cookies.append(value)  # HTTP/2 may split it; HTTP/1.1 upstream gets one line
        elif name != b"host":
            regular.append((name, value))
        elif b":authority" not in pseudo:
            pseudo[b":authority"] = value
    if cookies:
        regular.append((b"cookie", b"; ".join(cookies)))
    head.method = pseudo.get(b":method", b"").decode("latin-1")
    authority = pseudo.get(b":authority")
    head.headers = ([(b"host", authority)] if authority is not None else []) + regular
    return head, pseudo.get(b":path", b""), rejected

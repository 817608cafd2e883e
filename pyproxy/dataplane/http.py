"""HTTP/1.1 message rules shared by both sides: header tables, request-target and Host
validation, path normalisation, local replies. Pure functions and constants."""
from __future__ import annotations

import http
import re
import time

from ..errors import BadRequest
from ..observe import PerSecond

# Never forwarded in either direction: hop-by-hop, and framing that we redo ourselves.
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te", b"trailer",
     b"content-length"}
)
# Request headers we drop because we set them ourselves (Envoy with use_remote_address: true)
# or handle ourselves (Expect: we answer 100-continue).
# (``x-forwarded-proto`` and ``x-request-id`` are the client's to keep in some listener
# settings: ``encode.upstream_request`` decides.)
REQUEST_OWNED = HOP_BY_HOP | {b"host", b"expect", b"x-envoy-internal"}

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # what an HTTP/2 connection opens with (RFC 9113 3.4)
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})

_HOST_RE = re.compile(
    rb"^(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*(?::[0-9]*)?$|^\[[0-9A-Fa-f:.]+\](?::[0-9]*)?$"
)
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

REASONS = {s.value: s.phrase.encode() for s in http.HTTPStatus}


def valid_host(host: bytes) -> bool:
    return _HOST_RE.match(host) is not None


_NO_TOKENS: frozenset[bytes] = frozenset()
# Connection values that nominate nothing beyond HOP_BY_HOP (by far the most common ones)
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"Keep-Alive", b"close", b"Close", b"upgrade", b"Upgrade"})


def connection_tokens(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names nominated by ``Connection`` (RFC 9110 §7.6.1: removed by intermediaries),
    besides those in ``HOP_BY_HOP`` (which every caller drops anyway)."""
    tokens: set[bytes] | None = None
    for name, value in headers:
        if name == b"connection" and value not in _PLAIN_CONNECTION:
            if tokens is None:
                tokens = set()
            tokens.update(t.strip().lower() for t in value.split(b","))
    # most messages have no Connection header or a plain one: no set built (1.9 -> 0.4 us a call)
    return _NO_TOKENS if tokens is None else frozenset(tokens)


_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


def _decode_escape(m: re.Match) -> str:
    byte = int(m.group(1), 16)
    return chr(byte) if byte in _UNRESERVED else m.group(0).upper()


def _decode_unreserved(path: str) -> str:
    """Decode percent-escapes of unreserved characters only (RFC 3986 §6.2.2.2); ``%2F`` and
    friends stay encoded (upper-cased) so a path can never gain a separator. Only exactly two
    hex digits make an escape (``int()`` would also take ``+e`` or `` e``)."""
    return _ESCAPE.sub(_decode_escape, path)


_ESCAPED_SLASH = re.compile(r"%(?:2[Ff]|5[Cc])")


def _unescape_slash(m: re.Match) -> str:
    return "/" if m.group(0)[2] in "Ff" else "\\"


def normalize_path(path: str, unescape: bool = True, merge: bool = True) -> tuple[str, bool]:
    """Envoy's path normalisation, in Envoy's order: escaped slashes (``%2F``, ``%5C``, any
    case) unescaped when ``unescape`` (Envoy Gateway's default ``UNESCAPE_AND_REDIRECT``),
    then ``normalize_path`` (unreserved escapes decoded, ``\\`` taken as ``/`` as browsers and
    Envoy's URL canonicaliser do, dot segments removed) and, when ``merge``, ``merge_slashes``.
    Returns the normalised path, what routes match and the upstream receives, and whether an
    escaped slash was unescaped: the listener's ``escaped_slashes`` action says whether such a
    request is redirected to the normalised path (so a path is never matched in one shape and
    served in another), refused, or forwarded. Without ``unescape`` a ``%2F`` stays one
    (upper-cased), a part of its segment."""
    escaped = False
    if "%" in path:
        if unescape:
            unescaped = _ESCAPED_SLASH.sub(_unescape_slash, path)
            escaped = unescaped != path
            path = unescaped
        path = _decode_unreserved(path)
    if "\\" in path:
        path = path.replace("\\", "/")
    if "/." not in path and ("//" not in path or not merge):
        return path, escaped
    segments: list[str] = []
    parts = path.split("/")
    for seg in parts[1:]:
        if seg == "..":
            if segments:
                segments.pop()
        elif seg != "." and (seg or not merge):
            segments.append(seg)
    out = "/" + "/".join(segments)
    if parts[-1] in (".", "..") or (merge and parts[-1] == "" and len(parts) > 2):
        if not out.endswith("/"):
            out += "/"
    return out, escaped


def split_target(target: bytes) -> tuple[str, str]:
    """An origin-form request-target as (path, query) text; the fragment is dropped."""
    text = target.decode("latin-1")
    hash_at = text.find("#")
    if hash_at >= 0:
        text = text[:hash_at]
    q = text.find("?")
    if q >= 0:
        return text[:q], text[q + 1:]
    return text, ""


def parse_absolute(target: bytes) -> tuple[bytes, bytes]:
    """Split ``http://authority/path?q`` into (authority, origin-form target)."""
    rest = target.split(b"://", 1)[1]
    slash = rest.find(b"/")
    qmark = rest.find(b"?")
    cut = min(x for x in (slash, qmark, len(rest)) if x >= 0)
    authority, path = rest[:cut], rest[cut:]
    if b"@" in authority:
        raise BadRequest("userinfo in absolute-form request-target")
    if not path.startswith(b"/"):
        path = b"/" + path
    return authority, path


_WEEKDAYS = (b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun")
_MONTHS = (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec")


def imf_fixdate(seconds: float) -> bytes:
    """RFC 9110's IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``): English names whatever the
    locale. Formatted here rather than by ``email.utils.formatdate``, whose package a serving
    process otherwise never imports (0.1 MiB of RSS, 0.7 with the admin on)."""
    t = time.gmtime(seconds)
    return b"%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        _WEEKDAYS[t.tm_wday], t.tm_mday, _MONTHS[t.tm_mon - 1], t.tm_year, t.tm_hour, t.tm_min, t.tm_sec)


DATE = PerSecond(imf_fixdate)  # the ``date`` header value


def local_reply(status: int, body: bytes = b"", *, close: bool = False,
                extra: list[tuple[bytes, bytes]] | None = None) -> bytes:
    """A complete response generated by the proxy: fixed body, never request bytes."""
    lines = [b"HTTP/1.1 %d %s" % (status, REASONS.get(status, b"Unknown")), b"content-length: %d" % len(body)]
    if body:
        lines.append(b"content-type: text/plain")
    lines.append(b"date: " + DATE.get())
    if extra:
        lines.extend(name + b": " + value for name, value in extra)
    if close:
        lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body

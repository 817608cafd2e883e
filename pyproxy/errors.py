"""Errors that carry their answer: a config error carries its messages, a proxy error the
HTTP status (and fixed body) the client gets."""
from __future__ import annotations


class ConfigError(Exception):
    """Invalid configuration: every problem found, each message naming file, document, line
    and field."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("\n".join(messages))
        self.messages = messages


class ProxyError(Exception):
    """A failure answered with a local reply. ``flags`` is Envoy's %RESPONSE_FLAGS% code."""

    status = 500
    flags = "-"
    body = ""
    close = False  # close the downstream connection after answering

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.body or self.__class__.__name__)
        self.detail = detail


# ------------------------------------------------------------------ downstream (client) errors


class BadRequest(ProxyError):
    """Malformed or ambiguous request: answered and the connection closed."""

    status = 400
    flags = "DPE"
    close = True


class RequestTimeout(ProxyError):
    status = 408
    close = True


class UriTooLong(ProxyError):
    status = 414
    flags = "DPE"
    close = True


class HeadersTooLarge(ProxyError):
    status = 431
    flags = "DPE"
    close = True


class NotImplementedCoding(ProxyError):
    """A Transfer-Encoding we do not implement (RFC 9112 §6.1: 501)."""

    status = 501
    flags = "DPE"
    close = True


class InternalError(ProxyError):
    """A bug in pyproxy while handling a request: logged with its traceback, answered 500."""

    status = 500
    close = True


# ------------------------------------------------------------------ routing results


class NoRoute(ProxyError):
    status = 404
    flags = "NR"


# ------------------------------------------------------------------ upstream errors


class UpstreamConnectError(ProxyError):
    """Connect, TLS handshake or certificate verification failed (Envoy UF)."""

    status = 503
    flags = "UF"

    def __init__(self, reason: str = "connection failure", transport_reason: str = "") -> None:
        body = "upstream connect error or disconnect/reset before headers. reset reason: " + reason
        if transport_reason:
            body += ", transport failure reason: " + transport_reason
        self.body = body
        self.transport_reason = transport_reason
        super().__init__(body)


class UpstreamOverflow(ProxyError):
    """The upstream address is at its connection limit and its queue of waiting requests is
    full (an Envoy circuit breaker, flag UO). Like Envoy, never retried."""

    status = 503
    flags = "UO"
    body = "upstream connect error or disconnect/reset before headers. reset reason: overflow"


class UpstreamReset(ProxyError):
    """The upstream closed or reset before the response headers (Envoy UC)."""

    status = 503
    flags = "UC"
    body = "upstream connect error or disconnect/reset before headers. reset reason: connection termination"


class UpstreamProtocolError(ProxyError):
    """The upstream sent something that is not valid HTTP/1.1 (Envoy UPE)."""

    status = 502
    flags = "UPE"
    body = "upstream connect error or disconnect/reset before headers. reset reason: protocol error"


class UpstreamTimeout(ProxyError):
    status = 504
    flags = "UT"
    body = "upstream request timeout"


class NoHealthyUpstream(ProxyError):
    """No usable endpoint (DNS gave nothing yet, or every endpoint is down)."""

    status = 503
    flags = "UH"
    body = "no healthy upstream"

"""Errors that carry their answer: a config error carries its messages, a proxy error the
HTTP status (and fixed body) the client gets."""
from __future__ import annotations

import copy


class ConfigError(Exception):
    """Invalid configuration: every problem found, each message naming file, document, line
    and field."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("\n".join(messages))
        self.messages = messages


class ProxyError(Exception):
    """A failure answered with a local reply. ``flags`` is Envoy's %RESPONSE_FLAGS% code,
    ``details`` its %RESPONSE_CODE_DETAILS%."""

    status = 500
    flags = "-"
    details = ""
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
    details = "http1.codec_error"
    close = True


class RequestTimeout(ProxyError):
    """The request head (or a body gone silent) did not arrive in time."""

    status = 408
    details = "request_header_timeout"
    close = True


class RequestBodyTimeout(RequestTimeout):
    details = "request_body_timeout"


class RequestOverallTimeout(RequestTimeout):
    """The whole request was not received within the listener's ``request_timeout`` (Envoy's
    ``request_timeout``, ClientTrafficPolicy ``requestReceivedTimeout``)."""

    details = "request_overall_timeout"
    body = "request timeout"


class StreamIdleTimeout(ProxyError):
    """No byte moved either way for ``stream_idle_timeout`` (Envoy's SI)."""

    status = 408
    flags = "SI"
    details = "stream_idle_timeout"
    body = "stream timeout"
    close = True


class UriTooLong(ProxyError):
    status = 414
    flags = "DPE"
    details = "http1.codec_error"
    close = True


class HeadersTooLarge(ProxyError):
    status = 431
    flags = "DPE"
    details = "http1.headers_too_large"
    close = True


class NotImplementedCoding(ProxyError):
    """A Transfer-Encoding we do not implement (RFC 9112 §6.1: 501)."""

    status = 501
    flags = "DPE"
    details = "http1.invalid_transfer_encoding"
    close = True


class InternalError(ProxyError):
    """A bug in pyproxy while handling a request: logged with its traceback, answered 500."""

    status = 500
    details = "internal_error"
    close = True


# ------------------------------------------------------------------ routing results


class NoRoute(ProxyError):
    status = 404
    flags = "NR"
    details = "route_not_found"


class Misdirected(ProxyError):
    """The Host names another listener than the one TLS (SNI) selected (RFC 9110 §15.5.20)."""

    status = 421
    details = "misdirected_request"


class CorsForbidden(ProxyError):
    """A CORS preflight from an origin the route does not allow."""

    status = 403
    details = "cors_origin_not_allowed"


class InvalidBackend(ProxyError):
    """The share of traffic of a backendRef that did not resolve (Envoy Gateway's 500)."""

    status = 500
    details = "direct_response"

    def __init__(self, status: int = 500) -> None:
        super().__init__("invalid backend")
        self.status = status


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
        cause = reason.replace(" ", "_") + ("," + transport_reason if transport_reason else "")
        self.details = "upstream_reset_before_response_started{" + cause + "}"
        super().__init__(body)


class UpstreamOverflow(ProxyError):
    """A circuit breaker of the destination is open: too many requests waiting for a
    connection, or in flight (Envoy's reset reason ``overflow``, flag UO). Like Envoy, never
    retried."""

    status = 503
    flags = "UO"
    details = "upstream_reset_before_response_started{overflow}"
    body = "upstream connect error or disconnect/reset before headers. reset reason: overflow"


class UpstreamReset(ProxyError):
    """The upstream closed or reset before the response headers (Envoy UC)."""

    status = 503
    flags = "UC"
    details = "upstream_reset_before_response_started{connection_termination}"
    body = "upstream connect error or disconnect/reset before headers. reset reason: connection termination"


class UpstreamStreamReset(UpstreamReset):
    """An HTTP/2 upstream reset the stream before the response headers (Envoy UR): answered
    and retried as a connection reset on HTTP/1.1 is."""

    flags = "UR"
    details = "upstream_reset_before_response_started{remote_reset}"
    body = "upstream connect error or disconnect/reset before headers. reset reason: remote reset"


class UpstreamRefused(UpstreamReset):
    """An HTTP/2 upstream refused the stream (RST_STREAM REFUSED_STREAM, or a GOAWAY whose
    last stream id is below it): it was never processed, so it is safe to send again."""

    flags = "UR"
    details = "upstream_reset_before_response_started{remote_refused_stream_reset}"
    body = "upstream connect error or disconnect/reset before headers. reset reason: remote refused stream reset"


class UpstreamProtocolError(ProxyError):
    """The upstream sent something that is not valid HTTP/1.1 or HTTP/2 (Envoy UPE)."""

    status = 502
    flags = "UPE"
    details = "upstream_reset_before_response_started{protocol_error}"
    body = "upstream connect error or disconnect/reset before headers. reset reason: protocol error"


class UpstreamTimeout(ProxyError):
    """The route's request timeout passed before the response ended (Envoy UT)."""

    status = 504
    flags = "UT"
    details = "upstream_response_timeout"
    body = "upstream request timeout"


class UpstreamPerTryTimeout(UpstreamTimeout):
    """One attempt's timeout (``perRetry.timeout`` / ``backendRequest``) passed before its
    response began: retried like a reset when the retry policy says so, else answered 504."""

    details = "upstream_per_try_timeout"


class NoHealthyUpstream(ProxyError):
    """No usable endpoint (DNS gave nothing yet, or every endpoint is down)."""

    status = 503
    flags = "UH"
    details = "no_healthy_upstream"
    body = "no healthy upstream"


# ------------------------------------------------------------------ answers after retries

_BEFORE_HEADERS = "upstream connect error or disconnect/reset before headers. "
_EARLY = "upstream_reset_before_response_started"


def answered(error: ProxyError, *, retried: bool, flags: str, late: bool) -> ProxyError:
    """``error`` as the client gets it. After at least one retry Envoy's reset bodies say
    ``retried and the latest reset reason: …``; ``flags`` (URX, UO: retries not made) join
    its own; ``late``: the response had begun, so the details say
    ``upstream_reset_after_response_started``. A copy when anything changes: error instances
    may be shared."""
    say_retried = retried and error.body.startswith(_BEFORE_HEADERS + "reset reason: ")
    late_details = late and error.details.startswith(_EARLY)
    if not say_retried and not flags and not late_details:
        return error
    again = copy.copy(error)
    if say_retried:
        again.body = _BEFORE_HEADERS + "retried and the latest " + error.body[len(_BEFORE_HEADERS):]
    if flags:
        again.flags = join_flags(error.flags, flags)
    if late_details:
        again.details = "upstream_reset_after_response_started" + error.details[len(_EARLY):]
    return again


# Envoy prints %RESPONSE_FLAGS% in the order of its flag table, joined by commas.
_FLAG_ORDER = ("LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE", "DC", "URX",
               "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR")


def join_flags(*flags: str) -> str:
    """Response flags combined as Envoy prints them (``UF,URX``); ``-`` when none."""
    found = {code for group in flags for code in group.split(",") if code and code != "-"}
    ordered = [code for code in _FLAG_ORDER if code in found]
    ordered += sorted(found.difference(_FLAG_ORDER))
    return ",".join(ordered) or "-"

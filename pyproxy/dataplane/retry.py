"""A route's retry policy compiled for the request path: which answers and which failures
are retried (Envoy's ``retry_on`` triggers), and the back-off between attempts.

The decisions follow Envoy's ``RetryStateImpl``:

* a status is retried under ``5xx`` (500-599), ``gateway-error`` (502, 503, 504),
  ``retriable-4xx`` (409) and ``retriable-status-codes`` (the policy's ``codes``);
* a failed connect (refused, TLS, connect timeout) under ``connect-failure``, and like any
  other failure under the triggers below;
* a failure before any request byte was sent under ``reset-before-request``;
* any reset, a protocol error of the upstream or an attempt's own timeout under ``reset``,
  ``5xx`` and ``gateway-error``;
* an HTTP/2 stream the upstream refused under ``refused-stream``;
* never an overflow (a circuit breaker), the route's timeout, or having no endpoint.

The back-off is Envoy's fully jittered exponential one: the n-th retry waits a uniformly
random time in [0, interval), the interval starting at the base (25 ms unless set) and
doubling per retry up to the maximum (10 × the base unless set).
"""
from __future__ import annotations

from .. import errors, ir

DEFAULT_BASE = 0.025  # Envoy's default base interval (runtime upstream.base_retry_backoff_ms)
GATEWAY_ERRORS = frozenset((502, 503, 504))
_RESETS = (errors.UpstreamReset, errors.UpstreamProtocolError, errors.UpstreamPerTryTimeout)


class RetryPolicy:
    """``ir.Retry`` with its triggers as flags and its intervals resolved."""

    __slots__ = ("retries", "codes", "base", "max", "per_try_timeout", "connect_failure", "reset",
                 "reset_before_request", "any_5xx", "gateway_error", "retriable_4xx", "refused_stream")

    def __init__(self, retry: ir.Retry) -> None:
        on = set(retry.on)
        self.retries = retry.retries
        self.codes = frozenset(retry.codes) if "retriable-status-codes" in on else frozenset()
        self.base = retry.backoff if retry.backoff is not None else DEFAULT_BASE
        self.max = retry.backoff_max if retry.backoff_max is not None else 10 * self.base
        self.per_try_timeout = retry.per_try_timeout
        self.connect_failure = "connect-failure" in on
        self.reset = "reset" in on
        self.reset_before_request = "reset-before-request" in on
        self.any_5xx = "5xx" in on
        self.gateway_error = "gateway-error" in on
        self.retriable_4xx = "retriable-4xx" in on
        self.refused_stream = "refused-stream" in on

    def retries_status(self, status: int) -> bool:
        """Whether an upstream answer with ``status`` is dropped and the request sent again."""
        return ((self.any_5xx and 500 <= status < 600) or (self.gateway_error and status in GATEWAY_ERRORS)
                or (self.retriable_4xx and status == 409) or status in self.codes)

    def retries_failure(self, error: errors.ProxyError, started: bool) -> bool:
        """Whether a failed attempt is tried again; ``started``: a request byte was sent
        upstream (on this attempt or an earlier one)."""
        if isinstance(error, errors.UpstreamConnectError):
            if self.connect_failure:
                return True
        elif not isinstance(error, _RESETS):
            return False  # an overflow, the route's timeout, no endpoint
        if self.reset_before_request and not started:
            return True
        if self.reset or self.any_5xx or self.gateway_error:
            return True
        return self.refused_stream and isinstance(error, errors.UpstreamRefused)

    def next_interval(self, interval: float) -> float:
        """The back-off interval of the retry after one that used ``interval``."""
        return min(interval * 2, self.max)


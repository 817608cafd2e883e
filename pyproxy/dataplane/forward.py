"""Forwarding one exchange upstream: the part of a downstream connection that talks to
upstream connections. Choosing an endpoint and a pooled connection (without a task when one
is idle), sending the request, relaying the response (its head held back so that a small
response leaves in one send), per-attempt deadlines, retries and mirrors.

``Forwarding`` is mixed into ``server.HttpProtocol``; it relies on the protocol's transport,
context, flow-control gate and its completion methods (``_reply``, ``_fail``, ``_finish``).
"""
from __future__ import annotations

import logging

from .. import errors
from ..errors import ProxyError
from . import http
from .cors import CompiledCors, request_origin
from .exchange import Exchange, response_head
from .flow import BUFFERED

log = logging.getLogger("pyproxy.server")

COALESCE_LIMIT = 64 * 1024  # response body pieces up to this size are sent with the head
DEFAULT_BACKOFF = 0.025  # Envoy's default base interval between retries
# Attempt failures a route's retry policy retries (besides the status codes it lists).
RETRIABLE = (errors.UpstreamConnectError, errors.UpstreamReset, errors.UpstreamTimeout)


class Forwarding:
    def _cors(self, ex: Exchange, cors: CompiledCors) -> bool:
        """Apply the route's CORS filter; True when it answered the request (a preflight)."""
        origin, method, request_headers = request_origin(ex.headers)
        if origin is None:
            return False
        allowed = cors.allows(origin.decode("latin-1"))
        if ex.method == "OPTIONS" and method is not None:
            # a preflight is the proxy's to answer: 200 with the policy, or 403 for other origins
            if allowed:
                self._reply(ex, 200, extra=cors.preflight(origin, method, request_headers))
            else:
                self._reply(ex, 403)
            return True
        if allowed:
            ex.extra_response_headers = cors.response(origin)
        return False

    def _send_mirrors(self, ex: Exchange) -> None:
        """Copies of the complete request to the mirror destinations; their answers are dropped
        and they never affect this exchange. A body too large to keep is not mirrored."""
        mirrors, ex.mirrors = ex.mirrors, None
        body = ex.framed_replay()
        if body is None:
            log.debug("request body too large to mirror")
            return
        submit = self.ctx.mirrors.submit
        for dest in mirrors:
            submit(dest, ex.upstream_head, body, ex.head_request)

    def _dispatch(self, ex: Exchange, fresh: bool = False) -> None:
        """Attach an idle pooled connection right away when there is one (the common case,
        no task); otherwise start a task that resolves and connects."""
        dest = ex.backend.destination
        addresses = dest.addresses(self.ctx.resolver.lookup)
        target = None
        if addresses:
            target = _pick(ex, addresses)
            if not fresh:
                pool = self.ctx.pool
                conn = pool.take(pool.key(dest, *target))
                if conn is not None:
                    self._attach(ex, conn, True)
                    return
        ex.task = self.loop.create_task(self._connect(ex, target, fresh), name="pyproxy-connect")

    async def _connect(self, ex: Exchange, target: tuple[str, int, bool] | None, fresh: bool) -> None:
        dest = ex.backend.destination
        ctx = self.ctx
        try:
            if target is None:
                addresses = await dest.resolve(ctx.resolver)
                if not addresses:
                    raise errors.NoHealthyUpstream("no endpoint")
                target = _pick(ex, addresses)
            conn, reused = await ctx.pool.acquire(dest, *target, fresh=fresh)
        except ProxyError as exc:
            if not ex.finished:
                self._attempt_failed(ex, exc)
            return
        except Exception:
            log.exception("internal error while connecting upstream")
            if not ex.finished:
                self._fail(ex, errors.InternalError("internal error"))
            return
        if ex.finished:
            ctx.pool.release(conn)
            return
        self._attach(ex, conn, reused)

    def _attach(self, ex: Exchange, conn, reused: bool) -> None:
        """Send the request head and any body buffered so far on ``conn``."""
        ex.conn = conn
        ex.reused = reused
        conn.start(ex, ex.upstream_head, ex.head_request)
        if ex.body:
            body = ex.body
            ex.body = []
            if ex.chunked_in:
                conn.transport.writelines([b"%x\r\n%s\r\n" % (len(b), b) for b in body])
            else:
                conn.transport.writelines(body)
        if ex.request_complete:
            if ex.chunked_in:
                conn.write(b"0\r\n\r\n")
            self._start_try_timer(ex)
        if self.write_paused:
            conn.transport.pause_reading()
        self.gate.unblock(BUFFERED)

    def _start_route_timer(self, ex: Exchange) -> None:
        """The overall deadline (``timeouts.request``), from the end of the client request."""
        limit = ex.route.timeouts.request
        if limit is not None:
            ex.timer = self.loop.call_later(limit, self._route_timeout, ex)

    def _start_try_timer(self, ex: Exchange) -> None:
        """The deadline of one upstream attempt (``timeouts.backendRequest``), from the moment
        the whole request was sent on it."""
        limit = ex.route.timeouts.backend_request
        if limit is not None and ex.try_timer is None:
            ex.try_timer = self.loop.call_later(limit, self._try_timeout, ex)

    def _try_timeout(self, ex: Exchange) -> None:
        ex.try_timer = None
        if not ex.finished and not ex.response_started:
            self._attempt_failed(ex, errors.UpstreamTimeout())

    def _route_timeout(self, ex: Exchange) -> None:
        ex.timer = None
        if not ex.finished:
            self._fail(ex, errors.UpstreamTimeout())

    # ------------------------------------------------------------------ response path (upstream callbacks)

    def write_response_head(self, ex: Exchange, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        """Hold the head: the body that usually follows in the same upstream read goes out in
        the same send (one syscall per small response instead of two). ``flush`` sends it at
        the end of that read at the latest."""
        retry = ex.route.retry
        if retry is not None and status in retry.codes and self._can_retry(ex):
            ex.discarding = True  # this answer is dropped; the request is sent again
            return
        ex.response_started = True
        ex.status = status
        self.pending = [response_head(ex, status, reason, headers)]

    def write_response_body(self, ex: Exchange, data: bytes) -> None:
        if ex.discarding:
            return
        ex.bytes_sent += len(data)
        pending = self.pending
        if pending is not None:
            if len(data) <= COALESCE_LIMIT:
                if ex.chunked_out:
                    pending.extend((b"%x\r\n" % len(data), data, b"\r\n"))
                else:
                    pending.append(data)
                return
            self.flush()
        if ex.chunked_out:
            self.transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            self.transport.write(data)

    def flush(self) -> None:
        """Send the held response bytes (called when an upstream read has been processed)."""
        pending, self.pending = self.pending, None
        if pending:
            self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def end_response(self, ex: Exchange, reusable: bool) -> None:
        if ex.finished:
            return
        if ex.discarding:
            conn, ex.conn = ex.conn, None
            if reusable:
                self.ctx.pool.release(conn)
            else:
                conn.close()
            self._retry(ex)
            return
        if ex.chunked_out:
            if self.pending is not None:
                self.pending.append(b"0\r\n\r\n")
            else:
                self.transport.write(b"0\r\n\r\n")
        self.flush()
        conn, ex.conn = ex.conn, None
        if conn is not None:
            if reusable and ex.request_complete:
                if self.write_paused:
                    conn.transport.resume_reading()  # paused for this client, not for its next user
                self.ctx.pool.release(conn)
            else:
                conn.close()
        if not ex.request_complete:
            ex.close_after = True  # the rest of the request body will not be read
        self._finish(ex)

    def upstream_failed(self, ex: Exchange, error: ProxyError) -> None:
        if ex.finished:
            return
        stale = (
            isinstance(error, errors.UpstreamReset) and ex.reused and not ex.retried and not ex.response_started
            and not ex.body_seen and ex.method in http.IDEMPOTENT and ex.route.retry is None
        )
        if stale:
            # The stale keep-alive race: the pooled connection died before our request reached
            # the upstream. Nothing was consumed, so one fresh connection is safe to try.
            self._drop_attempt(ex)
            ex.retried = True
            self._dispatch(ex, fresh=True)
            return
        self._attempt_failed(ex, error)

    def _attempt_failed(self, ex: Exchange, error: ProxyError) -> None:
        """One upstream attempt failed before anything was relayed to the client: retry it
        when the route says so, else answer with the error."""
        self._drop_attempt(ex)
        if (ex.discarding or isinstance(error, RETRIABLE)) and not ex.response_started and self._can_retry(ex):
            self._retry(ex)
            return
        self._fail(ex, error)

    def _drop_attempt(self, ex: Exchange) -> None:
        conn, ex.conn = ex.conn, None
        if conn is not None:
            conn.abort()
        if ex.try_timer is not None:
            ex.try_timer.cancel()
            ex.try_timer = None

    @staticmethod
    def _can_retry(ex: Exchange) -> bool:
        return ex.retries_left > 0 and ex.request_complete and ex.replay is not None

    def _retry(self, ex: Exchange) -> None:
        """Send the request again (its body replayed) after the route's backoff."""
        ex.retries_left -= 1
        ex.discarding = False
        self._drop_attempt(ex)
        ex.body = list(ex.replay)
        backoff = ex.route.retry.backoff
        ex.try_timer = self.loop.call_later(DEFAULT_BACKOFF if backoff is None else backoff, self._redispatch, ex)

    def _redispatch(self, ex: Exchange) -> None:
        ex.try_timer = None
        if not ex.finished:
            self._dispatch(ex)


def _pick(ex: Exchange, addresses) -> tuple[str, int, bool]:
    """The next endpoint of the exchange's destination, recorded for the access log."""
    target = ex.backend.destination.pick(addresses)
    ex.upstream_addr = target[0] if target[2] else f"{target[0]}:{target[1]}"
    return target

"""Forwarding one exchange upstream, by composition: a ``Forwarder`` picks an endpoint, takes
a pooled connection (without a task when one is idle), sends the request, relays the
response, and owns the per-attempt and overall deadlines, retries and mirrors.

It talks to the client's side only through ``Downstream`` (send head, send body, end, fail,
flush, pause): HTTP/1.1 (``server.HttpProtocol``) is its first user, and nothing here
assumes HTTP/1.1 framing towards the client, so an HTTP/2 stream can drive it the same way.
It is also the ``ResponseSink`` its upstream connection feeds.

Retries follow Envoy's router: ``retry.RetryPolicy`` says which answers and failures are
retried; a retry is made only while the request is replayable (complete, its body kept),
the policy has retries left (else the answer carries flag ``URX``) and the destination's
circuit breaker has room for another retry in flight (else ``UO``,
``upstream_rq_retry_overflow``). A retry counts as in flight from the moment it is decided
until its attempt is answered or fails. The destination's ``max_parallel_requests`` is
checked before each attempt: over it, 503 ``UO``.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING, Protocol

from .. import errors
from ..errors import ProxyError
from ..stats import HostStats, Target
from . import http
from .context import Context, LazyTimer
from .encode import UpstreamRequest, trailer_fields
from .exchange import Exchange
from .upstream import Upstream, UpstreamConnection

if TYPE_CHECKING:
    from .compile import CompiledBackend, CompiledDestination, CompiledRoute

log = logging.getLogger("pyproxy.forward")
_draw = random.random  # the back-off's uniform draw in [0, 1) (a test may make it fixed)

# Attempt failures outlier detection charges to the endpoint (Envoy's local-origin errors; an
# overflow is the proxy's own limit, not the endpoint's fault)
LOCAL_ORIGIN = (errors.UpstreamConnectError, errors.UpstreamReset, errors.UpstreamProtocolError,
                errors.UpstreamTimeout)
_UNSET = -1  # no hash key computed yet (keys are 64-bit, never negative)


class Downstream(Protocol):
    """What a ``Forwarder`` needs from the client's side of an exchange."""

    ctx: Context
    loop: asyncio.AbstractEventLoop
    write_paused: bool  # the client is not reading: don't read the upstream either

    @property
    def peer(self) -> str:
        """The client's address and port (``peer_b``: its address alone, as bytes)."""

    @property
    def peer_b(self) -> bytes: ...

    @property
    def local(self) -> str:
        """The listener's address and port."""

    def send_head(self, ex: Exchange, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None: ...

    def send_body(self, ex: Exchange, data: bytes) -> None: ...

    def send_trailers(self, ex: Exchange, trailers: list[tuple[bytes, bytes]]) -> None:
        """The response's trailer fields; ``end`` follows."""

    def end(self, ex: Exchange) -> None:
        """The response is complete."""

    def fail(self, ex: Exchange, error: ProxyError) -> None:
        """Answer with the error, or cut the response short if it already started."""

    def flush(self) -> None:
        """The current upstream read has been processed: send what was held back."""

    def pause_request(self, paused: bool) -> None:
        """Stop (or resume) reading the request body: the upstream is not taking it."""

    def continue_request(self, ex: Exchange) -> None:
        """The request will be forwarded: answer ``Expect: 100-continue`` if it asked."""

    def start_tunnel(self, ex: Exchange, conn: UpstreamConnection, first: bytes) -> None:
        """The upstream switched protocols (its 101 went through ``send_head``): relay bytes
        both ways between the client and ``conn`` until either ends."""


class Forwarder:
    """One exchange's way upstream. ``body``/``end_request`` feed it the request,
    ``cancel`` ends it; its upstream connection calls the ``ResponseSink`` methods.

    It counts into its destination's ``ClusterStats``: an attempt (``host.rq_total``,
    ``rq_active``) from attaching a connection until the connection is released or dropped,
    every upstream status and the status of each failure answered before the response began
    (``rq_xx``, as Envoy charges resets 503 and timeouts 504), timeouts and retries; and it
    reports each attempt's outcome to the destination's outlier detection."""

    __slots__ = ("down", "ex", "ctx", "route", "backend", "dest", "request", "conn", "reused", "task", "timer",
                 "try_timer", "request_done", "retries_left", "replay", "replay_size", "discarding", "retried",
                 "mirrors", "body", "body_size", "done", "host", "sent_at", "started", "retries_done", "interval",
                 "retry_slot", "flags", "hash_key", "set_cookie")

    host: HostStats  # the current attempt's upstream address; set by _pick

    def __init__(self, down: Downstream, ex: Exchange, route: CompiledRoute, backend: CompiledBackend,
                 request: UpstreamRequest) -> None:
        self.down = down
        self.ex = ex
        self.ctx = down.ctx
        self.route = route
        self.backend = backend
        dest = backend.destination
        assert dest is not None
        self.dest: CompiledDestination = dest
        self.request = request
        self.conn: Upstream | None = None
        self.reused = False
        self.task: asyncio.Task | None = None
        self.timer: LazyTimer | None = None  # the overall deadline (timeouts.request)
        self.try_timer: asyncio.TimerHandle | None = None  # per-attempt deadline, or the retry backoff
        self.request_done = False
        policy = route.retry
        self.retries_left = policy.retries if policy is not None else 0
        self.retries_done = 0  # retries made by the policy (the answer then says so)
        self.interval = policy.base if policy is not None else 0.0  # the next retry's back-off interval
        self.retry_slot = False  # a retry of this request counts in the destination's rq_retry_active
        self.started = False  # a request byte went upstream (on any attempt): not "reset before request"
        self.flags = ""  # Envoy flags of retries not made (URX, UO), added to the answer's
        self.replay: list[bytes] | None = None  # the whole body so far, kept for retries and mirrors
        self.replay_size = 0
        self.discarding = False  # the current upstream answer is dropped (it is being retried)
        self.retried = False  # the one stale keep-alive retry was used (without a retry policy)
        mirrored = route.mirrors if not ex.head.upgrade else ()  # an upgrade is not mirrored
        self.mirrors = [dest for dest, percent in mirrored
                        if percent >= 100 or random.random() * 100 < percent] if mirrored else None
        self.body: list[bytes] = ex.body  # request body received while no connection is attached
        self.body_size = ex.body_size
        ex.body = []
        self.done = False
        self.hash_key: int | None = _UNSET  # ConsistentHash: the request's key, once computed
        self.set_cookie: bytes | None = None  # a made-up hash cookie, set on the response

    # ------------------------------------------------------------------ driven by the downstream

    def start(self, request_done: bool) -> None:
        if self.retries_left or self.mirrors:
            self.replay = list(self.body)
            self.replay_size = self.body_size
            if self.replay_size > self.ctx.limits.replay_limit:
                self.replay = None
        if self.ex.head.expect_continue:
            self.down.continue_request(self.ex)
        self._dispatch()
        if request_done and not self.done:
            self.end_request()

    def body_received(self, data: bytes) -> None:
        if self.replay is not None:
            self.replay_size += len(data)
            if self.replay_size > self.ctx.limits.replay_limit:
                self.replay = None  # too large to keep: no retry, no mirror
            else:
                self.replay.append(data)
        conn = self.conn
        if conn is not None:
            conn.send_body((data,))
            return
        self.body.append(data)
        self.body_size += len(data)
        if self.body_size > self.ctx.limits.buffer_limit:
            self.down.pause_request(True)

    def end_request(self) -> None:
        self.request_done = True
        conn = self.conn
        if conn is not None:
            conn.end_body()
            self._start_try_timer()
        limit = self.route.timeouts.request
        if limit is not None and self.timer is None:
            self.timer = self.ctx.call_later(limit, self._route_timeout)
        if self.mirrors:
            self._send_mirrors()

    def cancel(self) -> None:
        """The exchange ended (answered, failed, or the client went away)."""
        self.done = True
        self._release_retry()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self._drop_attempt()
        self.body = []
        self.replay = None

    def pause_reading(self, paused: bool) -> None:
        """The client's write buffer filled (or drained): stop (resume) reading the upstream."""
        conn = self.conn
        if conn is not None:
            conn.pause_response(paused)

    # ------------------------------------------------------------------ endpoints and connections

    def _dispatch(self, fresh: bool = False) -> None:
        """Attach an idle pooled connection right away when there is one (the common case,
        no task); otherwise start a task that resolves and connects. Over the destination's
        ``max_parallel_requests`` the attempt is refused (503 ``UO``), as Envoy's pool does."""
        dest = self.dest
        stats = dest.stats
        if stats.rq_active >= dest.breaker.max_parallel_requests:
            stats.rq_pending_overflow += 1
            self._attempt_failed(errors.UpstreamOverflow("too many requests in flight"))
            return
        addresses = dest.addresses(self.ctx.resolver.lookup)
        target = self._pick(addresses) if addresses else None
        if target is not None and not fresh:
            pool = self.ctx.pool
            conn = pool.take(pool.key(dest, *target))
            if conn is not None:
                self._attach(conn, True)
                return
        self.task = self.down.loop.create_task(self._connect(target, fresh), name="pyproxy-connect")

    async def _connect(self, target: tuple[str, int, bool] | None, fresh: bool) -> None:
        dest = self.dest
        ctx = self.ctx
        try:
            if target is None:
                addresses = await dest.resolve(ctx.resolver)
                target = self._pick(addresses) if addresses else None
                if target is None:
                    dest.stats.cx_none_healthy += 1
                    raise errors.NoHealthyUpstream("no healthy endpoint" if addresses else "no endpoint")
            conn, reused = await ctx.pool.acquire(dest, *target, fresh=fresh)
        except ProxyError as exc:
            if not self.done:
                self._attempt_failed(exc)
            return
        except Exception:
            log.exception("internal error while connecting upstream")
            if not self.done:
                self._fail(errors.InternalError("internal error"))
            return
        if self.done:
            ctx.pool.release(conn)
            return
        self._attach(conn, reused)

    def _pick(self, addresses: tuple[Target, ...]) -> Target | None:
        """The endpoint the destination's load balancer chooses (None: no healthy one),
        recorded for the access log."""
        balancer = self.dest.balancer
        key = None
        if balancer.hash_on is not None:
            key = self.hash_key
            if key == _UNSET:
                key, self.set_cookie = balancer.request_key(self.ex.head.headers, self.down, self.ex.client_address)
                self.hash_key = key
        picked = balancer.pick(addresses, key)
        if picked is None:
            return None
        target, self.host = picked
        self.ex.upstream_addr = target[0] if target[2] else f"{target[0]}:{target[1]}"
        return target

    def _attach(self, conn: Upstream, reused: bool) -> None:
        """Send the request head and any body buffered so far on ``conn`` (to the endpoint
        ``_pick`` chose)."""
        self.conn = conn
        self.reused = reused
        host = self.host
        host.rq_total += 1
        host.rq_active += 1
        self.dest.stats.rq_active += 1
        self.started = True
        self.sent_at = time.monotonic()
        conn.start(self, self.request, self.ex.head.method == "HEAD", bool(self.ex.head.upgrade))
        body = self.body
        if body:
            self.body = []
            self.body_size = 0
            conn.send_body(body)
        if self.request_done:
            conn.end_body()
            self._start_try_timer()
        if self.down.write_paused:
            conn.pause_response(True)
        if body:
            self.down.pause_request(False)  # what was held for want of a connection is sent

    def _drop_attempt(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.abort()
            self.host.rq_active -= 1
            self.dest.stats.rq_active -= 1
        if self.try_timer is not None:
            self.try_timer.cancel()
            self.try_timer = None

    # ------------------------------------------------------------------ deadlines, retries, mirrors

    def _start_try_timer(self) -> None:
        """The deadline of one upstream attempt (``perRetry.timeout``, else
        ``timeouts.backendRequest``), from the moment the whole request was sent on it."""
        limit = self.route.try_timeout
        if limit is not None and self.try_timer is None:
            self.try_timer = self.down.loop.call_later(limit, self._try_timeout)

    def _try_timeout(self) -> None:
        self.try_timer = None
        if not self.done and not self.ex.response_started:
            self.dest.stats.rq_per_try_timeout += 1
            self._attempt_failed(errors.UpstreamPerTryTimeout())

    def _route_timeout(self) -> None:
        self.timer = None
        if not self.done:
            self.dest.stats.rq_timeout += 1
            if self.conn is not None and self.dest.outlier is not None:
                self.dest.outlier.failed(self.host, True)
            self._fail(errors.UpstreamTimeout())

    def _may_retry(self, would: bool) -> bool:
        """Envoy's ``shouldRetry`` for an attempt's outcome that the policy ``would`` retry:
        the previous retry is over either way (its slot is released); a new one needs a
        replayable request, a retry left and room under ``max_parallel_retries``."""
        self._release_retry()
        if not would or not self.request_done or self.replay is None:
            return False
        if self.retries_left <= 0:
            self.flags = "URX"
            return False
        self.retries_left -= 1
        stats = self.dest.stats
        if stats.rq_retry_active >= self.dest.breaker.max_parallel_retries:
            stats.rq_retry_overflow += 1
            self.flags = "UO"
            return False
        stats.rq_retry_active += 1
        self.retry_slot = True
        return True

    def _release_retry(self) -> None:
        if self.retry_slot:
            self.retry_slot = False
            self.dest.stats.rq_retry_active -= 1

    def _retry(self) -> None:
        """Send the request again (its body replayed) after a fully jittered back-off."""
        self.dest.stats.rq_retry += 1
        self.retries_done += 1
        self.discarding = False
        self._drop_attempt()
        assert self.replay is not None and self.route.retry is not None
        self.body = list(self.replay)
        delay = self.interval * _draw()
        self.interval = self.route.retry.next_interval(self.interval)
        self.try_timer = self.down.loop.call_later(delay, self._redispatch)

    def _redispatch(self) -> None:
        self.try_timer = None
        if not self.done:
            self._dispatch()

    def _attempt_failed(self, error: ProxyError) -> None:
        """One upstream attempt failed before anything was relayed to the client: retry it
        when the route's policy says so, else answer with the error. An attempt whose answer
        was being dropped for a retry is retried as decided."""
        if self.dest.outlier is not None and isinstance(error, LOCAL_ORIGIN):
            self.dest.outlier.failed(self.host, isinstance(error, errors.UpstreamTimeout))
        self._drop_attempt()
        if self.discarding:
            self._retry()
            return
        policy = self.route.retry
        if (policy is not None and not self.ex.response_started
                and self._may_retry(policy.retries_failure(error, self.started))):
            self._retry()
            return
        self._fail(error)

    def _fail(self, error: ProxyError) -> None:
        if not self.ex.response_started:
            self.dest.stats.rq_xx[error.status // 100] += 1
        self.cancel()
        self.down.fail(self.ex, errors.answered(error, retried=self.retries_done > 0, flags=self.flags,
                                                late=self.ex.response_started))

    def _send_mirrors(self) -> None:
        """Copies of the complete request to the mirror destinations; their answers are dropped
        and they never affect this exchange. A body too large to keep is not mirrored."""
        mirrors, self.mirrors = self.mirrors or [], None
        if self.replay is None:
            log.debug("request body too large to mirror")
            return
        body = list(self.replay)
        submit = self.ctx.mirrors.submit
        for dest in mirrors:
            submit(dest, self.request, body, self.ex.head.method == "HEAD")

    # ------------------------------------------------------------------ ResponseSink (upstream callbacks)

    def response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.dest.stats.rq_xx[status // 100] += 1
        if status >= 500:
            self.host.rq_error += 1
        if self.dest.outlier is not None:
            self.dest.outlier.answered(self.host, status)
        policy = self.route.retry
        if policy is not None and self._may_retry(policy.retries_status(status)):
            self.discarding = True  # this answer is dropped; the request is sent again
            return
        if self.flags:
            self.ex.flags = self.flags
        if self.set_cookie is not None:
            headers.append((b"set-cookie", self.set_cookie))
        self.down.send_head(self.ex, status, reason, headers)

    def upgraded(self, conn: UpstreamConnection, first: bytes) -> None:
        """The upstream answered the upgrade with 101: the connection leaves the pool and
        this exchange for the downstream's tunnel; the request deadlines no longer apply
        (a tunnel has the stream idle timeout, as in Envoy)."""
        self.conn = None
        self.host.rq_active -= 1
        self.dest.stats.rq_active -= 1
        self.done = True
        for timer in (self.timer, self.try_timer):
            if timer is not None:
                timer.cancel()
        self.timer = self.try_timer = None
        self.down.start_tunnel(self.ex, conn, first)

    def response_body(self, data: bytes) -> None:
        if not self.discarding:
            self.down.send_body(self.ex, data)

    def response_trailers(self, trailers: list[tuple[bytes, bytes]]) -> None:
        if not self.discarding:
            trailers = trailer_fields(trailers)
            if trailers:
                self.down.send_trailers(self.ex, trailers)

    def flush(self) -> None:
        self.down.flush()

    def response_end(self, reusable: bool) -> None:
        if self.done:
            return
        conn, self.conn = self.conn, None
        if conn is not None:
            self.host.rq_active -= 1
            self.dest.stats.rq_active -= 1
        if self.discarding:
            if conn is not None:
                if reusable:
                    self.ctx.pool.release(conn)
                else:
                    conn.close()
            self._retry()
            return
        self.dest.stats.rq_time.record((time.monotonic() - self.sent_at) * 1000)
        if conn is not None:
            if reusable and self.request_done:
                if self.down.write_paused:
                    conn.pause_response(False)  # paused for this client, not for its next user
                self.ctx.pool.release(conn)
            else:
                conn.close()
        self.cancel()
        self.down.end(self.ex)

    def upstream_failed(self, error: ProxyError) -> None:
        if self.done:
            return
        stale = (
            isinstance(error, errors.UpstreamReset) and not self.retried and not self.ex.response_started
            and not self.ex.bytes_received and self.route.retry is None
            and (isinstance(error, errors.UpstreamRefused)
                 or (self.reused and self.ex.head.method in http.IDEMPOTENT))
        )
        if stale:
            # The stale keep-alive race: the pooled connection died before our request reached
            # the upstream; or an HTTP/2 upstream refused the stream (it was never processed).
            # Nothing was consumed, so one fresh connection is safe to try.
            self._drop_attempt()
            self.retried = True
            self._dispatch(fresh=True)
            return
        self._attempt_failed(error)

    def upstream_pause(self) -> None:
        self.down.pause_request(True)

    def upstream_resume(self) -> None:
        self.down.pause_request(False)


"""Keep-alive upstream connections, keyed by (address, port, unix, TLS settings, SNI,
protocol), within two sets of limits:

* per key, the process's own guard: at most ``Limits.pool_max_per_key`` connections and
  ``Limits.pool_max_pending`` requests queued for one;
* per destination, its circuit breaker (``ir.CircuitBreaker``, Envoy's cluster thresholds):
  at most ``max_pending_requests`` requests waiting for a connection (being dialled for them
  or queued; over it 503 ``UO``, ``upstream_rq_pending_overflow``), and at most
  ``max_connections`` connections opened by the destination. At that limit a request queues
  for a connection of its key instead of dialling (``upstream_cx_overflow``), unless the key
  has none at all: like Envoy, one connection is always allowed, so a request never waits
  for a connection that cannot come.

Idle connections close after their destination's ``idle_timeout`` (``Limits.pool_idle_timeout``
when it has none), counted from their release.

HTTP/1.1 connections carry one request at a time: a request takes an idle one or a new one.
HTTP/2 connections (a destination with ``http2``) are shared: the pool hands out streams
(``upstream_h2.H2Stream``), as many per connection as it has room for, and opens another
connection only when every one is full; while one is being opened, further requests wait for
it rather than each opening its own. Over TLS the server may select HTTP/1.1 instead (ALPN):
that key's connections are then HTTP/1.1 ones.

The bookkeeping (``_Slots``, one per key) is changed only by plain methods that decide
synchronously, as httpcore's pool does; the only awaits are the connect itself and a waiter's
future. The I/O lives in ``upstream.UpstreamConnection`` and ``upstream_h2``; connecting (TCP +
TLS + peer name check) happens here because it is what turns an address into a usable
connection.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, TypeAlias

from ..errors import UpstreamConnectError, UpstreamOverflow, UpstreamReset
from . import tls
from .compile import CompiledDestination
from .limits import Limits
from .upstream import PoolKey, Upstream, UpstreamConnection

if TYPE_CHECKING:
    from .upstream_h2 import H2Stream, H2UpstreamConnection

log = logging.getLogger("pyproxy.pool")

_CONNECT = object()
"""What a waiter is handed when a connection slot (not a connection) became free for it: the
slot is already counted in ``connecting``, the waiter dials."""

Connection: TypeAlias = "UpstreamConnection | H2UpstreamConnection"


_new_tuple = tuple.__new__


class _Slots:
    """The bookkeeping of one key. ``open`` counts connections from a successful connect until
    they close (busy or idle); ``idle`` holds the idle HTTP/1.1 ones in release order (a dict
    for O(1) removal when one closes); ``shared`` the HTTP/2 ones, oldest first; ``waiters``
    are the requests queued at a limit (or for an HTTP/2 connection being opened), oldest
    first, and ``dests`` the destination each of them asks for. Whenever ``waiters`` is not
    empty, ``idle`` is (a released connection goes to a waiter), and no shared connection has
    room (a stream goes to a waiter). ``single``: the key's connections carry one request at
    a time (HTTP/1.1, or what the server selected)."""

    __slots__ = ("open", "connecting", "idle", "waiters", "dests", "shared", "single")

    def __init__(self, single: bool) -> None:
        self.open = 0
        self.connecting = 0
        self.idle: dict[UpstreamConnection, None] = {}
        self.waiters: deque[asyncio.Future] = deque()
        self.dests: dict[asyncio.Future, CompiledDestination] = {}
        self.shared: dict[H2UpstreamConnection, None] = {}
        self.single = single

    @property
    def total(self) -> int:
        return self.open + self.connecting

    @property
    def unused(self) -> bool:
        return not (self.open or self.connecting or self.waiters)

    def __repr__(self) -> str:
        text = (f"busy={self.open - len(self.idle) - len(self.shared)} idle={len(self.idle)} "
                f"connecting={self.connecting} waiting={len(self.waiters)}")
        if self.shared:
            text += " streams=" + ",".join(str(len(conn.streams) + conn.reserved) for conn in self.shared)
        return text


class Pool:
    """Idle connections per key, most recently used first. Idle expiry is swept (one timer
    per pool, due when the first idle connection expires, not one per connection: releasing
    and taking a connection is on the per-request path)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._slots: dict[PoolKey, _Slots] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_at = 0.0  # when the sweeper is due
        self._loop: asyncio.AbstractEventLoop | None = None
        self.connects = 0  # new connections opened (for tests and metrics)

    def __repr__(self) -> str:
        keys = "; ".join(f"{_address(key)}: {slots!r}" for key, slots in self._slots.items())
        return f"<Pool [{keys}]>"

    @staticmethod
    def key(dest: CompiledDestination, host: str, port: int, unix: bool) -> PoolKey:
        # tuple.__new__ directly: the NamedTuple's generated __new__ costs twice as much, per request
        return _new_tuple(PoolKey, (host, port, unix, dest.ssl_context, dest.tls.sni if dest.tls else None,
                                    dest.http2))

    def take(self, key: PoolKey) -> Upstream | None:
        """An idle connection for ``key`` (or a stream of a shared one with room), without
        waiting; None when there is none."""
        slots = self._slots.get(key)
        if slots is None:
            return None
        if slots.idle:
            conn, _ = slots.idle.popitem()
            return conn
        if slots.shared:
            return _stream(slots)
        return None

    async def acquire(self, dest: CompiledDestination, host: str, port: int, unix: bool,
                      fresh: bool = False, wait: bool = True) -> tuple[Upstream, bool]:
        """A connection (or a stream of a shared one) to (host, port) for ``dest``, and
        whether its connection was used before.

        An idle connection or a shared one with room first (unless ``fresh``). Else the
        request is pending: ``UpstreamOverflow`` when ``dest`` has ``max_pending_requests``
        pending already; a new connection while the key is under ``pool_max_per_key`` (for
        HTTP/2: unless one is being opened already, which it waits for) and ``dest`` under
        ``max_connections``; at a limit the request queues (``UpstreamOverflow`` when
        ``pool_max_pending`` are queued already, or at once when not ``wait``) until a
        connection or a stream is handed to it or one closes and it may dial, for at most the
        destination's connect timeout. A ``fresh`` request at a limit closes the oldest idle
        connection to make room."""
        key = self.key(dest, host, port, unix)
        if not fresh:
            conn = self.take(key)
            if conn is not None:
                return conn, True
        stats = dest.stats
        if stats.rq_pending >= dest.breaker.max_pending_requests:
            stats.rq_pending_overflow += 1
            log.debug("%s: %d requests pending: overflow", dest.name, stats.rq_pending)
            raise UpstreamOverflow("too many requests pending")
        stats.rq_pending += 1
        try:
            return await self._acquire(key, dest, fresh, wait)
        finally:
            stats.rq_pending -= 1

    async def _acquire(self, key: PoolKey, dest: CompiledDestination, fresh: bool,
                       wait: bool) -> tuple[Upstream, bool]:
        deadline = None
        while True:
            if not fresh:
                conn = self.take(key)
                if conn is not None:
                    return conn, True
            slots = self._slots.get(key)
            if slots is None:
                slots = self._slots[key] = _Slots(not key.http2)
            key_room = self._key_room(slots)
            if key_room and _breaker_room(slots, dest):
                slots.connecting += 1
                return await self._open(key, slots, dest), False
            if slots.idle:
                next(iter(slots.idle)).close()  # its on_close frees the slot
                continue
            if key_room:
                dest.stats.cx_overflow += 1  # the destination is at max_connections: wait instead
            if not wait or len(slots.waiters) >= self.limits.pool_max_pending:
                log.debug("%s at its limit (%r): overflow", _address(key), slots)
                self._tidy(key, slots)
                raise UpstreamOverflow()
            if deadline is None:
                deadline = self._running_loop().time() + dest.connect_timeout
            got = await self._wait(key, slots, dest, deadline)
            if got is _CONNECT:
                return await self._open(key, slots, dest), False
            if not got.closed:
                return got, True
            # handed a connection (or a stream of one) that closed before this task ran; its
            # slot was freed then (a stream's reservation is given back here)
            got.abort()

    def release(self, conn: Upstream) -> None:
        """Return a connection whose exchange finished cleanly and that may be reused: to the
        oldest waiter of its key, else to the idle list. A stream is given back to its
        connection (whose room goes to the waiters)."""
        if conn.closed:
            return
        if type(conn) is not UpstreamConnection:
            conn.close()  # a stream: it goes back to its shared connection
            return
        slots = self._slots[conn.key]
        if slots.waiters:
            waiter = _next_waiter(slots)
            if waiter is not None:
                waiter.set_result(conn)
                return
        now = conn.idle_since = self._running_loop().time()
        slots.idle[conn] = None
        self._watch_idle(now + conn.idle_timeout, conn.idle_timeout)

    def close(self) -> None:
        """Close every idle connection and every shared one (busy HTTP/1.1 ones are closed
        by their exchanges; the streams of a shared one fail as on a lost connection)."""
        for slots in list(self._slots.values()):
            conns: list[Connection] = [*slots.idle, *slots.shared]
            for conn in conns:
                conn.close()  # its on_close takes it out of the bookkeeping
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    # ------------------------------------------------------------------ bookkeeping

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            # cached: on Python 3.11 get_running_loop() costs a getpid() syscall per call
            loop = self._loop = asyncio.get_running_loop()
        return loop

    async def _wait(self, key: PoolKey, slots: _Slots, dest: CompiledDestination, deadline: float):
        """Queue for ``key`` until handed a connection or ``_CONNECT``; a waiter whose task is
        cancelled after it was handed one passes it on."""
        loop = self._running_loop()
        waiter = loop.create_future()
        slots.waiters.append(waiter)
        slots.dests[waiter] = dest
        timer = loop.call_at(deadline, self._expire, key, slots, waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._pass_on(key, slots, waiter.result())
            elif waiter in slots.waiters:
                slots.waiters.remove(waiter)
                self._tidy(key, slots)
            raise
        finally:
            timer.cancel()
            slots.dests.pop(waiter, None)

    def _expire(self, key: PoolKey, slots: _Slots, waiter: asyncio.Future) -> None:
        if not waiter.done():
            slots.waiters.remove(waiter)
            waiter.set_exception(UpstreamConnectError("connection timeout"))
            self._tidy(key, slots)

    def _pass_on(self, key: PoolKey, slots: _Slots, got) -> None:
        """What a cancelled waiter had been handed goes to the next one (or back to idle)."""
        if got is _CONNECT:
            slots.connecting -= 1
            self._hand_out(key, slots)
        else:
            self.release(got)

    def _hand_out(self, key: PoolKey, slots: _Slots) -> None:
        """Room appeared for ``key`` (a connection slot, or streams on a shared connection):
        the oldest waiters get streams while a shared connection has room, then may dial
        while the key is under its limit (for HTTP/2 one at a time: the others wait for it) and
        the waiter's destination under its ``max_connections``."""
        while True:
            waiter = _first_waiter(slots)
            if waiter is None:
                break
            stream = _stream(slots) if slots.shared else None
            if stream is not None:
                slots.waiters.popleft()
                waiter.set_result(stream)
            elif self._key_room(slots) and _breaker_room(slots, slots.dests[waiter]):
                slots.waiters.popleft()
                slots.connecting += 1
                waiter.set_result(_CONNECT)
            else:
                break
        self._tidy(key, slots)

    def _key_room(self, slots: _Slots) -> bool:
        """Whether the key may open another connection (for HTTP/2: one at a time)."""
        return slots.total < self.limits.pool_max_per_key and (slots.single or not slots.connecting)

    def _tidy(self, key: PoolKey, slots: _Slots) -> None:
        """Forget a key with nothing open, connecting or waiting (keys follow DNS answers)."""
        if slots.unused and self._slots.get(key) is slots:
            del self._slots[key]

    def _closed(self, conn: Connection) -> None:
        """``conn.on_close``: a counted connection closed (by anyone) or was lost."""
        slots = self._slots[conn.key]
        if isinstance(conn, UpstreamConnection):
            slots.idle.pop(conn, None)
        else:
            slots.shared.pop(conn, None)
        slots.open -= 1
        host = conn.host
        host.cx_active -= 1
        if host.cluster is not None:
            host.cluster.cx_open -= 1
        self._hand_out(conn.key, slots)

    def _room(self, conn: H2UpstreamConnection) -> None:
        """``conn.on_capacity``: the room on a shared connection changed (a stream ended, a
        setting, a GOAWAY): waiters get it; an idle connection starts its idle time."""
        slots = self._slots.get(conn.key)
        if slots is None or conn not in slots.shared:
            return
        if conn.idle:
            now = conn.idle_since = self._running_loop().time()
            self._watch_idle(now + conn.idle_timeout, conn.idle_timeout)
        self._hand_out(conn.key, slots)

    def _watch_idle(self, due: float, timeout: float) -> None:
        """Make sure a sweep comes soon after ``due`` (a connection with idle ``timeout``
        expires then): sweeps are at least a quarter of that timeout apart (0.05 s to 5 s),
        so a connection may outlive its timeout by that much."""
        if self._sweeper is not None and self._sweep_at <= due:
            return  # the common case, on every release: a sweep is due before this one expires
        due = max(due, self._running_loop().time() + _sweep_gap(timeout))
        if self._sweeper is not None:
            if self._sweep_at <= due:
                return
            self._sweeper.cancel()
        self._sweep_at = due
        self._sweeper = self._running_loop().call_at(due, self._sweep)

    def _sweep(self) -> None:
        """Close the connections idle for longer than their idle timeout; the next sweep is
        due when the first of the others expires."""
        self._sweeper = None
        now = self._running_loop().time()
        expired: list[Connection] = []
        first: tuple[float, float] | None = None  # (when, timeout) of the next expiry
        for slots in self._slots.values():
            idle: list[Connection] = [*slots.idle, *(shared for shared in slots.shared if shared.idle)]
            for conn in idle:
                due = conn.idle_since + conn.idle_timeout
                if due <= now:
                    expired.append(conn)
                elif first is None or due < first[0]:
                    first = (due, conn.idle_timeout)
        for expiring in expired:
            expiring.close()
        if first is not None:
            self._watch_idle(*first)

    # ------------------------------------------------------------------ I/O

    async def _open(self, key: PoolKey, slots: _Slots, dest: CompiledDestination) -> Upstream:
        """Dial for a slot already counted in ``connecting``; the slot becomes an ``open``
        connection, or is freed for a waiter when the connect fails or is cancelled. The
        attempt counts for ``dest``'s stats of the address, and so does the connection until
        it closes. An HTTP/2 connection is shared at once: the first stream is the dialler's,
        waiters get the rest of its room."""
        host = dest.stats.host((key.host, key.port, key.unix))
        host.cx_total += 1
        dest.stats.cx_open += 1
        try:
            conn = await self._dial(key, dest)
        except BaseException as exc:
            if isinstance(exc, UpstreamConnectError):
                host.cx_connect_fail += 1
            dest.stats.cx_open -= 1
            slots.connecting -= 1
            self._hand_out(key, slots)
            raise
        slots.connecting -= 1
        slots.open += 1
        self.connects += 1
        conn.on_close = self._closed
        conn.host = host
        conn.idle_timeout = self.limits.pool_idle_timeout if dest.idle_timeout is None else dest.idle_timeout
        host.cx_active += 1
        if conn.closed:
            # lost between the handshake and this task running: it was never usable
            self._closed(conn)
            raise UpstreamReset("connection closed by upstream")
        if not isinstance(conn, UpstreamConnection):  # HTTP/2
            slots.shared[conn] = None
            conn.on_capacity = self._room
            stream = conn.reserve()
            self._hand_out(key, slots)
            return stream
        if not slots.single:
            slots.single = True  # the server selected HTTP/1.1: the waiters dial their own
            self._hand_out(key, slots)
        return conn

    async def _dial(self, key: PoolKey, dest: CompiledDestination) -> Connection:
        """A new connection (TCP or unix, then TLS and the peer name check when ``dest`` has
        TLS): HTTP/2 for an ``http2`` key unless the TLS server selected HTTP/1.1 (ALPN)."""
        loop = asyncio.get_running_loop()
        ctx = key.ssl_context
        server_hostname = key.sni if ctx else None
        limits = self.limits

        factory: Callable[[], Connection] = partial(UpstreamConnection, key, limits)
        if key.http2:
            # imported with the first HTTP/2 upstream connection (as for the first HTTP/2
            # client, server.py): the h2 library is 1.6 MiB of RSS a process may never need
            from .upstream_h2 import H2UpstreamConnection

            factory = partial(H2UpstreamConnection, key, limits)

        try:
            if key.unix:
                coro = loop.create_unix_connection(factory, key.host, ssl=ctx, server_hostname=server_hostname)
            else:
                coro = loop.create_connection(factory, key.host, key.port, ssl=ctx, server_hostname=server_hostname)
            transport, conn = await asyncio.wait_for(coro, dest.connect_timeout)
        except TimeoutError:
            raise UpstreamConnectError("connection timeout") from None
        except (ssl.SSLError, OSError) as exc:
            raise UpstreamConnectError("connection failure", tls.transport_failure_reason(exc)) from exc
        if ctx is not None and dest.tls is not None and not dest.tls.insecure_skip_verify:
            peer = transport.get_extra_info("ssl_object").getpeercert()
            reason = tls.verify_peer(peer, dest.tls)
            if reason is not None:
                transport.abort()
                raise UpstreamConnectError("connection failure", tls.transport_failure_reason(None, reason))
        if not isinstance(conn, UpstreamConnection) and not conn.negotiated:
            # the server did not select h2: the transport goes to an HTTP/1.1 connection
            single = UpstreamConnection(key, limits)
            transport.set_protocol(single)
            single.connection_made(transport)
            return single
        return conn


def _breaker_room(slots: _Slots, dest: CompiledDestination) -> bool:
    """Whether ``dest`` may open another connection: under its ``max_connections``, or this
    key has none at all (Envoy always lets a host's pool have one)."""
    return dest.stats.cx_open < dest.breaker.max_connections or slots.total == 0


def _sweep_gap(timeout: float) -> float:
    return max(0.05, min(timeout / 4, 5.0))


def _stream(slots: _Slots) -> H2Stream | None:
    """A stream of the oldest shared connection with room (the fewest connections stay busy)."""
    for conn in slots.shared:
        if conn.room() > 0:
            return conn.reserve()
    return None


def _first_waiter(slots: _Slots) -> asyncio.Future | None:
    """The oldest waiter still waiting, left in the queue (cancelled ones are dropped)."""
    waiters = slots.waiters
    while waiters and waiters[0].done():
        waiters.popleft()
    return waiters[0] if waiters else None


def _next_waiter(slots: _Slots) -> asyncio.Future | None:
    """The oldest waiter still waiting (a cancelled one stays queued until its task runs)."""
    while slots.waiters:
        waiter = slots.waiters.popleft()
        if not waiter.done():
            return waiter
    return None


def _address(key: PoolKey) -> str:
    where = key.host if key.unix else f"{key.host}:{key.port}"
    if key.ssl_context is not None:
        where += f" tls({key.sni})" if key.sni else " tls"
    return where

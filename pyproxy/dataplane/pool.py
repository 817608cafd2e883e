"""Keep-alive upstream connections, keyed by (address, port, unix, TLS settings, SNI), with
Envoy's circuit breakers per key: at most ``Limits.pool_max_per_key`` connections and
``Limits.pool_max_pending`` requests waiting for one.

The bookkeeping (``_Slots``, one per key) is changed only by plain methods that decide
synchronously, as httpcore's pool does; the only awaits are the connect itself and a waiter's
future. The I/O lives in ``upstream.UpstreamConnection``; connecting (TCP + TLS + peer name
check) happens here because it is what turns an address into a usable connection.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque

from ..errors import UpstreamConnectError, UpstreamOverflow, UpstreamReset
from . import tls
from .compile import CompiledDestination
from .limits import Limits
from .upstream import PoolKey, Upstream, UpstreamConnection

log = logging.getLogger("pyproxy.pool")

_CONNECT = object()
"""What a waiter is handed when a connection slot (not a connection) became free for it: the
slot is already counted in ``connecting``, the waiter dials."""


_new_tuple = tuple.__new__


class _Slots:
    """The bookkeeping of one key. ``open`` counts connections from a successful connect until
    they close (busy or idle); ``idle`` holds the idle ones in release order (a dict for O(1)
    removal when one closes); ``waiters`` are the requests queued at the limit, oldest first.
    Whenever ``waiters`` is not empty, ``idle`` is (a released connection goes to a waiter)."""

    __slots__ = ("open", "connecting", "idle", "waiters")

    def __init__(self) -> None:
        self.open = 0
        self.connecting = 0
        self.idle: dict[UpstreamConnection, None] = {}
        self.waiters: deque[asyncio.Future] = deque()

    @property
    def total(self) -> int:
        return self.open + self.connecting

    @property
    def unused(self) -> bool:
        return not (self.open or self.connecting or self.waiters)

    def __repr__(self) -> str:
        return (f"busy={self.open - len(self.idle)} idle={len(self.idle)} connecting={self.connecting} "
                f"waiting={len(self.waiters)}")


class Pool:
    """Idle connections per key, most recently used first. Idle expiry is swept periodically
    (one timer per pool, not one per connection: releasing and taking a connection is on the
    per-request path)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._slots: dict[PoolKey, _Slots] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.connects = 0  # new connections opened (for tests and metrics)

    def __repr__(self) -> str:
        keys = "; ".join(f"{_address(key)}: {slots!r}" for key, slots in self._slots.items())
        return f"<Pool [{keys}]>"

    @staticmethod
    def key(dest: CompiledDestination, host: str, port: int, unix: bool) -> PoolKey:
        # tuple.__new__ directly: the NamedTuple's generated __new__ costs twice as much, per request
        return _new_tuple(PoolKey, (host, port, unix, dest.ssl_context, dest.tls.sni if dest.tls else None))

    def take(self, key: PoolKey) -> UpstreamConnection | None:
        """An idle connection for ``key``, without waiting; None when there is none."""
        slots = self._slots.get(key)
        if slots is None or not slots.idle:
            return None
        conn, _ = slots.idle.popitem()
        return conn

    async def acquire(self, dest: CompiledDestination, host: str, port: int, unix: bool,
                      fresh: bool = False, wait: bool = True) -> tuple[UpstreamConnection, bool]:
        """A connection to (host, port) for ``dest``, and whether it was used before.

        An idle connection first (unless ``fresh``), else a new one while the key is under
        ``pool_max_per_key``; at the limit the request queues (``UpstreamOverflow`` when
        ``pool_max_pending`` are queued already, or at once when not ``wait``) until a
        connection is released to it or one closes and it may dial, for at most the
        destination's connect timeout. A ``fresh`` request at the limit closes the oldest idle
        connection to make room."""
        key = self.key(dest, host, port, unix)
        limit = self.limits.pool_max_per_key
        deadline = None
        while True:
            if not fresh:
                conn = self.take(key)
                if conn is not None:
                    return conn, True
            slots = self._slots.get(key)
            if slots is None:
                slots = self._slots[key] = _Slots()
            if slots.total >= limit and slots.idle:
                next(iter(slots.idle)).close()  # its on_close frees the slot
                continue
            if slots.total < limit:
                slots.connecting += 1
                return await self._open(key, slots, dest), False
            if not wait or len(slots.waiters) >= self.limits.pool_max_pending:
                log.debug("%s at its limit (%r): overflow", _address(key), slots)
                self._tidy(key, slots)
                raise UpstreamOverflow()
            if deadline is None:
                deadline = self._running_loop().time() + dest.connect_timeout
            got = await self._wait(key, slots, deadline)
            if got is _CONNECT:
                return await self._open(key, slots, dest), False
            if not got.closed:
                return got, True
            # handed a connection that closed before this task ran; its slot was freed then

    def release(self, conn: Upstream) -> None:
        """Return a connection whose exchange finished cleanly and that may be reused: to the
        oldest waiter of its key, else to the idle list."""
        if conn.closed:
            return
        assert isinstance(conn, UpstreamConnection)
        slots = self._slots[conn.key]
        if slots.waiters:
            waiter = _next_waiter(slots)
            if waiter is not None:
                waiter.set_result(conn)
                return
        loop = self._running_loop()
        conn.idle_since = loop.time()
        slots.idle[conn] = None
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._sweep_interval(), self._sweep)

    def close(self) -> None:
        """Close every idle connection (busy ones are closed by their exchanges)."""
        for slots in list(self._slots.values()):
            for conn in list(slots.idle):
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

    async def _wait(self, key: PoolKey, slots: _Slots, deadline: float):
        """Queue for ``key`` until handed a connection or ``_CONNECT``; a waiter whose task is
        cancelled after it was handed one passes it on."""
        loop = self._running_loop()
        waiter = loop.create_future()
        slots.waiters.append(waiter)
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

    def _expire(self, key: PoolKey, slots: _Slots, waiter: asyncio.Future) -> None:
        if not waiter.done():
            slots.waiters.remove(waiter)
            waiter.set_exception(UpstreamConnectError("connection timeout"))
            self._tidy(key, slots)

    def _pass_on(self, key: PoolKey, slots: _Slots, got) -> None:
        """What a cancelled waiter had been handed goes to the next one (or back to idle)."""
        if got is _CONNECT:
            slots.connecting -= 1
            self._freed(key, slots)
        else:
            self.release(got)

    def _freed(self, key: PoolKey, slots: _Slots) -> None:
        """A connection slot of ``key`` became free: the oldest waiter may dial."""
        if slots.total < self.limits.pool_max_per_key:
            waiter = _next_waiter(slots)
            if waiter is not None:
                slots.connecting += 1
                waiter.set_result(_CONNECT)
                return
        self._tidy(key, slots)

    def _tidy(self, key: PoolKey, slots: _Slots) -> None:
        """Forget a key with nothing open, connecting or waiting (keys follow DNS answers)."""
        if slots.unused and self._slots.get(key) is slots:
            del self._slots[key]

    def _closed(self, conn: UpstreamConnection) -> None:
        """``conn.on_close``: a counted connection closed (by anyone) or was lost."""
        slots = self._slots[conn.key]
        slots.idle.pop(conn, None)
        slots.open -= 1
        conn.host.cx_active -= 1
        self._freed(conn.key, slots)

    def _sweep_interval(self) -> float:
        return max(0.05, min(self.limits.pool_idle_timeout / 4, 5.0))

    def _sweep(self) -> None:
        """Close connections idle for longer than ``pool_idle_timeout`` (each key's idle
        connections sit in release order, oldest first)."""
        self._sweeper = None
        loop = self._running_loop()
        deadline = loop.time() - self.limits.pool_idle_timeout
        expired = []
        idle_left = False
        for slots in self._slots.values():
            for conn in slots.idle:
                if conn.idle_since > deadline:
                    idle_left = True
                    break
                expired.append(conn)
        for conn in expired:
            conn.close()
        if idle_left:
            self._sweeper = loop.call_later(self._sweep_interval(), self._sweep)

    # ------------------------------------------------------------------ I/O

    async def _open(self, key: PoolKey, slots: _Slots, dest: CompiledDestination) -> UpstreamConnection:
        """Dial for a slot already counted in ``connecting``; the slot becomes an ``open``
        connection, or is freed for a waiter when the connect fails or is cancelled. The
        attempt counts for ``dest``'s stats of the address, and so does the connection until
        it closes."""
        host = dest.stats.host((key.host, key.port, key.unix))
        host.cx_total += 1
        try:
            conn = await self._dial(key, dest)
        except BaseException as exc:
            if isinstance(exc, UpstreamConnectError):
                host.cx_connect_fail += 1
            slots.connecting -= 1
            self._freed(key, slots)
            raise
        slots.connecting -= 1
        slots.open += 1
        self.connects += 1
        conn.on_close = self._closed
        conn.host = host
        host.cx_active += 1
        if conn.closed:
            # lost between the handshake and this task running: it was never usable
            self._closed(conn)
            raise UpstreamReset("connection closed by upstream")
        return conn

    async def _dial(self, key: PoolKey, dest: CompiledDestination) -> UpstreamConnection:
        """A new connection (TCP or unix, then TLS and the peer name check when ``dest`` has TLS)."""
        loop = asyncio.get_running_loop()
        ctx = key.ssl_context
        server_hostname = key.sni if ctx else None
        limits = self.limits

        def factory() -> UpstreamConnection:
            return UpstreamConnection(key, limits)

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
        return conn


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

"""Keep-alive upstream connections, keyed by (address, port, unix, TLS settings, SNI).

Bookkeeping only: which connections are idle and for how long. The I/O lives in
``upstream.UpstreamConnection``; connecting (TCP + TLS + peer name check) happens here because
it is what turns an address into a usable connection.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
from typing import NamedTuple

from ..errors import UpstreamConnectError
from . import tls
from .compile import CompiledDestination
from .upstream import UpstreamConnection

log = logging.getLogger("pyproxy.pool")

DEFAULT_IDLE_TIMEOUT = 60.0


class PoolKey(NamedTuple):
    """What makes two upstream connections interchangeable (aiohttp's ``ConnectionKey``).

    It holds the ``SSLContext`` itself, compared and hashed by identity, not ``id(context)``:
    once a context is garbage collected (a reload dropped its settings) a new context may get
    the same id, and a connection made with the old trust and client certificate would then be
    handed to requests that want the new ones. Holding the context also keeps it alive while
    connections made with it are pooled."""

    host: str
    port: int
    unix: bool
    ssl_context: ssl.SSLContext | None
    sni: str | None


class Pool:
    """Idle connections per key, most recently used first. Idle expiry is swept periodically
    (one timer per pool, not one per connection: releasing and taking a connection is on the
    per-request path)."""

    def __init__(self, idle_timeout: float = DEFAULT_IDLE_TIMEOUT, max_idle_per_key: int = 256) -> None:
        self.idle_timeout = idle_timeout
        self.max_idle_per_key = max_idle_per_key
        self._idle: dict[PoolKey, list[UpstreamConnection]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.connects = 0  # new connections opened (for tests and metrics)

    @staticmethod
    def key(dest: CompiledDestination, host: str, port: int, unix: bool) -> PoolKey:
        return PoolKey(host, port, unix, dest.ssl_context, dest.tls.sni if dest.tls else None)

    def take(self, key: PoolKey) -> UpstreamConnection | None:
        """An idle connection for ``key``, without waiting; None when there is none."""
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    async def acquire(self, dest: CompiledDestination, host: str, port: int, unix: bool,
                      fresh: bool = False) -> tuple[UpstreamConnection, bool]:
        """A connection to (host, port) for ``dest``, and whether it was reused from the pool;
        ``fresh`` skips the idle connections."""
        key = self.key(dest, host, port, unix)
        conn = None if fresh else self.take(key)
        if conn is not None:
            return conn, True
        return await self.connect(key, dest, host, port, unix), False

    def release(self, conn: UpstreamConnection) -> None:
        """Return a connection whose exchange finished cleanly and that may be reused."""
        if conn.closed:
            return
        idle = self._idle.get(conn.key)
        if idle is None:
            idle = self._idle[conn.key] = []
        if len(idle) >= self.max_idle_per_key:
            conn.close()
            return
        loop = self._loop
        if loop is None:
            # cached: on Python 3.11 get_running_loop() costs a getpid() syscall per call
            loop = self._loop = asyncio.get_running_loop()
        conn.idle_since = loop.time()
        idle.append(conn)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._sweep_interval(), self._sweep)

    def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _sweep_interval(self) -> float:
        return max(0.05, min(self.idle_timeout / 4, 5.0))

    def _sweep(self) -> None:
        """Close connections idle for longer than ``idle_timeout`` (they sit oldest first)."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() - self.idle_timeout
        for key in list(self._idle):
            idle = self._idle[key]
            expired = 0
            while expired < len(idle) and idle[expired].idle_since <= deadline:
                idle[expired].close()
                expired += 1
            del idle[:expired]
            if not idle:
                del self._idle[key]
        if self._idle:
            self._sweeper = loop.call_later(self._sweep_interval(), self._sweep)

    def _lost(self, conn: UpstreamConnection) -> None:
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    async def connect(self, key: PoolKey, dest: CompiledDestination, host: str, port: int,
                      unix: bool) -> UpstreamConnection:
        """A new connection (TCP or unix, then TLS and the peer name check when ``dest`` has TLS)."""
        loop = asyncio.get_running_loop()
        sni = key.sni
        ctx = dest.ssl_context

        def factory() -> UpstreamConnection:
            return UpstreamConnection(key)

        try:
            if unix:
                coro = loop.create_unix_connection(factory, host, ssl=ctx, server_hostname=sni if ctx else None)
            else:
                coro = loop.create_connection(factory, host, port, ssl=ctx, server_hostname=sni if ctx else None)
            transport, conn = await asyncio.wait_for(coro, dest.connect_timeout)
        except asyncio.TimeoutError:
            raise UpstreamConnectError("connection timeout") from None
        except (ssl.SSLError, OSError) as exc:
            raise UpstreamConnectError("connection failure", tls.transport_failure_reason(exc)) from exc
        if ctx is not None and dest.tls is not None and not dest.tls.insecure_skip_verify:
            peer = transport.get_extra_info("ssl_object").getpeercert()
            reason = tls.verify_peer(peer, dest.tls)
            if reason is not None:
                transport.abort()
                raise UpstreamConnectError("connection failure", tls.transport_failure_reason(None, reason))
        self.connects += 1
        conn.on_lost = self._lost
        return conn

"""Keep-alive upstream connections, keyed by (address, port, unix, TLS settings, SNI).

Bookkeeping only: which connections are idle and for how long. The I/O lives in
``upstream.UpstreamConnection``; connecting (TCP + TLS + peer name check) happens here because
it is what turns an address into a usable connection.
"""
from __future__ import annotations

import asyncio
import logging
import ssl

from ..errors import UpstreamConnectError
from . import tls
from .compile import CompiledDestination
from .upstream import UpstreamConnection

log = logging.getLogger("pyproxy.pool")

DEFAULT_IDLE_TIMEOUT = 60.0


class Pool:
    def __init__(self, idle_timeout: float = DEFAULT_IDLE_TIMEOUT, max_idle_per_key: int = 256) -> None:
        self.idle_timeout = idle_timeout
        self.max_idle_per_key = max_idle_per_key
        self._idle: dict[tuple, list[UpstreamConnection]] = {}
        self._timers: dict[UpstreamConnection, asyncio.TimerHandle] = {}
        self.connects = 0  # new connections opened (for tests and metrics)

    async def acquire(self, dest: CompiledDestination, host: str, port: int, unix: bool,
                      fresh: bool = False) -> tuple[UpstreamConnection, bool]:
        """A connection to (host, port) for ``dest``, and whether it was reused from the pool;
        ``fresh`` skips the idle connections."""
        sni = dest.tls.sni if dest.tls else None
        key = (host, port, unix, id(dest.ssl_context), sni)
        idle = None if fresh else self._idle.get(key)
        while idle:
            conn = idle.pop()
            timer = self._timers.pop(conn, None)
            if timer is not None:
                timer.cancel()
            if not conn.closed:
                return conn, True
        return await self._connect(key, dest, host, port, unix, sni), False

    def release(self, conn: UpstreamConnection) -> None:
        """Return a connection whose exchange finished cleanly and that may be reused."""
        if conn.closed:
            return
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) >= self.max_idle_per_key:
            conn.close()
            return
        idle.append(conn)
        self._timers[conn] = asyncio.get_running_loop().call_later(self.idle_timeout, conn.close)

    def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        for timer in self._timers.values():
            timer.cancel()
        self._idle.clear()
        self._timers.clear()

    def _lost(self, conn: UpstreamConnection) -> None:
        timer = self._timers.pop(conn, None)
        if timer is not None:
            timer.cancel()
            idle = self._idle.get(conn.key)
            if idle and conn in idle:
                idle.remove(conn)

    async def _connect(self, key: tuple, dest: CompiledDestination, host: str, port: int, unix: bool,
                       sni: str | None) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
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

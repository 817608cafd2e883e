"""RequestMirror: a copy of the request sent to another destination, its response ignored.

Mirrors never affect the client: they run as their own tasks once the request is complete,
failures are logged at debug level, and each is bounded by ``Limits.mirror_timeout``. At most
``Limits.max_mirrors`` are in flight per runtime; past that, and when the mirror's upstream
is at its connection limit, a copy is dropped rather than queued, so a client cannot turn
its requests into an unbounded number of mirror connections.
"""
from __future__ import annotations

import asyncio
import logging

from ..errors import ProxyError, UpstreamOverflow
from .compile import CompiledDestination
from .dns import Resolver
from .encode import UpstreamRequest
from .limits import Limits
from .pool import Pool
from .upstream import Upstream, UpstreamConnection

log = logging.getLogger("pyproxy.mirror")


class _Discard:
    """The sink of a mirrored request: reads the response to its end and drops it."""

    __slots__ = ("done", "pool", "conn")

    def __init__(self, pool: Pool, conn: Upstream) -> None:
        self.done = asyncio.get_running_loop().create_future()
        self.pool = pool
        self.conn = conn

    def response_head(self, status, reason, headers) -> None:
        pass

    def response_body(self, data) -> None:
        pass

    def response_trailers(self, trailers) -> None:
        pass

    def flush(self) -> None:
        pass

    def upstream_pause(self) -> None:
        pass

    def upstream_resume(self) -> None:
        pass

    def response_end(self, reusable: bool) -> None:
        if reusable:
            self.pool.release(self.conn)
        if not self.done.done():
            self.done.set_result(None)

    def upgraded(self, conn: UpstreamConnection, first: bytes) -> None:
        conn.abort()  # mirrors never ask for an upgrade; a 101 is refused before this

    def upstream_failed(self, error: ProxyError) -> None:
        if not self.done.done():
            self.done.set_exception(error)


class Mirrors:
    """The mirrored requests in flight, each its own named task owned here (``stop`` cancels
    them). Connections come from the shared pool: an idle one when there is one, and back
    to it when the mirror's response ended cleanly."""

    def __init__(self, pool: Pool, resolver: Resolver, limits: Limits) -> None:
        self.pool = pool
        self.resolver = resolver
        self.limits = limits
        self.dropped = 0  # copies not sent: too many in flight, or their upstream at its limit
        self._tasks: set[asyncio.Task] = set()

    def __repr__(self) -> str:
        return f"<Mirrors in flight {len(self._tasks)}, dropped {self.dropped}>"

    def submit(self, dest: CompiledDestination, request: UpstreamRequest, body: list[bytes],
               head_request: bool) -> bool:
        """Start sending a copy (of the whole ``body``); False when it was dropped."""
        if len(self._tasks) >= self.limits.max_mirrors:
            self.dropped += 1
            log.debug("mirror to %s dropped: %d mirrors in flight", dest.name, len(self._tasks))
            return False
        task = asyncio.get_running_loop().create_task(self._send(dest, request, body, head_request),
                                                      name="pyproxy-mirror")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def _send(self, dest: CompiledDestination, request: UpstreamRequest, body: list[bytes],
                    head_request: bool) -> None:
        """Send one copy and wait, within ``mirror_timeout`` from the start, for its response
        to end; a connection left mid-exchange (timeout, cancel) is aborted, not pooled."""
        sink: _Discard | None = None
        try:
            async with asyncio.timeout(self.limits.mirror_timeout):
                addresses = dest.addresses(self.resolver.lookup) or await dest.resolve(self.resolver)
                if not addresses:
                    log.debug("mirror to %s: no endpoint", dest.name)
                    return
                target = dest.pick(addresses)
                if target is None:
                    log.debug("mirror to %s: no healthy endpoint", dest.name)
                    return
                conn, _ = await self.pool.acquire(dest, *target, wait=False)
                sink = _Discard(self.pool, conn)
                conn.start(sink, request, head_request)
                if body:
                    conn.send_body(body)
                conn.end_body()
                await sink.done
        except TimeoutError:
            log.debug("mirror to %s: no response within %ss", dest.name, self.limits.mirror_timeout)
        except UpstreamOverflow:
            self.dropped += 1
            log.debug("mirror to %s dropped: its upstream is at its connection limit", dest.name)
        except ProxyError as exc:
            log.debug("mirror to %s failed: %s", dest.name, exc)
        finally:
            held = sink.conn if sink is not None else None
            if held is not None and held.sink is sink:
                held.abort()  # the response has not ended (the connection clears its sink when it does)

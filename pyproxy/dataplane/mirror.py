"""RequestMirror: a copy of the request sent to another destination, its response ignored.

Mirrors never affect the client: they run as their own tasks once the request is complete,
failures are logged at debug level, and each is bounded by a deadline.
"""
from __future__ import annotations

import asyncio
import logging

from ..errors import ProxyError
from .compile import CompiledDestination
from .dns import Resolver
from .pool import Pool
from .upstream import UpstreamConnection

log = logging.getLogger("pyproxy.mirror")

MIRROR_TIMEOUT = 15.0


class _Discard:
    """The sink of a mirrored request: reads the response to its end and drops it."""

    __slots__ = ("done", "pool", "conn")

    def __init__(self, pool: Pool, conn: UpstreamConnection) -> None:
        self.done = asyncio.get_running_loop().create_future()
        self.pool = pool
        self.conn = conn

    def response_head(self, status, reason, headers) -> None:
        pass

    def response_body(self, data) -> None:
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

    def upstream_failed(self, error: ProxyError) -> None:
        if not self.done.done():
            self.done.set_exception(error)


async def send(dest: CompiledDestination, resolver: Resolver, pool: Pool, head: bytes, body: list[bytes],
               head_request: bool) -> None:
    """Send one mirrored request (``body``: already framed pieces) and wait, bounded, for its
    response to end."""
    try:
        addresses = dest.addresses(resolver.lookup) or await dest.resolve(resolver)
        if not addresses:
            log.debug("mirror to %s: no endpoint", dest.name)
            return
        conn, _ = await pool.acquire(dest, *dest.pick(addresses))
    except ProxyError as exc:
        log.debug("mirror to %s failed: %s", dest.name, exc)
        return
    sink = _Discard(pool, conn)
    conn.start(sink, head, head_request)
    if body:
        conn.transport.writelines(body)
    try:
        await asyncio.wait_for(sink.done, MIRROR_TIMEOUT)
    except asyncio.TimeoutError:
        log.debug("mirror to %s: no response within %ss", dest.name, MIRROR_TIMEOUT)
        conn.abort()
    except ProxyError as exc:
        log.debug("mirror to %s failed: %s", dest.name, exc)

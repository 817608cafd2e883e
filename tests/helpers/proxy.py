"""Running the data plane in front of test upstreams in one line."""
from __future__ import annotations

from contextlib import asynccontextmanager

from pyproxy import ir
from tests.conftest import destination, forward, listener, serve_ir


@asynccontextmanager
async def proxy_routes(*routes: ir.Route, hostname: str = "*"):
    """Serve ``routes`` on one HTTP listener; yields (runtime, port)."""
    async with serve_ir(ir.Config((listener(*routes, hostname=hostname),))) as rt:
        yield rt, rt.ports[("127.0.0.1", 0)]


@asynccontextmanager
async def proxy_to(port: int, tls: ir.UpstreamTLS | None = None, **route_kw):
    """Serve one catch-all route forwarding to 127.0.0.1:``port``; yields (runtime, port)."""
    async with proxy_routes(forward("httproute/default/test/rule/0/match/0", destination(port, tls=tls),
                                    **route_kw)) as served:
        yield served

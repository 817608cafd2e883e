"""Running the data plane in front of test upstreams in one line."""
from __future__ import annotations

from contextlib import asynccontextmanager

from pyproxy import ir
from pyproxy.dataplane.limits import DEFAULT, Limits
from tests.conftest import destination, forward, listener, serve_ir


@asynccontextmanager
async def proxy_routes(*routes: ir.Route, hostname: str = "*", limits: Limits = DEFAULT):
    """Serve ``routes`` on one HTTP listener; yields (runtime, port)."""
    async with serve_ir(ir.Config((listener(*routes, hostname=hostname),)), limits=limits) as rt:
        yield rt, rt.ports[("127.0.0.1", 0)]


@asynccontextmanager
async def proxy_to(port: int, tls: ir.UpstreamTLS | None = None, limits: Limits = DEFAULT, **route_kw):
    """Serve one catch-all route forwarding to 127.0.0.1:``port``; yields (runtime, port)."""
    async with proxy_routes(forward("httproute/default/test/rule/0/match/0", destination(port, tls=tls),
                                    **route_kw), limits=limits) as served:
        yield served

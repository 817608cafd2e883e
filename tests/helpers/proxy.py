"""Running the data plane in front of test upstreams in one line."""
from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from pyproxy import admin, ir
from pyproxy.dataplane.limits import DEFAULT, Limits
from pyproxy.runtime import Runtime, Settings
from tests.conftest import destination, forward, listener, serve_ir


@asynccontextmanager
async def proxy_routes(*routes: ir.Route, hostname: str = "*", limits: Limits = DEFAULT):
    """Serve ``routes`` on one HTTP listener; yields (runtime, port)."""
    async with serve_ir(ir.Config((listener(*routes, hostname=hostname),)), limits=limits) as rt:
        yield rt, rt.ports[("127.0.0.1", 0)]


@asynccontextmanager
async def serve_with_admin(config_dir: Path):
    """A runtime serving ``config_dir`` (implicit listener on 127.0.0.1, any port) with its
    admin on 127.0.0.1; yields (runtime, admin port)."""
    runtime = Runtime(Settings(config_paths=(str(config_dir),), listen=("127.0.0.1", 0), access_log="off"))
    runner = await admin.start(runtime, "127.0.0.1", 0)
    try:
        await runtime.start()
        yield runtime, runner.addresses[0][1]
    finally:
        await runtime.stop()
        await runner.cleanup()


@asynccontextmanager
async def proxy_to(port: int, tls: ir.UpstreamTLS | None = None, limits: Limits = DEFAULT, http2: bool = False,
                   **route_kw):
    """Serve one catch-all route forwarding to 127.0.0.1:``port`` (speaking HTTP/2 to it when
    ``http2``); yields (runtime, port)."""
    async with proxy_routes(forward("httproute/default/test/rule/0/match/0",
                                    destination(port, tls=tls, http2=http2), **route_kw), limits=limits) as served:
        yield served

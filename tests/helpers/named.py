"""Shared by the reload and drain tests: upstreams that answer their own name, and a config
routing to one of them."""
from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

from aiohttp import web

HOST = "app.example.com"


def route_config(target_port: int, listeners: tuple[int, ...] = (), name: str = "app") -> str:
    """An HTTPRoute to 127.0.0.1:``target_port``; with ``listeners``, a Gateway with one HTTP
    listener per port (else the implicit listener)."""
    gateway = ""
    parent = ""
    if listeners:
        entries = "".join(f"  - name: l{port}\n    port: {port}\n    protocol: HTTP\n" for port in listeners)
        gateway = f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  gatewayClassName: pyproxy
  listeners:
{entries}---
"""
        parent = "  parentRefs:\n  - name: gw\n"
    return f"""\
{gateway}apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: {name}
spec:
{parent}  hostnames: [{HOST}]
  rules:
  - backendRefs:
    - group: gateway.envoyproxy.io
      kind: Backend
      name: {name}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata:
  name: {name}
spec:
  endpoints:
  - ip:
      address: 127.0.0.1
      port: {target_port}
"""


class Named:
    """An upstream that answers its own name (``/slow`` after a second, ``/slow/<s>`` after s seconds)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.arrived = 0  # requests received
        self.answered = 0  # requests answered
        self.transports: set[asyncio.BaseTransport] = set()  # connections with a request in progress
        self.peers: list[int] = []  # the client port of each request (which pooled connection)

    async def wait_arrived(self, count: int, timeout: float = 10) -> None:
        """Until ``count`` requests in all have reached this upstream."""
        async def arrived() -> None:
            while self.arrived < count:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(arrived(), timeout)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Named:
        """Listen on ``host``:``port`` (0: any free port; the same port again restarts it)."""
        async def answer(request: web.Request) -> web.Response:
            self.arrived += 1
            transport = request.transport
            peer = transport.get_extra_info("peername") if transport else None
            self.peers.append(peer[1] if peer else 0)
            if transport is not None:
                self.transports.add(transport)
            try:
                if request.path.startswith("/slow"):
                    await asyncio.sleep(float(request.path[6:] or 1))
            finally:
                self.transports.discard(transport)
            self.answered += 1
            return web.Response(text=self.name)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", answer)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)  # slow handlers are cut
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # started above
        return self

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    async def kill(self) -> int:
        """Stop as a crashing process would: the connections of requests in progress are reset
        (not answered), then the listener closes. Returns how many requests were cut."""
        cut = len(self.transports)
        for transport in list(self.transports):
            transport.abort()
        await self.stop()
        return cut


def ready(admin_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code

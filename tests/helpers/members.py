"""Upstreams for load-balancing and health-check tests: each answers its own name on the
address a test gives it (127.0.0.1, 127.0.0.2 …), with a status the test sets, answers health
probes on ``/healthz`` with another, holds ``/hold`` requests until released, and can stop and
start again on the same address and port."""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web

from pyproxy import admin, ir
from pyproxy.runtime import Runtime
from tests.helpers.proxy import proxy_routes

HEALTH_PATH = "/healthz"


class Member:
    """One endpoint. ``status`` answers traffic, ``health`` the probes (whose Host headers
    are kept in ``probe_hosts``); ``served`` counts the traffic it answered."""

    def __init__(self, name: str, host: str = "127.0.0.1") -> None:
        self.name = name
        self.host = host
        self.port = 0
        self.status = 200
        self.health = 200
        self.served = 0
        self.probe_hosts: list[str] = []
        self.holding = 0  # /hold requests waiting for ``release``
        self.release = asyncio.Event()
        self.runner: web.AppRunner | None = None

    @property
    def endpoint(self) -> ir.Endpoint:
        return ir.Endpoint("ip", self.host, self.port)

    async def answer(self, request: web.Request) -> web.Response:
        if request.path == HEALTH_PATH:
            self.probe_hosts.append(request.headers.get("Host", ""))
            return web.Response(status=self.health, text=f"{self.name} health")
        self.served += 1
        if request.path == "/hold":
            self.holding += 1
            await self.release.wait()
            self.holding -= 1
        return web.Response(status=self.status, text=self.name)

    async def start(self) -> Member:
        """Listen on ``host`` (the same port as before after a ``stop``)."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.answer)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # started above
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            self.release.set()
            await self.runner.cleanup()
            self.runner = None
            self.release = asyncio.Event()


async def start_members(count: int) -> list[Member]:
    """``count`` members a, b, c … on 127.0.0.1, 127.0.0.2, 127.0.0.3 …"""
    return [await Member("abcdefgh"[i], f"127.0.0.{i + 1}").start() for i in range(count)]


def destination(members: Iterable[Member], name: str = "backend/default/pool", **kw) -> ir.Destination:
    return ir.Destination(name=name, endpoints=tuple(m.endpoint for m in members), **kw)


async def until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Poll ``predicate`` every 20 ms until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def proxy_with_admin(*routes: ir.Route) -> AsyncIterator[tuple[Runtime, int, Admin]]:
    """``proxy_routes`` with the admin interface on 127.0.0.1 too; yields (runtime, port, admin)."""
    async with proxy_routes(*routes) as (runtime, port):
        runner = await admin.start(runtime, "127.0.0.1", 0)
        try:
            async with aiohttp.ClientSession() as session:
                yield runtime, port, Admin(session, runner.addresses[0][1])
        finally:
            await runner.cleanup()


class Admin:
    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session = session
        self.port = port

    async def text(self, path: str) -> str:
        async with self.session.get(f"http://127.0.0.1:{self.port}{path}",
                                    timeout=aiohttp.ClientTimeout(total=10)) as resp:
            assert resp.status == 200, resp.status
            return await resp.text()

    async def clusters(self) -> dict:
        return json.loads(await self.text("/clusters?format=json"))

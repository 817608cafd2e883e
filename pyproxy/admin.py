"""The admin interface (aiohttp): readiness and the IR dump, bound to loopback by default."""
from __future__ import annotations

import dataclasses

from aiohttp import web

from . import ir
from .runtime import Runtime


def status_dict(result) -> list[dict]:
    return [
        {
            "kind": s.kind,
            "namespace": s.namespace,
            "name": s.name,
            "location": s.location,
            "conditions": [dataclasses.asdict(c) for c in s.conditions],
        }
        for s in result.statuses
    ]


def make_app(runtime: Runtime) -> web.Application:
    async def ready(_request: web.Request) -> web.Response:
        if runtime.ready:
            return web.Response(text="LIVE\n")
        return web.Response(status=503, text="NOT READY\n")

    async def config_dump(_request: web.Request) -> web.Response:
        if runtime.result is None:
            return web.json_response({"error": "no configuration loaded"}, status=503)
        return web.json_response({
            "config": ir.to_dict(runtime.result.config),
            "statuses": status_dict(runtime.result),
        })

    app = web.Application()
    app.router.add_get("/ready", ready)
    app.router.add_get("/config_dump", config_dump)
    return app


async def start(runtime: Runtime, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(make_app(runtime), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    return runner

"""The admin interface (aiohttp): readiness and the IR dump, bound to loopback by default.

Two guards, because the dump holds certificates and the whole routing table:
- Content redaction: ``ir.to_dict`` redacts listener keys by field, but a PEM private key can
  sit anywhere a user pastes PEM (a ``ca.crt`` bundle exported together with its key), so
  every private-key block in any string of the dump is replaced as well.
- Host check (DNS rebinding): a web page can point a name it controls at 127.0.0.1 and then
  read the admin from the victim's browser as same-origin. Such a request carries that name as
  Host, so the admin answers only a Host that is an IP literal or ``localhost``.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import re

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


REDACTED_KEY = "[redacted private key]"

# From a BEGIN line naming any kind of private key (PKCS#8, RSA, EC, ENCRYPTED, OPENSSH …) to
# the next END line of a private key, or to the end of the string when the block is cut short.
_PRIVATE_KEY_BLOCK = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
                                re.DOTALL | re.IGNORECASE)


def redact_private_keys(value: object) -> object:
    """JSON-ready ``value`` with every PEM private-key block in any string replaced."""
    if isinstance(value, str):
        return _PRIVATE_KEY_BLOCK.sub(REDACTED_KEY, value)
    if isinstance(value, dict):
        return {key: redact_private_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_private_keys(item) for item in value]
    return value


def local_host(host: str) -> bool:
    """Whether a Host header value is an IP literal (IPv6 in brackets) or ``localhost``,
    with or without a port."""
    if host.startswith("["):
        address, bracket, port = host[1:].partition("]")
        if not bracket:
            return False
        version = 6
    else:
        address = host.partition(":")[0]
        port = host[len(address):]
        version = 4
    if port and not (port[0] == ":" and port[1:].isascii() and port[1:].isdigit()):
        return False
    return (version == 4 and address.lower() == "localhost") or _ip_literal(address, version)


def _ip_literal(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


@web.middleware
async def refuse_other_hosts(request: web.Request, handler) -> web.StreamResponse:
    """403 unless the request has exactly one Host header and it passes ``local_host``."""
    hosts = request.headers.getall("Host", [])
    if len(hosts) != 1 or not local_host(hosts[0]):
        return web.Response(status=403, text="admin answers only Host: an IP address or localhost\n")
    return await handler(request)


def make_app(runtime: Runtime) -> web.Application:
    async def ready(_request: web.Request) -> web.Response:
        if runtime.ready:
            return web.Response(text="LIVE\n")
        return web.Response(status=503, text="NOT READY\n")

    async def config_dump(_request: web.Request) -> web.Response:
        if runtime.result is None:
            return web.json_response({"error": "no configuration loaded"}, status=503)
        return web.json_response(redact_private_keys({
            "config": ir.to_dict(runtime.result.config),
            "statuses": status_dict(runtime.result),
        }))

    app = web.Application(middlewares=[refuse_other_hosts])
    app.router.add_get("/ready", ready)
    app.router.add_get("/config_dump", config_dump)
    return app


async def start(runtime: Runtime, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(make_app(runtime), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    return runner

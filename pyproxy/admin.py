"""The admin interface (aiohttp), bound to loopback by default, on Envoy's admin paths: the
index (``/``, ``/help``), ``/ready``, ``/server_info``, ``/config_dump``, ``/clusters``,
``/stats/prometheus``, ``/logging`` and ``/reopen_logs``. What changes state answers POST
only: GET with parameters on ``/logging``, or any GET on ``/reopen_logs``, is 405 (as Envoy,
whose mutating endpoints refuse any method but POST).

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
import logging
import re
import time
from typing import TYPE_CHECKING

from aiohttp import web

from . import __version__, ir
from .dataplane.compile import CompiledDestination
from .runtime import Runtime
from .stats import FAILED_ACTIVE_HC, FAILED_OUTLIER_CHECK, HostStats

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

# path, methods, what it is (the index lists them in this order)
ENDPOINTS = (
    ("/", "GET", "this index (also /help)"),
    ("/ready", "GET", "200 LIVE once every listener accepts connections, else 503"),
    ("/server_info", "GET", "version, state, uptime, configuration generation and files, last reload error (JSON)"),
    ("/config_dump", "GET", "the routing table (IR) and every status condition, private keys redacted (JSON)"),
    ("/clusters", "GET", "each cluster's upstream addresses with health and counters (text; ?format=json)"),
    ("/stats/prometheus", "GET", "metrics in the Prometheus text format, Envoy's names"),
    ("/logging", "GET, POST", "the pyproxy loggers' levels; POST ?level=debug|info|warning|error sets them"),
    ("/reopen_logs", "POST", "reopen the access log file (as SIGUSR1 does)"),
)
LEVELS = ("debug", "info", "warning", "error")  # as --log-level


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


def state(runtime: Runtime) -> str:
    """Envoy's server state: LIVE while serving, INITIALIZING before the first configuration
    is served, DRAINING once shutting down."""
    if runtime.draining:
        return "DRAINING"
    return "LIVE" if runtime.ready else "INITIALIZING"


def server_info(runtime: Runtime) -> dict:
    uptime = f"{int(time.time() - runtime.started)}s"
    return {
        "version": __version__,
        "state": state(runtime),
        "uptime_current_epoch": uptime,
        "uptime_all_epochs": uptime,
        "generation": runtime.generation,
        "config_files": list(runtime.files),
        "reloads": dict(runtime.reloads),
        "last_reload_error": runtime.last_reload_error,
    }


# a host's stats as Envoy lists them (sorted by name), each a counter or a gauge
HOST_STATS = (("cx_active", "GAUGE"), ("cx_connect_fail", "COUNTER"), ("cx_total", "COUNTER"),
              ("rq_active", "GAUGE"), ("rq_error", "COUNTER"), ("rq_total", "COUNTER"))


def _hosts(runtime: Runtime, dest: CompiledDestination) -> list[tuple[str, dict[str, object], str | None, HostStats]]:
    """A destination's current addresses (FQDN endpoints as last resolved): Envoy's text
    form of each, its JSON address, the DNS name it came from, and its stats and health."""
    out: list[tuple[str, dict[str, object], str | None, HostStats]] = []
    for target, hostname in dest.hosts(runtime.resolver.lookup):
        host, port, unix = target
        stats = dest.stats.hosts.get(target) or HostStats(dest.stats, dest.stats.initial_health)
        if unix:
            out.append((host, {"pipe": {"path": host}}, hostname, stats))
        else:
            text = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            out.append((text, {"socket_address": {"address": host, "port_value": port}}, hostname, stats))
    return out


def clusters(runtime: Runtime) -> dict:
    """Envoy's ``/clusters?format=json`` for the fields pyproxy has: each destination of the
    serving snapshot with its current upstream addresses, their stats (``name``, ``value``,
    ``type``), health (``eds_health_status``, and ``failed_active_health_check`` /
    ``failed_outlier_check`` when set, as Envoy leaves false out) and weight."""
    assert runtime.snapshot is not None
    statuses = []
    for name, dest in sorted(runtime.snapshot.destinations.items()):
        hosts = []
        for _, address, hostname, stats in _hosts(runtime, dest):
            health: dict[str, object] = {"eds_health_status": "HEALTHY"}
            if stats.health & FAILED_ACTIVE_HC:
                health["failed_active_health_check"] = True
            if stats.health & FAILED_OUTLIER_CHECK:
                health["failed_outlier_check"] = True
            entry: dict[str, object] = {"address": address}
            if hostname:
                entry["hostname"] = hostname
            entry["stats"] = [{"name": field, "value": getattr(stats, field), "type": kind}
                              for field, kind in HOST_STATS]
            entry["health_status"] = health
            entry["weight"] = 1
            hosts.append(entry)
        statuses.append({"name": name, "host_statuses": hosts})
    return {"cluster_statuses": statuses}


def clusters_text(runtime: Runtime) -> str:
    """Envoy's text ``/clusters``: ``<cluster>::<host>:<port>::<field>::<value>`` lines, the
    stats then ``hostname``, ``health_flags`` (``healthy``, or ``/failed_active_hc``,
    ``/failed_outlier_check``) and ``weight`` of each address."""
    assert runtime.snapshot is not None
    lines: list[str] = []
    for name, dest in sorted(runtime.snapshot.destinations.items()):
        for text, _, hostname, stats in _hosts(runtime, dest):
            prefix = f"{name}::{text}::"
            lines.extend(f"{prefix}{field}::{getattr(stats, field)}" for field, _ in HOST_STATS)
            lines.append(f"{prefix}hostname::{hostname or ''}")
            lines.append(f"{prefix}health_flags::{stats.flags()}")
            lines.append(f"{prefix}weight::1")
    return "".join(line + "\n" for line in lines)


def logger_levels() -> str:
    """Every pyproxy logger and its effective level, as Envoy lists its loggers."""
    names = sorted(name for name, logger in logging.root.manager.loggerDict.items()
                   if isinstance(logger, logging.Logger) and (name == "pyproxy" or name.startswith("pyproxy.")))
    lines = [f"  {name}: {logging.getLevelName(logging.getLogger(name).getEffectiveLevel()).lower()}"
             for name in names]
    return "\n".join(["active loggers:", *lines]) + "\n"


def index() -> str:
    width = max(len(path) for path, _, _ in ENDPOINTS)
    lines = [f"  {path:<{width}}  {methods:<9}  {what}" for path, methods, what in ENDPOINTS]
    return "\n".join(["pyproxy admin:", *lines]) + "\n"


def make_app(runtime: Runtime) -> web.Application:
    registry: CollectorRegistry | None = None  # built on the first scrape (see prometheus)

    async def home(_request: web.Request) -> web.Response:
        return web.Response(text=index())

    async def ready(_request: web.Request) -> web.Response:
        if runtime.ready:
            return web.Response(text="LIVE\n")
        return web.Response(status=503, text="NOT READY\n")

    async def info(_request: web.Request) -> web.Response:
        return web.json_response(server_info(runtime))

    async def config_dump(_request: web.Request) -> web.Response:
        if runtime.result is None:
            return web.json_response({"error": "no configuration loaded"}, status=503)
        return web.json_response(redact_private_keys({
            "config": ir.to_dict(runtime.result.config),
            "statuses": status_dict(runtime.result),
        }))

    async def cluster_status(request: web.Request) -> web.Response:
        if runtime.snapshot is None:
            return web.json_response({"error": "no configuration loaded"}, status=503)
        if request.query.get("format") == "json":
            return web.json_response(clusters(runtime))
        return web.Response(text=clusters_text(runtime))

    async def prometheus(request: web.Request) -> web.Response:
        # prometheus_client on the first scrape: 4 MiB of RSS a proxy nobody scrapes does not pay
        from prometheus_client.exposition import choose_encoder

        from . import metrics

        nonlocal registry
        if registry is None:
            registry = metrics.registry(runtime)
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(registry), headers={"Content-Type": content_type})

    async def show_logging(request: web.Request) -> web.Response:
        if request.query:
            return web.Response(status=405, text="Method GET not allowed, POST required.\n",
                                headers={"Allow": "POST"})
        return web.Response(text=logger_levels())

    async def set_logging(request: web.Request) -> web.Response:
        unknown = sorted(set(request.query) - {"level"})
        if unknown:
            return web.Response(status=400, text=f"unknown parameter {unknown[0]}; use ?level=LEVEL\n")
        level = request.query.get("level")
        if level is not None:
            if level.lower() not in LEVELS:
                return web.Response(status=400, text=f"unknown level {level!r}; use one of {', '.join(LEVELS)}\n")
            logging.getLogger("pyproxy").setLevel(level.upper())
        return web.Response(text=logger_levels())

    async def reopen_logs(_request: web.Request) -> web.Response:
        runtime.access_log.reopen()
        return web.Response(text="OK\n")

    app = web.Application(middlewares=[refuse_other_hosts])
    app.router.add_get("/", home)
    app.router.add_get("/help", home)
    app.router.add_get("/ready", ready)
    app.router.add_get("/server_info", info)
    app.router.add_get("/config_dump", config_dump)
    app.router.add_get("/clusters", cluster_status)
    app.router.add_get("/stats/prometheus", prometheus)
    app.router.add_get("/logging", show_logging)
    app.router.add_post("/logging", set_logging)
    app.router.add_post("/reopen_logs", reopen_logs)
    return app


async def start(runtime: Runtime, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(make_app(runtime), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    return runner

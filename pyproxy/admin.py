"""The admin interface, bound to loopback by default, on Envoy's admin paths: the index
(``/``, ``/help``), ``/ready``, ``/server_info``, ``/config_dump``, ``/clusters``,
``/stats/prometheus``, ``/logging`` and ``/reopen_logs``. What changes state answers POST
only: GET with parameters on ``/logging``, or any GET on ``/reopen_logs``, is 405 (as Envoy,
whose mutating endpoints refuse any method but POST).

Each endpoint is a plain function of the ``Admin`` and the request returning (status,
headers, body), and ``adminserver`` speaks HTTP for them. As when aiohttp served the admin
(it cost about 11 MiB of RSS in every serving process): an unknown path is 404, a method the
path does not take 405 with ``Allow``, and HEAD is answered as GET without the body.

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
import json
import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import __version__, adminserver, ir
from .adminserver import TEXT, Request, Response, error
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


HOST_REFUSED = "admin answers only Host: an IP address or localhost\n"


def allowed_hosts(hosts: list[str]) -> bool:
    """Exactly one Host header, and it passes ``local_host`` (else 403 ``HOST_REFUSED``)."""
    return len(hosts) == 1 and local_host(hosts[0])


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


def text(body: str, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    return status, [("Content-Type", TEXT), *(headers or [])], body.encode()


def json_response(value: object, status: int = 200) -> Response:
    return status, [("Content-Type", "application/json; charset=utf-8")], json.dumps(value).encode()


class Admin:
    """The answer to every admin request: the Host check, then the endpoint by path and
    method."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.registry: CollectorRegistry | None = None  # built on the first scrape (see prometheus)

    def __call__(self, request: Request) -> Response:
        if not allowed_hosts(request.header("host")):
            return text(HOST_REFUSED, 403)
        methods = ROUTES.get(request.path)
        if methods is None:
            return error(404)
        endpoint = methods.get("GET" if request.method == "HEAD" else request.method)
        if endpoint is None:
            allowed = {*methods, "HEAD"} if "GET" in methods else set(methods)
            return error(405, [("Allow", ",".join(sorted(allowed)))])
        return endpoint(self, request)


def home(_admin: Admin, _request: Request) -> Response:
    return text(index())


def ready(admin: Admin, _request: Request) -> Response:
    if admin.runtime.ready:
        return text("LIVE\n")
    return text("NOT READY\n", 503)


def info(admin: Admin, _request: Request) -> Response:
    return json_response(server_info(admin.runtime))


def config_dump(admin: Admin, _request: Request) -> Response:
    result = admin.runtime.result
    if result is None:
        return json_response({"error": "no configuration loaded"}, 503)
    return json_response(redact_private_keys({"config": ir.to_dict(result.config), "statuses": status_dict(result)}))


def cluster_status(admin: Admin, request: Request) -> Response:
    if admin.runtime.snapshot is None:
        return json_response({"error": "no configuration loaded"}, 503)
    if request.param("format") == "json":
        return json_response(clusters(admin.runtime))
    return text(clusters_text(admin.runtime))


def prometheus(admin: Admin, request: Request) -> Response:
    # prometheus_client on the first scrape: 4 MiB of RSS a proxy nobody scrapes does not pay
    from prometheus_client.exposition import choose_encoder

    from . import metrics

    if admin.registry is None:
        admin.registry = metrics.registry(admin.runtime)
    accept = request.header("accept")
    encode, content_type = choose_encoder(accept[0] if accept else "")
    return 200, [("Content-Type", content_type)], encode(admin.registry)


def show_logging(_admin: Admin, request: Request) -> Response:
    if request.query:
        return text("Method GET not allowed, POST required.\n", 405, [("Allow", "POST")])
    return text(logger_levels())


def set_logging(_admin: Admin, request: Request) -> Response:
    unknown = sorted({name for name, _ in request.query} - {"level"})
    if unknown:
        return text(f"unknown parameter {unknown[0]}; use ?level=LEVEL\n", 400)
    level = request.param("level")
    if level is not None:
        if level.lower() not in LEVELS:
            return text(f"unknown level {level!r}; use one of {', '.join(LEVELS)}\n", 400)
        logging.getLogger("pyproxy").setLevel(level.upper())
    return text(logger_levels())


def reopen_logs(admin: Admin, _request: Request) -> Response:
    admin.runtime.access_log.reopen()
    return text("OK\n")


ROUTES: dict[str, dict[str, Callable[[Admin, Request], Response]]] = {
    "/": {"GET": home},
    "/help": {"GET": home},
    "/ready": {"GET": ready},
    "/server_info": {"GET": info},
    "/config_dump": {"GET": config_dump},
    "/clusters": {"GET": cluster_status},
    "/stats/prometheus": {"GET": prometheus},
    "/logging": {"GET": show_logging, "POST": set_logging},
    "/reopen_logs": {"POST": reopen_logs},
}


async def start(runtime: Runtime, host: str, port: int) -> adminserver.AdminServer:
    return await adminserver.start(Admin(runtime), host, port)

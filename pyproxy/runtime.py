"""Where the rooms meet: load → translate → compile → serve.

The runtime owns the shared parts (DNS cache, upstream pool, access log, listening sockets)
and the current compiled snapshot. Everything below it knows only its own room.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from . import config as config_room
from . import translate as translate_room
from .dataplane.compile import Snapshot, compile_config
from .dataplane.context import Context
from .dataplane.dns import Resolver
from .dataplane.limits import DEFAULT as DEFAULT_LIMITS
from .dataplane.limits import Limits
from .dataplane.pool import Pool
from .dataplane.server import HttpProtocol
from .errors import ConfigError
from .observe import AccessLog
from .startup import group_purpose, listen_error
from .stats import Stats
from .translate.status import ObjectStatus, Result

log = logging.getLogger("pyproxy")


@dataclass(frozen=True)
class Settings:
    config_paths: tuple[str, ...]
    listen: tuple[str, int] = ("127.0.0.1", 8080)
    bind_address: str = "0.0.0.0"
    nameservers: tuple[tuple[str, int], ...] | None = None
    dns_refresh: float = 30.0
    access_log: str = "-"
    access_log_format: str = "json"
    limits: Limits = DEFAULT_LIMITS


@dataclass(frozen=True)
class Loaded:
    files: tuple[str, ...]  # every file a document was read from, in order
    result: Result


def load(settings: Settings) -> Loaded:
    """Read and translate the configuration; raises ConfigError on shape errors."""
    loaded = _read(settings)
    files = dict.fromkeys(doc.location.file for doc in (*loaded.resources, *loaded.skipped))
    return Loaded(tuple(files), _translate(loaded, settings))


def _read(settings: Settings) -> config_room.Loaded:
    loaded = config_room.load(settings.config_paths)
    for skipped in loaded.skipped:
        log.info("skipping %s", skipped)
    for warning in loaded.warnings:
        log.warning("%s", warning)
    return loaded


def _translate(loaded: config_room.Loaded, settings: Settings) -> Result:
    options = translate_room.Options(implicit_address=settings.listen[0], implicit_port=settings.listen[1],
                                     bind_address=settings.bind_address)
    return translate_room.translate(loaded.resources, options)


def report_conditions(result: Result) -> None:
    """Log every error condition, and notes on accepted objects (there is no API server to
    write status to)."""
    for obj in result.statuses:
        for cond in obj.conditions:
            if cond.is_error:
                level = logging.WARNING
            elif cond.message:
                level = logging.INFO
            else:
                continue
            log.log(level, "%s %s/%s (%s): %s=%s (%s) %s", obj.kind, obj.namespace, obj.name, obj.location,
                    cond.type, cond.status, cond.reason, cond.message)


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.result: Result | None = None
        self.snapshot: Snapshot | None = None
        self.ready = False
        self.resolver = Resolver(settings.nameservers, settings.dns_refresh)
        self.pool = Pool(settings.limits)
        self.access_log = AccessLog(settings.access_log, log_format=settings.access_log_format)
        self.stats = Stats()  # outlives every snapshot: counts survive a reload
        self.context: Context | None = None
        self._servers: list[asyncio.base_events.Server] = []
        self.ports: dict[tuple[str, int], int] = {}
        self.files: tuple[str, ...] = ()
        self.started = time.time()
        self.generation = 0  # the configuration serving: 1 after start, +1 per successful reload
        self.last_reload_error: str | None = None  # the messages of the last failed reload, until one succeeds
        self.reloads = {"success": 0, "failure": 0}

    async def start(self) -> None:
        """Load, compile and bind every listener. Raises ConfigError or ListenError."""
        loaded = load(self.settings)
        self.files = loaded.files
        report_conditions(loaded.result)
        await self.serve(loaded.result)

    async def serve(self, result: Result) -> None:
        """Compile a translated config and bind its listeners; ``ports`` records the bound
        port of each listener group (they differ from the configured port only when that is 0)."""
        snapshot = await compile_config(result.config, self.stats)
        self.result, self.snapshot = result, snapshot
        self.context = Context(snapshot, self.resolver, self.pool, self.access_log, self.stats, self.settings.limits)
        self.resolver.set_watched(snapshot.dns_names)
        loop = asyncio.get_running_loop()
        ctx = self.context
        for key, group in snapshot.groups.items():
            scheme = "https" if group.ssl_context is not None else "http"

            def factory(key=key, scheme=scheme) -> HttpProtocol:
                return HttpProtocol(ctx, key, scheme)

            try:
                server = await loop.create_server(factory, host=group.address, port=group.port,
                                                  ssl=group.ssl_context, reuse_address=True, backlog=1024)
            except OSError as exc:
                listeners = [lst for lst in result.config.listeners if (lst.address, lst.port) == key]
                raise listen_error(group.address, group.port, group_purpose(listeners), exc) from exc
            self._servers.append(server)
            self.ports[key] = server.sockets[0].getsockname()[1]
        self.generation += 1
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        for server in self._servers:
            server.close()
        if self.context is not None:
            self.context.stop()
            for proto in list(self.context.connections):
                proto.transport.close()
        for server in self._servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 5.0)
            except TimeoutError:
                log.warning("listener did not close within 5 s")
        self.pool.close()
        await self.resolver.close()
        self.access_log.close()


@dataclass(frozen=True)
class Checked:
    """What ``pyproxy check`` found: the translation, and whether loading met a likely mistake."""

    result: Result
    mistaken: bool

    @property
    def statuses(self) -> tuple[ObjectStatus, ...]:
        return self.result.statuses

    @property
    def ok(self) -> bool:
        return self.result.ok and not self.mistaken


def check(paths: Sequence[str]) -> Checked:
    """``pyproxy check``: load and translate only; warnings are logged as ``serve`` logs them."""
    settings = Settings(config_paths=tuple(paths))
    loaded = _read(settings)
    return Checked(_translate(loaded, settings), any(warning.mistake for warning in loaded.warnings))


__all__ = ["ConfigError", "Runtime", "Settings", "check", "load"]

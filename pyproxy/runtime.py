"""Where the rooms meet: load → translate → compile → serve.

The runtime owns the shared parts (DNS cache, upstream pool, access log, listening sockets)
and the current compiled snapshot. Everything below it knows only its own room. Loading and
translating run in the loader process (loader.py): this module imports neither config/ nor
translate/.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from . import loader
from .dataplane.compile import Snapshot, compile_config
from .dataplane.context import Context
from .dataplane.dns import Resolver
from .dataplane.health import HealthChecks
from .dataplane.limits import DEFAULT as DEFAULT_LIMITS
from .dataplane.limits import Limits
from .dataplane.pool import Pool
from .dataplane.server import HttpProtocol
from .errors import ConfigError
from .listeners import Listeners
from .observe import AccessLog
from .startup import ListenError, group_purpose
from .stats import Stats
from .status import Result

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
    reuse_port: bool = False  # SO_REUSEPORT: worker processes share each listener


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
    """The serving process's state. ``start`` loads and binds; ``reload`` builds a complete
    new snapshot off the serving path and swaps it in with one assignment (a failed load
    changes nothing); ``drain`` stops gracefully; ``stop`` releases everything."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.result: Result | None = None
        self.snapshot: Snapshot | None = None
        self.ready = False
        self.draining = False
        self.resolver = Resolver(settings.nameservers, settings.dns_refresh)
        self.pool = Pool(settings.limits)
        self.health = HealthChecks(self.resolver)  # the serving snapshot's health checks
        self.access_log = AccessLog(settings.access_log, log_format=settings.access_log_format)
        self.stats = Stats()  # outlives every snapshot: counts survive a reload
        self.context: Context | None = None
        self.listeners = Listeners(self._protocol, reuse_port=settings.reuse_port)
        self.files: tuple[str, ...] = ()
        self.started = time.time()
        self.generation = 0  # the configuration serving: 1 after start, +1 per successful reload
        self.last_reload_error: str | None = None  # the messages of the last failed reload, until one succeeds
        self.reloads = {"success": 0, "failure": 0}
        self._reloading = asyncio.Lock()

    @property
    def ports(self) -> dict[tuple[str, int], int]:
        """The bound port of each listener group (it differs from the configured port only when that is 0)."""
        return self.listeners.ports

    async def start(self) -> None:
        """Load, compile and bind every listener. Raises ConfigError or ListenError. A reload
        asked for meanwhile (the watcher starts first) runs once this is done."""
        async with self._reloading:
            loaded = await self._load()
            report_conditions(loaded.result)
            await self._apply(loaded)

    async def serve(self, result: Result) -> None:
        """Compile an already translated config and bind its listeners."""
        await self._apply(loader.Loaded(self.files, result))

    async def reload(self) -> bool:
        """Load the configuration again and serve it. In-flight requests finish on the
        snapshot they started on; keep-alive connections route their next request on the new
        one; listener sockets are bound or drained as the change says. When the new config
        does not load or a new socket cannot be bound, nothing changes: the error is logged
        (the same messages as ``check``) and kept in ``last_reload_error``. Returns whether
        the new config serves. Concurrent calls run one after the other."""
        async with self._reloading:
            if self.draining or self.generation == 0:
                return False  # stopping, or the first load failed (the process is exiting)
            try:
                loaded = await self._load()
            except ConfigError as exc:
                return self._reload_failed(exc.messages)
            if self.result is not None and loaded.result == self.result and loaded.files == self.files:
                log.debug("reload: configuration unchanged (generation %d)", self.generation)
                self.last_reload_error = None  # what serves is what the files say again
                return True
            report_conditions(loaded.result)
            try:
                await self._apply(loaded)
            except ListenError as exc:
                return self._reload_failed([str(exc)])
            self.reloads["success"] += 1
            self.last_reload_error = None
            log.info("reloaded: generation %d serving", self.generation)
            return True

    async def _load(self) -> loader.Loaded:
        settings = self.settings
        return await loader.load(settings.config_paths, settings.listen, settings.bind_address)

    def _reload_failed(self, messages: Sequence[str]) -> bool:
        for message in messages:
            log.error("%s", message)
        log.error("reload failed: generation %d keeps serving", self.generation)
        self.reloads["failure"] += 1
        self.last_reload_error = "\n".join(messages)
        return False

    async def _apply(self, loaded: loader.Loaded) -> None:
        result = loaded.result
        snapshot = await compile_config(result.config, self.stats, self.settings.limits)

        def purpose(key: tuple[str, int]) -> str:
            return group_purpose([lst for lst in result.config.listeners if (lst.address, lst.port) == key])

        change = await self.listeners.apply(snapshot, purpose)
        if self.context is None:
            self.context = Context(snapshot, self.resolver, self.pool, self.access_log, self.stats,
                                   self.settings.limits)
        else:
            self.context.snapshot = snapshot
        self.result, self.snapshot, self.files = result, snapshot, loaded.files
        self.health.swap(snapshot)
        self.resolver.set_watched(snapshot.dns_names)
        for proto in list(self.context.connections):
            if proto.group_key in change.removed:
                proto.drain()
        self.generation += 1
        self.ready = True

    def _protocol(self, key: tuple[str, int], scheme: str) -> HttpProtocol:
        assert self.context is not None
        return HttpProtocol(self.context, key, scheme)

    async def drain(self, timeout: float) -> None:
        """Graceful stop: ``/ready`` turns 503 at once, the sockets stop accepting, idle
        keep-alive connections close, busy ones answer what they have (the last response with
        ``Connection: close``); after ``timeout`` seconds the rest is cut and counted."""
        self.ready = False
        self.draining = True
        self.listeners.close()
        if self.context is None:
            return
        busy = len(self.context.connections)
        log.info("draining %d connection%s (at most %g s)", busy, "" if busy == 1 else "s", timeout)
        cut = await self.context.drain(timeout)
        if cut:
            log.warning("drain timeout: %d connection%s cut", cut, "" if cut == 1 else "s")

    async def stop(self) -> None:
        self.ready = False
        self.listeners.close()
        if self.context is not None:
            self.context.stop()
            cut = list(self.context.connections)
            if cut:
                log.warning("stopped before draining: %d connection%s cut", len(cut), "" if len(cut) == 1 else "s")
            for proto in cut:
                proto.transport.close()
        await self.listeners.wait_closed(5.0)
        await self.health.close()
        self.pool.close()
        await self.resolver.close()
        self.access_log.close()


__all__ = ["ConfigError", "Runtime", "Settings"]

"""Running the proxy: ``pyproxy serve`` and ``pyproxy demo`` both come here.

Signals, as operators of nginx and Envoy expect them:
- SIGTERM / SIGINT: drain (``/ready`` 503 at once, sockets stop accepting, in-flight requests
  finish, idle keep-alive connections close), exit 0 when empty or after ``--drain-timeout``;
  a second one stops at once.
- SIGHUP: reload the configuration (as does a change to a ``--config`` path unless
  ``--no-watch``). A config that does not load changes nothing.
- SIGUSR1: reopen the ``--access-log`` file (after logrotate moved it).
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .errors import ConfigError
from .startup import ADMIN, DEFAULT_LISTEN, ListenError, format_address, listen_error, summary, worker_pipes

log = logging.getLogger("pyproxy")

BeforeStart = Callable[[], Awaitable[Callable[[], Awaitable[object]] | None]]


@dataclass(frozen=True)
class Options:
    """What the serving loop needs beyond ``runtime.Settings``."""

    listen_given: bool
    admin: tuple[str, int] | None
    watch: bool = True
    drain_timeout: float = 30.0
    worker_pipes: tuple[int, int] | None = None  # (report, lifeline) when run by a supervisor


def serve(args: argparse.Namespace, before_start: BeforeStart | None = None,
          on_ready: Callable[[], None] | None = None) -> int:
    """Run until SIGTERM/SIGINT. ``before_start`` (a coroutine function returning a cleanup
    coroutine function or None) runs first on the same loop (the demo starts its upstream
    there); ``on_ready`` runs once everything listens."""
    from .runtime import Settings

    pipes = worker_pipes()
    settings = Settings(
        config_paths=tuple(args.config),
        listen=args.listen or DEFAULT_LISTEN,
        bind_address=args.bind_address,
        nameservers=tuple(args.resolver) if args.resolver else None,
        dns_refresh=args.dns_refresh,
        access_log=args.access_log,
        access_log_format=args.access_log_format,
        reuse_port=pipes is not None,
    )
    options = Options(listen_given=args.listen is not None, admin=args.admin, watch=args.watch,
                      drain_timeout=args.drain_timeout, worker_pipes=pipes)
    main = _serve(settings, options, before_start, on_ready)
    try:
        import uvloop
    except ImportError:
        log.warning("uvloop not available; using asyncio's event loop")
        return asyncio.run(main)
    return uvloop.run(main)


async def _serve(settings, options: Options, before_start: BeforeStart | None,
                 on_ready: Callable[[], None] | None) -> int:
    from .observe import AccessLogError
    from .runtime import Runtime

    try:
        runtime = Runtime(settings)
    except AccessLogError as exc:
        print(exc, file=sys.stderr)
        return 1
    signals = _Signals(runtime)
    cleanup = admin_server = watcher = None
    admin_address = options.admin
    if options.watch:
        from .watch import watch

        # watching starts before the first load, so that no change can fall between the two
        watcher = asyncio.create_task(watch(settings.config_paths, runtime.reload, signals.terminated),
                                      name="pyproxy.watch")
    try:
        cleanup = await before_start() if before_start is not None else None
        if admin_address is not None:
            from . import admin

            try:
                admin_server = await admin.start(runtime, *admin_address)
            except OSError as exc:
                raise listen_error(*admin_address, ADMIN, exc) from exc
            admin_address = admin_server.addresses[0][:2]
        if not await _started(runtime, signals.terminated):
            log.info("stopped before the configuration loaded")
            if watcher is not None:
                watcher.cancel()
            return await _shutdown(runtime, admin_server, cleanup, 0)
    except (ConfigError, ListenError) as exc:
        print("\n".join(exc.messages) if isinstance(exc, ConfigError) else exc, file=sys.stderr)
        if watcher is not None:
            watcher.cancel()
        return await _shutdown(runtime, admin_server, cleanup, 1)
    assert runtime.result is not None
    log.info("ready: %s", summary(runtime.files, runtime.result.config, runtime.ports, admin_address))
    if options.listen_given and any(s.kind == "Gateway" for s in runtime.result.statuses):
        log.warning("--listen %s is unused: the configuration has Gateways, whose listeners bind their "
                    "spec.listeners[].port on --bind-address", format_address(*settings.listen))
    if options.worker_pipes is not None:
        await signals.supervised(*options.worker_pipes, admin_address)
    if on_ready is not None:
        on_ready()
    # Everything loaded so far (modules, the compiled config) lives as long as the process:
    # keep it out of the cyclic collector, whose full collections would otherwise walk it
    # again and again under load.
    gc.freeze()
    await signals.terminated.wait()
    if watcher is not None:
        watcher.cancel()
    await signals.drain(options.drain_timeout)
    log.info("stopped")
    return await _shutdown(runtime, admin_server, cleanup, 0)


async def _started(runtime, terminated: asyncio.Event) -> bool:
    """``runtime.start()``, unless SIGTERM/SIGINT comes first: then the load is cancelled (its
    loader process killed) and False returned. A config on a path that hangs (a stuck network
    mount) cannot hold a stopping pyproxy for the loader's 60 s."""
    start = asyncio.create_task(runtime.start(), name="pyproxy.start")
    stop = asyncio.create_task(terminated.wait(), name="pyproxy.stop-before-start")
    try:
        await asyncio.wait({start, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if not start.done():
        start.cancel()
        await asyncio.wait({start})
        return False
    start.result()  # its ConfigError or ListenError
    return True


class _Signals:
    """The process's signal handlers and the tasks they start (each owned here)."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self.terminated = asyncio.Event()
        self._draining: asyncio.Task | None = None
        self._reloads: set[asyncio.Task] = set()
        self._lifeline: asyncio.Task | None = None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._terminate, sig)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        loop.add_signal_handler(signal.SIGUSR1, runtime.access_log.reopen)  # logrotate

    def _terminate(self, sig: signal.Signals | str) -> None:
        name = sig if isinstance(sig, str) else sig.name
        if not self.terminated.is_set():
            log.info("%s: draining; send it again to stop at once", name)
            self.terminated.set()
        elif self._draining is not None and not self._draining.done():
            log.warning("%s again: stopping now", name)
            self._draining.cancel()

    async def supervised(self, report: int, lifeline: int, admin: tuple[str, int] | None) -> None:
        """A worker: tell the supervisor where this worker's admin is, and drain when the
        supervisor is gone (its end of the lifeline pipe closes, however it died)."""
        with os.fdopen(report, "w") as pipe:
            pipe.write(json.dumps({"pid": os.getpid(), "admin": list(admin) if admin else None}) + "\n")
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                                    os.fdopen(lifeline, "rb"))

        async def wait_for_eof() -> None:
            try:
                await reader.read()
            finally:
                transport.close()
            self._terminate("supervisor gone")

        self._lifeline = asyncio.create_task(wait_for_eof(), name="pyproxy.lifeline")

    def _reload(self) -> None:
        if self.terminated.is_set():
            return
        log.info("SIGHUP: reloading")
        task = asyncio.create_task(self.runtime.reload(), name="pyproxy.reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def drain(self, timeout: float) -> None:
        """The runtime's drain, cut short by a second signal."""
        for task in self._reloads:
            task.cancel()
        if self._lifeline is not None:
            self._lifeline.cancel()
        self._draining = asyncio.create_task(self.runtime.drain(timeout), name="pyproxy.drain")
        await asyncio.wait({self._draining})


async def _shutdown(runtime, admin_server, cleanup, code: int) -> int:
    await runtime.stop()
    if admin_server is not None:
        await admin_server.cleanup()
    if cleanup is not None:
        await cleanup()
    return code

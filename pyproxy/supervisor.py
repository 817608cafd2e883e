"""``--workers N``: N serving processes behind one supervisor.

Each worker is ``pyproxy serve`` with the same command line, started with
``PYPROXY_WORKER=<report fd>,<lifeline fd>`` in its environment: it binds every listener
with SO_REUSEPORT (the kernel spreads new connections over the workers), runs its own admin
on an ephemeral loopback port, writes one JSON line with that port to the report pipe when it
is ready, and drains and exits when the lifeline pipe reaches EOF (the supervisor is gone,
however it died).

The supervisor loads the configuration once first (a config error exits 1 before any
worker starts), watches the ``--config`` paths and forwards reloads (SIGHUP) to every worker,
forwards SIGTERM/SIGINT (drain; a second one stops at once) and SIGUSR1 (reopen the access log), restarts a worker
that dies while serving (at most once a second per worker), and serves the admin on
``--admin``: ``/ready`` from its own state and the workers', ``/stats/prometheus`` summed
over the workers, the rest from a worker (``/server_info`` lists all of them; a POST to
``/logging`` goes to each).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from aiohttp import ClientSession, ClientTimeout, web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from .errors import ConfigError
from .startup import WORKER_ENV

log = logging.getLogger("pyproxy.supervisor")

RESTART_INTERVAL = 1.0  # a worker that keeps dying is restarted at most this often
START_TIMEOUT = 60.0


@dataclass(eq=False)
class Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    admin: tuple[str, int] | None = None
    started: float = 0.0
    restarts: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    lifeline: int = -1  # the write end the supervisor holds open
    loaded_reloads: int = 0  # the supervisor's reload count when this process was started

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


class Supervisor:
    def __init__(self, args: argparse.Namespace, argv: Sequence[str]) -> None:
        self.args = args
        # the worker's command line: the same, with later options overriding earlier ones
        self.worker_argv = [sys.executable, "-m", "pyproxy", *argv, "--workers", "1", "--admin", "127.0.0.1:0",
                            "--no-watch"]
        self.workers = [Worker(i) for i in range(args.workers)]
        self.draining = False
        self.stopping = False
        self.started = time.time()
        self._tasks: set[asyncio.Task] = set()
        self.session: ClientSession | None = None
        self.reloads = 0  # reloads asked for (SIGHUP or a config change)

    # ------------------------------------------------------------------ workers

    async def _spawn(self, worker: Worker) -> None:
        report_r, report_w = os.pipe()
        lifeline_r, lifeline_w = os.pipe()
        os.set_inheritable(report_w, True)
        os.set_inheritable(lifeline_r, True)
        worker.ready = asyncio.Event()
        worker.admin = None
        try:
            worker.process = await asyncio.create_subprocess_exec(
                *self.worker_argv, pass_fds=(report_w, lifeline_r),
                # its own process group: a terminal's Ctrl-C reaches the supervisor alone, which
                # forwards it once (twice would stop the worker without draining)
                process_group=0,
                env={**os.environ, WORKER_ENV: f"{report_w},{lifeline_r}"})
        finally:
            os.close(report_w)
            os.close(lifeline_r)
        worker.lifeline = lifeline_w
        worker.started = time.monotonic()
        worker.loaded_reloads = self.reloads
        self._own(self._read_report(worker, report_r), f"pyproxy.worker{worker.index}.report")
        self._own(self._watch(worker), f"pyproxy.worker{worker.index}.watch")

    async def _read_report(self, worker: Worker, fd: int) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb"))
        try:
            line = await reader.readline()
        finally:
            transport.close()
        if line:
            report = json.loads(line)
            worker.admin = (report["admin"][0], report["admin"][1])
            worker.ready.set()
            if self.reloads != worker.loaded_reloads and worker.process is not None:
                worker.process.send_signal(signal.SIGHUP)  # asked for while it was starting

    async def _watch(self, worker: Worker) -> None:
        assert worker.process is not None
        code = await worker.process.wait()
        os.close(worker.lifeline)
        worker.lifeline = -1
        if self.stopping or self.draining:
            return
        if not worker.ready.is_set():
            return  # failed to start: ``start`` reports it
        log.error("worker %d (pid %d) exited with %s; starting a new one", worker.index, worker.process.pid,
                  _exit_status(code))
        await asyncio.sleep(max(0.0, worker.started + RESTART_INTERVAL - time.monotonic()))
        if self.stopping or self.draining:
            return
        worker.restarts += 1
        await self._spawn(worker)

    def _own(self, coro, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> bool:
        """Start every worker; False (all stopped) when one exits before it is ready."""
        for worker in self.workers:
            await self._spawn(worker)
        for worker in self.workers:
            assert worker.process is not None
            ready = asyncio.create_task(worker.ready.wait())
            exited = asyncio.create_task(worker.process.wait())
            done, _ = await asyncio.wait({ready, exited}, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            exited.cancel()
            if not worker.ready.is_set():
                log.error("worker %d did not start; stopping", worker.index)
                await self.stop(signal.SIGKILL if not done else signal.SIGTERM)
                return False
        return True

    def signal_all(self, sig: int) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(sig)

    def reload(self) -> None:
        """SIGHUP to every worker that is serving; one still starting gets it when it is
        ready (before its handlers are installed, SIGHUP would end it)."""
        self.reloads += 1
        for worker in self.live():
            assert worker.process is not None
            worker.process.send_signal(signal.SIGHUP)

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` to every worker and wait for them all to exit."""
        self.stopping = True
        self.signal_all(sig)
        await asyncio.gather(*(w.process.wait() for w in self.workers if w.process is not None))

    # ------------------------------------------------------------------ admin

    def live(self) -> list[Worker]:
        return [w for w in self.workers if w.ready.is_set() and w.admin is not None
                and w.process is not None and w.process.returncode is None]

    async def fetch(self, worker: Worker, method: str, path_qs: str) -> tuple[int, str, str]:
        assert self.session is not None and worker.admin is not None
        host, port = worker.admin
        async with self.session.request(method, f"http://{host}:{port}{path_qs}") as resp:
            return resp.status, resp.content_type, await resp.text()

    def make_app(self) -> web.Application:
        from .admin import HOST_REFUSED, allowed_hosts

        @web.middleware
        async def refuse_other_hosts(request: web.Request, handler) -> web.StreamResponse:
            """The workers' Host check (DNS rebinding) in front of the supervisor's admin."""
            if not allowed_hosts(request.headers.getall("Host", [])):
                return web.Response(status=403, text=HOST_REFUSED)
            return await handler(request)

        async def ready(_request: web.Request) -> web.Response:
            if not self.draining and len(self.live()) == len(self.workers):
                return web.Response(text="LIVE\n")
            return web.Response(status=503, text="NOT READY\n")

        async def prometheus(_request: web.Request) -> web.Response:
            texts = [text for status, _, text in await asyncio.gather(
                *(self.fetch(w, "GET", "/stats/prometheus") for w in self.live())) if status == 200]
            restarts = sum(w.restarts for w in self.workers)
            return web.Response(body=sum_expositions(texts, restarts), content_type="text/plain",
                                headers={"X-Workers": str(len(texts))})

        async def server_info(request: web.Request) -> web.Response:
            workers = []
            for worker in self.workers:
                entry: dict = {"index": worker.index, "pid": worker.pid, "restarts": worker.restarts,
                               "ready": worker in self.live()}
                if entry["ready"]:
                    status, _, text = await self.fetch(worker, "GET", "/server_info")
                    if status == 200:
                        entry["server_info"] = json.loads(text)
                workers.append(entry)
            return web.json_response({"state": "DRAINING" if self.draining else "LIVE",
                                      "uptime_seconds": round(time.time() - self.started, 3),
                                      "workers": workers})

        async def to_all(request: web.Request) -> web.Response:
            answers = await asyncio.gather(*(self.fetch(w, request.method, request.path_qs) for w in self.live()))
            status = max((a[0] for a in answers), default=503)
            text = answers[0][2] if answers else "no worker is serving\n"
            return web.Response(status=status, text=text, content_type=answers[0][1] if answers else "text/plain")

        async def to_one(request: web.Request) -> web.Response:
            live = self.live()
            if not live:
                return web.Response(status=503, text="no worker is serving\n")
            status, content_type, text = await self.fetch(live[0], request.method, request.path_qs)
            return web.Response(status=status, text=text, content_type=content_type)

        app = web.Application(middlewares=[refuse_other_hosts])
        app.router.add_get("/ready", ready)
        app.router.add_get("/stats/prometheus", prometheus)
        app.router.add_get("/server_info", server_info)
        app.router.add_post("/logging", to_all)
        app.router.add_route("*", "/{tail:.*}", to_one)
        return app


# gauges that describe the process rather than count: the highest value wins
_NOT_SUMMED = frozenset({"envoy_server_live", "envoy_server_uptime", "pyproxy_config_generation"})


def sum_expositions(texts: Sequence[str], restarts: int) -> bytes:
    """The workers' expositions as one: each sample (name and labels) summed over the
    workers (the highest value for ``_NOT_SUMMED``), plus ``pyproxy_worker_restarts``;
    parsed and written again by prometheus-client."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            families.setdefault(family.name, Metric(family.name, family.documentation, family.type, family.unit))
            merged = values.setdefault(family.name, {})
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in merged:
                    merged[key] = sample.value
                elif family.name in _NOT_SUMMED:
                    merged[key] = max(merged[key], sample.value)
                else:
                    merged[key] += sample.value
    restarted = Metric("pyproxy_worker_restarts", "Workers started again after they died", "counter")
    restarted.add_sample("pyproxy_worker_restarts_total", {}, restarts)
    for name, family in families.items():
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)

    class Collected(Collector):
        def collect(self) -> Iterable[Metric]:
            yield from families.values()
            yield restarted

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collected())
    return generate_latest(registry)


def _exit_status(code: int) -> str:
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"code {code}"


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``pyproxy serve --workers N`` (N > 1)."""
    from .loading import check

    try:
        check(args.config)  # a config that does not load fails here, before any worker starts
    except ConfigError as exc:
        print("\n".join(exc.messages), file=sys.stderr)
        return 1
    return asyncio.run(_supervise(args, argv))


async def _supervise(args: argparse.Namespace, argv: Sequence[str]) -> int:
    supervisor = Supervisor(args, argv)
    loop = asyncio.get_running_loop()
    terminated = asyncio.Event()
    signals_seen = 0

    def terminate(sig: signal.Signals) -> None:
        nonlocal signals_seen
        signals_seen += 1
        supervisor.draining = True
        if signals_seen == 1:
            log.info("%s: draining %d workers; send it again to stop at once", sig.name, len(supervisor.workers))
        supervisor.signal_all(sig)
        terminated.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, terminate, sig)
    loop.add_signal_handler(signal.SIGHUP, supervisor.reload)
    loop.add_signal_handler(signal.SIGUSR1, supervisor.signal_all, signal.SIGUSR1)
    supervisor.session = ClientSession(timeout=ClientTimeout(total=10))
    runner = watcher = None
    if args.watch:
        from .watch import watch

        async def reload() -> None:
            supervisor.reload()

        watcher = asyncio.create_task(watch(args.config, reload, terminated), name="pyproxy.watch")
    try:
        if not await supervisor.start():
            return 1
        if args.admin is not None:
            runner = web.AppRunner(supervisor.make_app(), access_log=None, handle_signals=False)
            await runner.setup()
            await web.TCPSite(runner, *args.admin, reuse_address=True).start()
        log.info("supervisor: %d workers serving (pids %s)", len(supervisor.workers),
                 ", ".join(str(w.pid) for w in supervisor.workers))
        await terminated.wait()
        await asyncio.gather(*(w.process.wait() for w in supervisor.workers if w.process is not None))
        log.info("supervisor: every worker stopped")
        return 0
    finally:
        if watcher is not None:
            watcher.cancel()
        if runner is not None:
            await runner.cleanup()
        await supervisor.session.close()

"""What every downstream connection of a runtime shares: the current snapshot, the DNS
cache, the upstream pool, the access log, the counters, the set of open connections (with
one sweeper for their header and idle deadlines) and the mirrored requests in flight."""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Sized
from typing import Protocol

from .. import ir
from ..observe import AccessLog
from ..stats import ListenerStats, Stats
from . import client
from .compile import Snapshot
from .dns import Resolver
from .limits import Limits
from .mirror import Mirrors
from .pool import Pool


class Connection(Protocol):
    """What the context, the runtime and the metrics need of a downstream connection
    (``server.HttpProtocol``, ``h2.H2Protocol``)."""

    transport: asyncio.Transport
    deadline: float  # when ``deadline_cb`` is due (the sweeper's one slot per connection)
    deadline_cb: Callable[[], None] | None
    group_key: tuple[str, int]
    stats: ListenerStats

    @property
    def queue(self) -> Sized:
        """The exchanges not answered yet."""

    @property
    def tunnel(self) -> object | None:
        """The tunnel the connection became (WebSocket), if it did."""

    def stream_idle(self, now: float) -> None: ...

    def drain(self) -> None: ...


class LazyTimer:
    """A timer for a deadline that is usually never reached (a route's request timeout, 15 s
    by default, against responses in milliseconds): while the deadline is far it is only noted
    in the context, and the context's sweep arms a loop timer for it once it is near (within
    two sweep intervals), so it still fires on time. A request that ends first never costs a
    loop timer: arming and cancelling one measured 10 us a request (uvloop allocates and
    closes a libuv handle for each)."""

    __slots__ = ("ctx", "when", "callback", "handle")

    def __init__(self, ctx: Context, when: float, callback: Callable[[], None]) -> None:
        self.ctx = ctx
        self.when = when
        self.callback = callback
        self.handle: asyncio.TimerHandle | None = None

    def arm(self, now: float) -> None:
        self.handle = self.ctx.loop.call_later(max(0.0, self.when - now), self.callback)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        else:
            self.ctx.lazy_timers.discard(self)


class Context:
    """What every connection shares; ``snapshot`` is swapped by the runtime on reload.

    ``loop`` is the clock and timer source of every connection's deadlines (default: the
    running loop); tests pass a fake one and move its time instead of sleeping."""

    def __init__(self, snapshot: Snapshot, resolver: Resolver, pool: Pool, access_log: AccessLog, stats: Stats,
                 limits: Limits, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop if loop is not None else asyncio.get_running_loop()
        self.snapshot = snapshot
        self.resolver = resolver
        self.pool = pool
        self.access_log = access_log
        self.stats = stats
        self.limits = limits
        # for a connection whose listener group a reload removed while it was being accepted
        self.default_policy = client.resolve(ir.ClientSettings(), limits)
        self.mirrors = Mirrors(pool, resolver, limits)
        self.connections: set[Connection] = set()
        self.admitted: dict[tuple[tuple[str, int], str], int] = {}  # connections open per limited listener
        self.lazy_timers: set[LazyTimer] = set()  # deadlines not near enough yet for a loop timer
        self._emptied: asyncio.Event | None = None
        self._ticker: asyncio.TimerHandle | None = None
        # deadlines fire at most a quarter of the shortest one late (at most a second), the
        # listeners' own (client settings) included
        self._interval = min(1.0, limits.header_timeout / 4, limits.idle_timeout / 4, limits.body_timeout / 4,
                             limits.stream_idle_timeout / 4)

    def watch_deadlines(self) -> None:
        """Make sure the sweeper runs. Header, body and idle deadlines and the stream idle
        timeout are checked by one periodic sweep over the connections instead of a timer
        armed and cancelled per request (each connection has ``deadline`` and
        ``deadline_cb``, and ``stream_idle``)."""
        if self._ticker is None:
            interval = min(self._interval, self.snapshot.shortest_timeout / 4)
            self._ticker = self.loop.call_later(interval, self._sweep)

    def call_later(self, delay: float, callback: Callable[[], None]) -> LazyTimer:
        """``loop.call_later`` for a deadline that is usually cancelled long before it comes
        (``LazyTimer``)."""
        now = self.loop.time()
        timer = LazyTimer(self, now + delay, callback)
        if delay <= 2 * self._interval:
            timer.arm(now)
        else:
            self.lazy_timers.add(timer)
            if self._ticker is None:
                self.watch_deadlines()
        return timer

    def _sweep(self) -> None:
        self._ticker = None
        now = self.loop.time()
        for proto in list(self.connections):
            if proto.deadline_cb is not None and proto.deadline <= now:
                callback, proto.deadline_cb = proto.deadline_cb, None
                callback()
            proto.stream_idle(now)
        if self.lazy_timers:
            near = now + 2 * self._interval  # the next sweep comes within one interval
            for timer in [t for t in self.lazy_timers if t.when <= near]:
                self.lazy_timers.discard(timer)
                timer.arm(now)
        if self.connections or self.lazy_timers:
            self.watch_deadlines()

    def admit(self, key: tuple[tuple[str, int], str], limit: int) -> bool:
        """Count a new connection of a listener with a ``connection_limit``, if it is under it.
        Over it the connection is closed at once: Envoy's connection limit filter (Envoy
        Gateway's ``connectionLimit`` without ``closeDelay``); those being served go on."""
        count = self.admitted.get(key, 0)
        if count >= limit:
            return False
        self.admitted[key] = count + 1
        return True

    def release(self, key: tuple[tuple[str, int], str]) -> None:
        """An admitted connection is gone."""
        count = self.admitted[key] - 1
        if count:
            self.admitted[key] = count
        else:
            del self.admitted[key]

    def forget(self, proto: Connection) -> None:
        """A connection is gone (its ``connection_lost``)."""
        self.connections.discard(proto)
        if not self.connections and self._emptied is not None:
            self._emptied.set()

    async def drain(self, timeout: float) -> int:
        """Drain every connection (``HttpProtocol.drain``) and wait until all are gone or
        ``timeout`` passes; then close the rest. Returns how many were cut."""
        self._emptied = asyncio.Event()
        for proto in list(self.connections):
            proto.drain()
        if self.connections:
            try:
                await asyncio.wait_for(self._emptied.wait(), timeout)
            except TimeoutError:
                pass
        cut = list(self.connections)
        for proto in cut:
            proto.transport.close()
        return len(cut)

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        self.mirrors.stop()

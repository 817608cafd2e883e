"""A fake clock/loop and a fake transport, so a downstream connection can be driven in memory:
bytes in through ``data_received``, bytes out recorded, time moved by hand (uvicorn's
``MockLoop`` idea). No sockets, no sleeps."""
from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any, cast

from pyproxy import ir
from pyproxy.dataplane.compile import compile_config
from pyproxy.dataplane.context import Context
from pyproxy.dataplane.dns import Resolver
from pyproxy.dataplane.limits import DEFAULT, Limits
from pyproxy.dataplane.pool import Pool
from pyproxy.dataplane.server import HttpProtocol
from pyproxy.observe import AccessLog
from pyproxy.stats import Stats


class FakeHandle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """``time`` and ``call_later`` as a connection uses them; ``advance`` runs what is due."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._timers: list[tuple[float, int, FakeHandle, Callable[..., Any], tuple]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> FakeHandle:
        handle = FakeHandle()
        heapq.heappush(self._timers, (self.now + delay, next(self._order), handle, callback, args))
        return handle

    def advance(self, seconds: float) -> None:
        """Move the clock, running every timer that falls due on the way, in order."""
        end = self.now + seconds
        while self._timers and self._timers[0][0] <= end:
            when, _, handle, callback, args = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            if not handle.cancelled:
                callback(*args)
        self.now = end


class FakeTransport:
    def __init__(self) -> None:
        self.out = bytearray()
        self.eof = False
        self.closed = False
        self.reading = True

    def write(self, data: bytes) -> None:
        assert not self.eof and not self.closed, "write after the connection ended"
        self.out += data

    def writelines(self, pieces) -> None:
        for piece in pieces:
            self.write(piece)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def take(self) -> bytes:
        """What was written since the last call."""
        data, self.out = bytes(self.out), bytearray()
        return data


def direct_config(status: int = 200, body: str = "ok") -> ir.Config:
    """A listener on 127.0.0.1:0 whose only route answers by itself (no upstream needed)."""
    route = ir.Route(name="httproute/default/direct/rule/0/match/0", match=ir.Match(ir.PathMatch("PathPrefix", "/")),
                     action=ir.DirectResponse(status, body))
    vhost = ir.VirtualHost(name="vhost/test", hostname="*", routes=(route,))
    return ir.Config((ir.Listener(name="listener/test", address="127.0.0.1", port=0, protocol="HTTP",
                                  virtual_hosts=(vhost,)),))


async def connection(limits: Limits = DEFAULT, config: ir.Config | None = None
                     ) -> tuple[HttpProtocol, FakeTransport, FakeLoop]:
    """A downstream connection on a fake transport and clock (``connection_made`` done)."""
    loop = FakeLoop()
    stats = Stats()
    snapshot = await compile_config(config or direct_config(), stats, limits)
    ctx = Context(snapshot, Resolver(None, 30.0), Pool(limits), AccessLog("off"), stats, limits,
                  loop=cast(asyncio.AbstractEventLoop, loop))
    proto = HttpProtocol(ctx, ("127.0.0.1", 0), "http")
    transport = FakeTransport()
    proto.connection_made(cast(asyncio.Transport, transport))
    return proto, transport, loop

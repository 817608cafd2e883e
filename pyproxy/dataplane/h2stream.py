"""One stream of a downstream HTTP/2 connection (``h2.H2Protocol``): the exchange's
``Downstream`` for its forwarder. The response it is given is held here (head, body pieces
the client's windows do not take yet, trailers) and sent by the connection's ``pump``."""
from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING, Protocol

import h2.errors

from .. import errors
from ..errors import ProxyError
from .client import ClientPolicy
from .context import Context
from .encode import end_to_end
from .exchange import Exchange
from .states import Ev

if TYPE_CHECKING:
    from .upstream import UpstreamConnection


class Owner(Protocol):
    """What a stream needs of its connection (``h2.H2Protocol``)."""

    ctx: Context
    loop: asyncio.AbstractEventLoop
    policy: ClientPolicy
    peer: str  # the client's address:port
    peer_b: bytes  # the client's address
    local_addr: str  # the listener's address:port

    def pump(self, stream: Stream) -> None: ...

    def flush(self) -> None: ...

    def acknowledge(self, stream: Stream) -> None: ...

    def reset(self, stream: Stream, code: h2.errors.ErrorCodes) -> None: ...

    def local(self, stream: Stream, status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None,
              *, flags: str = "-", details: str = "") -> None: ...


class Stream:
    """One request/response exchange on the connection; the forwarder's ``Downstream``."""

    __slots__ = ("owner", "id", "ex", "ctx", "loop", "write_paused", "head", "out", "out_size", "trailers", "ending",
                 "acks", "request_paused", "opened", "progress", "progress_seen", "progress_at", "request_deadline")

    def __init__(self, owner: Owner, stream_id: int, ex: Exchange) -> None:
        self.owner = owner
        self.id = stream_id
        self.ex = ex
        self.ctx = owner.ctx
        self.loop = owner.loop
        self.write_paused = False  # the response waits for the client's window: read no more upstream
        self.head: list[tuple[bytes, bytes]] | None = None  # the response head, until the upstream read ends
        self.out: list[bytes] = []  # response body bytes the windows do not take yet
        self.out_size = 0
        self.trailers: list[tuple[bytes, bytes]] | None = None  # sent as the last HEADERS frame
        self.ending = False  # the response is complete once ``out`` is sent
        self.acks = 0  # request body bytes received but not acknowledged (held back)
        self.request_paused = False
        self.opened = time.monotonic()
        self.progress = 0  # bumped whenever bytes move (the stream idle timeout)
        self.progress_seen = 0
        self.progress_at = owner.loop.time()
        timeout = owner.policy.request_timeout  # the whole request must arrive by then
        self.request_deadline = self.progress_at + timeout if timeout else math.inf

    # ------------------------------------------------------------------ Downstream

    @property
    def peer(self) -> str:
        return self.owner.peer

    @property
    def peer_b(self) -> bytes:
        return self.owner.peer_b

    @property
    def local(self) -> str:
        return self.owner.local_addr

    def send_head(self, ex: Exchange, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        ex.advance(Ev.HEAD)
        ex.status = status
        ex.details = "via_upstream"
        out = [(b":status", b"%d" % status)]
        out.extend(end_to_end(ex, headers))
        for name, value in headers:
            if name == b"content-length":
                out.append((b"content-length", value))
        # held until the body, the end or the end of the upstream read: a response that ends
        # with its head (gRPC's trailers-only answer) then leaves as one HEADERS frame
        self.head = out

    def send_body(self, ex: Exchange, data: bytes) -> None:
        self.progress += 1
        ex.bytes_sent += len(data)
        if ex.head.method == "HEAD":
            return
        self.out.append(data)
        self.out_size += len(data)
        self.owner.pump(self)

    def send_trailers(self, ex: Exchange, trailers: list[tuple[bytes, bytes]]) -> None:
        self.trailers = trailers

    def end(self, ex: Exchange) -> None:
        self.ending = True
        self.owner.pump(self)

    def fail(self, ex: Exchange, error: ProxyError) -> None:
        if ex.forwarder is not None:
            ex.forwarder.cancel()
        if ex.response_started:
            ex.cut(error)
            self.owner.reset(self, h2.errors.ErrorCodes.INTERNAL_ERROR)
            return
        self.owner.local(self, error.status, error.body.encode(), flags=error.flags, details=error.details)

    def flush(self) -> None:
        if self.head is not None:
            self.owner.pump(self)
        self.owner.flush()

    def pause_request(self, paused: bool) -> None:
        self.request_paused = paused
        if not paused and self.acks:
            self.owner.acknowledge(self)

    def continue_request(self, ex: Exchange) -> None:
        return None  # HTTP/2 clients do not wait for 100 (Continue) before the body

    def start_tunnel(self, ex: Exchange, conn: UpstreamConnection, first: bytes) -> None:
        conn.abort()  # never asked for: an HTTP/2 request carries no Upgrade
        self.fail(ex, errors.UpstreamProtocolError("101 on an HTTP/2 stream"))

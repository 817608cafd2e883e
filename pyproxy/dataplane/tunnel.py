"""After a ``101 Switching Protocols``: the downstream and the upstream connection joined as a
byte tunnel (WebSocket).

Bytes are relayed as they come, with backpressure both ways: a side whose write buffer is
full pauses reading on the other side (``pause_writing``/``resume_writing`` of each
protocol). An end of input is passed on as a half-close where the transport can write one
(TCP; TLS cannot), and the tunnel ends when both sides have finished, when either connection
is lost, or when the stream idle timeout passes with no byte moving (the downstream
connection's sweeper: every relayed read counts as progress). The exchange that asked for the
upgrade stays open the whole time; its access-log line, written when the tunnel ends, has
the tunnel's duration and byte counts."""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .exchange import Exchange
    from .upstream import UpstreamConnection


class TunnelEnd(Protocol):
    """What the tunnel needs from the downstream connection."""

    transport: asyncio.Transport
    progress: int

    def end_tunnel(self, ex: Exchange) -> None:
        """The tunnel is over: finish the exchange and close the connection."""


class Tunnel:
    __slots__ = ("down", "up", "ex", "down_eof", "up_eof", "closed")

    def __init__(self, down: TunnelEnd, up: UpstreamConnection, ex: Exchange) -> None:
        self.down = down
        self.up = up
        self.ex = ex
        self.down_eof = False
        self.up_eof = False
        self.closed = False

    def __repr__(self) -> str:
        return (f"<Tunnel {self.ex.upstream_addr} sent={self.ex.bytes_sent} received={self.ex.bytes_received} "
                f"down_eof={self.down_eof} up_eof={self.up_eof} closed={self.closed}>")

    # ------------------------------------------------------------------ bytes

    def to_upstream(self, data: bytes) -> None:
        self.ex.bytes_received += len(data)
        self.down.progress += 1
        if not self.up.closed:
            self.up.transport.write(data)

    def to_downstream(self, data: bytes) -> None:
        self.ex.bytes_sent += len(data)
        self.down.progress += 1
        self.down.transport.write(data)

    # ------------------------------------------------------------------ backpressure

    def downstream_full(self, full: bool) -> None:
        """The client is not reading what we write: stop reading the upstream (or go on)."""
        if self.up.closed:
            return
        if full:
            self.up.transport.pause_reading()
        else:
            self.up.transport.resume_reading()

    def upstream_full(self, full: bool) -> None:
        """The upstream is not reading what we write: stop reading the client (or go on)."""
        transport = self.down.transport
        if transport.is_closing():
            return
        if full:
            transport.pause_reading()
        else:
            transport.resume_reading()

    # ------------------------------------------------------------------ ends

    def downstream_eof(self) -> bool:
        """The client will send nothing more; returns whether to keep its transport open."""
        self.down_eof = True
        # (a TLS transport closes at EOF whatever is returned: asking it to stay open only warns)
        return self._half_close(self.up.transport, self.up_eof) and self.down.transport.can_write_eof()

    def upstream_eof(self) -> bool:
        """The upstream will send nothing more; returns whether to keep its transport open."""
        self.up_eof = True
        return self._half_close(self.down.transport, self.down_eof) and self.up.transport.can_write_eof()

    def _half_close(self, other: asyncio.Transport, other_done: bool) -> bool:
        if other_done or not other.can_write_eof() or other.is_closing():
            self.down.end_tunnel(self.ex)
            return False
        other.write_eof()
        return True

    def upstream_lost(self) -> None:
        if not self.closed:
            self.down.end_tunnel(self.ex)

    def close(self) -> None:
        """Called by the downstream connection as the tunnel ends: close the upstream side
        (what is buffered for it is still written)."""
        self.closed = True
        self.up.close()

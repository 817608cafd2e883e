"""Flow control of one downstream connection: why reading from the client is paused.

Several independent reasons can hold reading paused at once (uvicorn's ``flow_control.py``
has one flag; a proxy needs one per cause). Reading resumes only when the last reason clears,
and never again once the connection stopped reading for good.
"""
from __future__ import annotations

import asyncio

UPSTREAM_FULL = 1  # the upstream's write buffer is full, or it is not attached yet and buffer_limit is reached
HOLD = 2  # the reader is held: requests wait their turn, or the client is not reading our answers


class ReadGate:
    __slots__ = ("transport", "blocked", "stopped")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.blocked = 0  # a set of the reasons above
        self.stopped = False  # the connection is ending; whatever still arrives is ignored

    def block(self, reason: int) -> None:
        if not self.blocked and not self.stopped:
            self.transport.pause_reading()
        self.blocked |= reason

    def unblock(self, reason: int) -> None:
        if self.blocked & reason:
            self.blocked &= ~reason
            if not self.blocked and not self.stopped:
                self.transport.resume_reading()

    def stop(self, drain: bool = False) -> None:
        """Stop reading requests for good. ``drain`` keeps the socket read (and the bytes
        ignored) so that closing it later does not reset the connection."""
        self.stopped = True
        if drain:
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()

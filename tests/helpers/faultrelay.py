"""A fault-injecting TCP relay: listens on 127.0.0.1 (port 0) in front of a real upstream and
relays bytes both ways, or breaks the way a test commands. The fault in force when a
connection is accepted decides what happens to it:

* ``Pass()``: relay faithfully (the default);
* ``Delay(seconds)``: hold the upstream's answer that long before relaying it;
* ``Hang()``: take the request and never answer (nor reach the upstream);
* ``Reset(after=0)``: relay ``after`` bytes of the answer (none: reset as soon as the request
  head arrived), then reset the client connection (RST, SO_LINGER 0);
* ``Drop(rst=True)``: reset (or close) each connection as soon as it is accepted, before
  reading anything (a TLS handshake cut short);
* ``Truncate(after)``: relay ``after`` bytes of the answer, then close (FIN);
* ``Script(data, close=True)``: answer each request head with ``data`` instead of relaying
  (invalid status lines, conflicting framing, short bodies …), then close, or keep the
  connection for the next request.

``refuse()`` stops listening (connects are refused) and ``resume()`` listens again on the same
port. ``accepted`` counts connections, ``open`` those not closed yet (a test checks that the
proxy let go of every connection). Every wait is bounded; ``stop`` aborts whatever is left.

    relay = await FaultRelay(upstream.port).start()
    relay.fault = Reset()
"""
from __future__ import annotations

import asyncio
import socket
import struct
from dataclasses import dataclass


@dataclass(frozen=True)
class Pass:
    pass


@dataclass(frozen=True)
class Delay:
    seconds: float


@dataclass(frozen=True)
class Hang:
    pass


@dataclass(frozen=True)
class Reset:
    after: int = 0


@dataclass(frozen=True)
class Drop:
    rst: bool = True


@dataclass(frozen=True)
class Truncate:
    after: int


@dataclass(frozen=True)
class Script:
    data: bytes
    close: bool = True


Fault = Pass | Delay | Hang | Reset | Drop | Truncate | Script


def reset(writer: asyncio.StreamWriter) -> None:
    """Abort with an RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultRelay:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.fault: Fault = Pass()
        self.port = 0
        self.accepted = 0
        self.open = 0
        self.requests = 0  # request heads seen by the faults that read them (Hang, Reset, Script)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()
        self._changed = asyncio.Event()

    async def start(self) -> FaultRelay:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def refuse(self) -> None:
        """Stop listening: new connects are refused; open connections are left alone."""
        if self._server is not None:
            self._server.close()
            await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def resume(self) -> None:
        """Listen again, on the same port."""
        if self._server is None:
            await self.start()

    async def stop(self) -> None:
        await self.refuse()
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)

    async def until(self, predicate, timeout: float = 5.0) -> None:
        """Wait (bounded) until ``predicate(self)`` holds; checked at every connection change."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

    # ------------------------------------------------------------------ one connection

    def _track(self, writer: asyncio.StreamWriter, opened: bool) -> None:
        if opened:
            self.accepted += 1
            self.open += 1
            self._writers.add(writer)
        else:
            self.open -= 1
            self._writers.discard(writer)
        self._changed.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._track(writer, True)
        fault = self.fault
        try:
            if isinstance(fault, Drop):
                if fault.rst:
                    reset(writer)
            elif isinstance(fault, Hang):
                await self._head(reader)
                await reader.read()  # until the proxy goes away
            elif isinstance(fault, Script):
                while await self._head(reader):
                    writer.write(fault.data)
                    await writer.drain()
                    if fault.close:
                        break
            elif isinstance(fault, Reset) and fault.after == 0:
                await self._head(reader)
                reset(writer)
            else:
                await self._relay(fault, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            if not writer.transport.is_closing():
                writer.close()
            self._track(writer, False)
            self._tasks.discard(task)

    async def _head(self, reader: asyncio.StreamReader) -> bool:
        """Read one request head (its body, if any, is left unread); False at EOF."""
        try:
            await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        self.requests += 1
        self._changed.set()
        return True

    async def _relay(self, fault: Fault, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 5)
        self._writers.add(up_writer)
        try:
            upward = asyncio.ensure_future(self._pump(reader, up_writer))
            try:
                await self._answer(fault, up_reader, writer)
            finally:
                upward.cancel()
                await asyncio.gather(upward, return_exceptions=True)
        finally:
            self._writers.discard(up_writer)
            up_writer.transport.abort()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    @staticmethod
    async def _answer(fault: Fault, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Relay the upstream's bytes to the client as the fault says."""
        limit = fault.after if isinstance(fault, (Reset, Truncate)) else None
        sent = 0
        first = True
        while True:
            data = await reader.read(65536 if limit is None else max(1, min(65536, limit - sent)))
            if not data:
                break
            if first and isinstance(fault, Delay):
                await asyncio.sleep(fault.seconds)
            first = False
            writer.write(data)
            await writer.drain()
            sent += len(data)
            if limit is not None and sent >= limit:
                if isinstance(fault, Reset):
                    reset(writer)
                else:
                    writer.close()
                return
        writer.close()

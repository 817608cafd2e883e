"""WebSocket through the proxy with the ``websockets`` library on both ends: a real client,
a real server, real sockets; the proxy in process (and once as the real CLI)."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from pyproxy import ir
from pyproxy.dataplane.limits import DEFAULT
from tests.conftest import server_context
from tests.helpers.proc import CliProcess, free_port
from tests.helpers.proxy import proxy_to

FLOOD = 40  # messages of 1 MiB the /flood path sends


class EchoServer:
    """Echoes every message; ``/close`` closes at once with 4002, ``/flood`` sends ``FLOOD``
    messages of 1 MiB and counts how many it got out; records how clients closed."""

    def __init__(self) -> None:
        self.port = 0
        self.close_codes: list[int | None] = []
        self.flooded = 0
        self.paths: list[str] = []
        self._closed = asyncio.Event()

    async def closed(self) -> None:
        """Until an echoing connection has ended (its close code recorded)."""
        await asyncio.wait_for(self._closed.wait(), 10)

    async def handler(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else ""
        self.paths.append(path)
        if path == "/close":
            await ws.close(4002, "server says bye")
            return
        if path == "/flood":
            for _ in range(FLOOD):
                await ws.send(b"f" * (1 << 20))
                self.flooded += 1
            await ws.wait_closed()
            return
        try:
            async for message in ws:
                await ws.send(message)
        finally:
            self.close_codes.append(ws.close_code)
            self._closed.set()


@pytest.fixture
async def echo():
    server = EchoServer()
    # no permessage-deflate: byte counts and buffer sizes are those of the messages
    async with serve(server.handler, "127.0.0.1", 0, max_size=None, compression=None) as running:
        server.port = running.sockets[0].getsockname()[1]
        yield server


async def test_text_binary_10mib_and_ping_pong(echo):
    async with proxy_to(echo.port) as (_, port):
        async with connect(f"ws://127.0.0.1:{port}/chat", max_size=None) as ws:
            await ws.send("héllo")
            assert await asyncio.wait_for(ws.recv(), 10) == "héllo"
            await ws.send(b"\x00\xff\x10")
            assert await asyncio.wait_for(ws.recv(), 10) == b"\x00\xff\x10"
            big = os.urandom(10 << 20)
            await ws.send(big)
            assert await asyncio.wait_for(ws.recv(), 30) == big
            pong = await ws.ping(b"are you there")
            await asyncio.wait_for(pong, 10)
    assert echo.paths == ["/chat"]


async def test_wss_to_a_tls_backend_verified_by_its_ca(ca):
    server = EchoServer()
    async with serve(server.handler, "127.0.0.1", 0, ssl=server_context(ca, "backend.test")) as running:
        tls = ir.UpstreamTLS(sni="backend.test", ca=ca.cert_pem.bytes().decode())
        async with proxy_to(running.sockets[0].getsockname()[1], tls=tls) as (_, port):
            async with connect(f"ws://127.0.0.1:{port}/secure") as ws:
                await ws.send("over tls")
                assert await asyncio.wait_for(ws.recv(), 10) == "over tls"
                await ws.close(4003)
            await server.closed()
    assert server.close_codes == [4003]


async def test_the_client_close_code_reaches_the_server(echo):
    async with proxy_to(echo.port) as (_, port):
        ws = await connect(f"ws://127.0.0.1:{port}/", max_size=None)
        await ws.send("x")
        await ws.recv()
        await ws.close(4001, "client says bye")
        assert ws.close_code == 4001
        await echo.closed()
    assert echo.close_codes == [4001]


async def test_a_server_initiated_close_reaches_the_client(echo):
    async with proxy_to(echo.port) as (_, port):
        async with connect(f"ws://127.0.0.1:{port}/close") as ws:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert (ws.close_code, ws.close_reason) == (4002, "server says bye")


async def test_a_slow_reader_holds_the_server_back_instead_of_filling_the_proxy(echo):
    """Backpressure: while the client reads nothing, the proxy stops reading the upstream,
    so the server cannot get all of its 40 MiB out; once the client reads, everything comes."""
    async with proxy_to(echo.port) as (rt, port):
        async with connect(f"ws://127.0.0.1:{port}/flood", max_size=None, max_queue=1, compression=None) as ws:
            await asyncio.sleep(1.0)  # the client reads nothing meanwhile
            stalled = echo.flooded
            assert stalled < FLOOD, "the server got everything out to a client that reads nothing"
            received = 0
            for _ in range(FLOOD):
                message = await asyncio.wait_for(ws.recv(), 20)
                received += len(message)
            assert received == FLOOD << 20
        metrics = rt.stats.listeners
    assert echo.flooded == FLOOD
    assert sum(s.cx_upgrades_total for s in metrics.values()) == 1


async def test_an_idle_tunnel_is_closed_at_the_stream_idle_timeout(echo):
    limits = dataclasses.replace(DEFAULT, stream_idle_timeout=0.5)
    async with proxy_to(echo.port, limits=limits) as (_, port):
        async with connect(f"ws://127.0.0.1:{port}/", ping_interval=None) as ws:
            await ws.send("x")
            assert await ws.recv() == "x"
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)


async def test_the_cli_logs_the_tunnel_with_its_bytes(echo, tmp_path):
    (tmp_path / "ws.yaml").write_text(f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: ws
spec:
  rules:
  - backendRefs:
    - group: gateway.envoyproxy.io
      kind: Backend
      name: ws
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata:
  name: ws
spec:
  appProtocols: [gateway.envoyproxy.io/ws]
  endpoints:
  - ip:
      address: 127.0.0.1
      port: {echo.port}
""")
    port = free_port()
    access_log = tmp_path / "access.log"
    proxy = CliProcess("--config", str(tmp_path), "--listen", str(port), "--admin", "off",
                       "--access-log", str(access_log))
    try:
        await asyncio.to_thread(proxy.wait_for, "ready:")
        async with connect(f"ws://127.0.0.1:{port}/live", compression=None) as ws:
            await ws.send("a" * 1000)
            assert await ws.recv() == "a" * 1000
    finally:
        code, lines = proxy.stop()
    assert code == 0, "\n".join(lines)
    entry = json.loads(access_log.read_text().splitlines()[-1])
    assert (entry["response_code"], entry["x-envoy-origin-path"], entry["upstream_cluster"]) == (
        101, "/live", "backend/default/ws")
    assert entry["bytes_received"] > 1000 and entry["bytes_sent"] > 1000


async def test_a_half_close_is_passed_on_and_the_other_side_may_still_answer():
    """Raw bytes, no WebSocket framing: the client ends its side after the switch; the
    upstream sees the end of input, still answers, then closes; the client reads it all."""
    seen_eof = asyncio.Event()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                     b"early")
        received = await reader.read()  # to the client's half-close
        seen_eof.set()
        writer.write(b" got " + received + b" bye")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    try:
        async with proxy_to(server.sockets[0].getsockname()[1]) as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nhello")
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 101 ")
            assert b"connection: upgrade" in head.lower() and b"upgrade: websocket" in head.lower()
            writer.write_eof()
            rest = await asyncio.wait_for(reader.read(), 10)
            writer.close()
    finally:
        server.close()
    assert seen_eof.is_set()
    assert rest == b"early got hello bye"

"""Drain and stop through the real CLI and real signals: SIGTERM lets in-flight requests
finish while new connections are refused and ``/ready`` turns 503; idle keep-alive
connections close; ``--drain-timeout`` bounds it; a second signal stops at once."""
from __future__ import annotations

import asyncio
import signal

import pytest

from tests.helpers.http import Client
from tests.helpers.named import HOST, Named, ready, route_config
from tests.helpers.proc import CliProcess, free_port


@pytest.fixture
async def target():
    named = await Named("a").start()
    yield named
    await named.stop()


def start(tmp_path, target_port: int, *flags: str) -> tuple[CliProcess, int, int]:
    config = tmp_path / "routes.yaml"
    config.write_text(route_config(target_port))
    port, admin = free_port(), free_port()
    proxy = CliProcess("--config", str(config), "--listen", str(port), "--admin", f"127.0.0.1:{admin}",
                       "--access-log", "off", *flags)
    return proxy, port, admin


async def test_sigterm_lets_20_slow_requests_finish_refuses_new_connections_and_exits_0(target, tmp_path):
    proxy, port, admin = start(tmp_path, target.port)
    try:
        await asyncio.to_thread(proxy.wait_for, "ready:")
        idle = await Client.connect(port)
        assert (await idle.request("GET", "/", host=HOST)).body == b"a"
        busy = [await Client.connect(port) for _ in range(20)]
        for conn in busy:
            await conn.send(f"GET /slow/2 HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        await target.wait_arrived(21)  # the idle connection's request, and the 20 slow ones (2 s each)
        proxy.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proxy.wait_for, "SIGTERM: draining")
        assert await asyncio.to_thread(ready, admin) == 503
        assert await idle.closed(), "an idle keep-alive connection is closed at once"
        with pytest.raises(OSError):
            await Client.connect(port)
        answers = await asyncio.gather(*(conn.read_response() for conn in busy))
        assert [(r.status, r.body, r.header("connection")) for r in answers] == [(200, b"a", "close")] * 20
        assert all([await conn.closed() for conn in busy])
        await asyncio.to_thread(proxy.proc.wait, 10)
    finally:
        code, lines = proxy.stop()
    assert code == 0, "\n".join(lines)
    assert any("draining 21 connections" in line or "draining 20 connections" in line for line in lines), lines
    assert not any("cut" in line for line in lines), lines


async def test_the_drain_timeout_cuts_what_is_left_and_says_how_many(target, tmp_path):
    proxy, port, _ = start(tmp_path, target.port, "--drain-timeout", "0.5")
    try:
        await asyncio.to_thread(proxy.wait_for, "ready:")
        conns = [await Client.connect(port) for _ in range(3)]
        for conn in conns:
            await conn.send(f"GET /slow/30 HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        await target.wait_arrived(3)
        proxy.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proxy.proc.wait, 15)  # the requests would take 30 s
        for conn in conns:
            with pytest.raises(ConnectionError):
                await conn.read_response()
    finally:
        code, lines = proxy.stop()
    assert code == 0, "\n".join(lines)
    assert any(line.endswith("drain timeout: 3 connections cut") for line in lines), lines


async def test_a_second_sigterm_stops_at_once(target, tmp_path):
    proxy, port, _ = start(tmp_path, target.port)
    try:
        await asyncio.to_thread(proxy.wait_for, "ready:")
        conn = await Client.connect(port)
        await conn.send(f"GET /slow/30 HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        await target.wait_arrived(1)
        proxy.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proxy.wait_for, "SIGTERM: draining")
        proxy.proc.send_signal(signal.SIGINT)
        await asyncio.to_thread(proxy.proc.wait, 10)
        with pytest.raises(ConnectionError):
            await conn.read_response()
    finally:
        code, lines = proxy.stop()
    assert code == 0, "\n".join(lines)
    assert any("SIGINT again: stopping now" in line for line in lines), lines
    assert any(line.endswith("stopped before draining: 1 connection cut") for line in lines), lines

"""The access log: its format through the real CLI, and that a sink nobody reads never stops
serving (lines are dropped and counted instead)."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from pyproxy.observe import AccessLog, format_text
from tests.helpers.http import Client
from tests.helpers.proc import CliProcess, free_port, start_proxy


def route_to(directory: Path, upstream_port: int) -> Path:
    """A config sending every request to 127.0.0.1:``upstream_port``."""
    config = directory / "route.yaml"
    config.write_text(f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
spec:
  rules:
  - backendRefs:
    - group: gateway.envoyproxy.io
      kind: Backend
      name: local
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata:
  name: local
spec:
  endpoints:
  - ip:
      address: 127.0.0.1
      port: {upstream_port}
""")
    return config


async def test_access_log_to_a_file(tmp_path, upstream):
    """`--access-log PATH`: one JSON line per request, Envoy Gateway's field names."""
    log_file = tmp_path / "access.log"
    proxy = start_proxy("--config", str(route_to(tmp_path, upstream.port)), "--access-log", str(log_file))
    try:
        await asyncio.to_thread(proxy.wait_ready)

        def get(path: str) -> int:
            req = urllib.request.Request(f"http://127.0.0.1:{proxy.listen_port}{path}",
                                         headers={"Host": "any.example", "User-Agent": "pyproxy-test"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status

        assert await asyncio.to_thread(get, "/first?x=1") == 200
        assert await asyncio.to_thread(get, "/second") == 200
    finally:
        code, out, err = proxy.stop()
    assert code == 0, err
    assert out == ""  # nothing on stdout when the log goes to a file
    entries = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert [e["x-envoy-origin-path"] for e in entries] == ["/first?x=1", "/second"]
    first = entries[0]
    assert first["method"] == "GET" and first["response_code"] == 200 and first["protocol"] == "HTTP/1.1"
    assert first["user-agent"] == "pyproxy-test"
    assert first[":authority"] == "any.example"
    assert first["upstream_cluster"] == "backend/default/local"
    assert first["upstream_host"] == f"127.0.0.1:{upstream.port}"
    assert first["route_name"] == "httproute/default/web/rule/0/match/0"
    assert len(first["x-request-id"]) == 36


async def test_stdout_pipe_nobody_reads_never_stops_serving(tmp_path, upstream):
    """Regression (issue 6): `--access-log -` into a pipe the test never reads. 1,200 requests
    with a 4 KiB User-Agent make ~5.5 MB of log, the 64 KiB pipe buffer ~85 times over and
    more than the 4 MiB queue: every request is still answered, the surplus lines are dropped
    whole and counted, and written + dropped = sent."""
    connections, per_connection = 8, 150
    agent = "a" * 4096
    proxy = start_proxy("--config", str(route_to(tmp_path, upstream.port)), "--access-log", "-")
    try:
        await asyncio.to_thread(proxy.wait_ready)

        async def client() -> list[int]:
            conn = await Client.connect(proxy.listen_port)
            try:
                return [(await conn.request("GET", f"/status/200?n={i}", {"User-Agent": agent})).status
                        for i in range(per_connection)]
            finally:
                await conn.close()

        statuses = await asyncio.wait_for(asyncio.gather(*(client() for _ in range(connections))), 90)
    finally:
        code, out, err = proxy.stop(timeout=30)
    assert [s for batch in statuses for s in batch] == [200] * (connections * per_connection)
    assert code == 0, err
    written = [json.loads(line) for line in out.splitlines()]  # whole lines only
    assert {e["response_code"] for e in written} == {200}
    total = re.search(r"access log: lines dropped in total: (\d+)", err)
    assert total, err
    assert int(total[1]) > 0
    assert len(written) + int(total[1]) == connections * per_connection


def read_all(fd: int, into: bytearray) -> threading.Thread:
    """A thread reading ``fd`` until EOF into ``into``."""
    def run() -> None:
        while chunk := os.read(fd, 65536):
            into.extend(chunk)
    reader = threading.Thread(target=run, daemon=True)
    reader.start()
    return reader


def open_log(sink: str, write_end: int, monkeypatch, **options) -> AccessLog:
    """An AccessLog writing into the pipe ``write_end``: by path (``/dev/fd/N`` opens a
    descriptor of its own), or as stdout sharing the descriptor, blocking or not (a parent
    process may hand over a non-blocking stdout)."""
    if sink == "path":
        return AccessLog(f"/dev/fd/{write_end}", **options)
    os.set_blocking(write_end, sink == "stdout-blocking")
    monkeypatch.setattr(sys, "stdout", SimpleNamespace(fileno=lambda: write_end))
    return AccessLog("-", **options)


SINKS = ["path", "stdout-blocking", "stdout-nonblocking"]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("sink", SINKS)
async def test_a_stuck_sink_drops_whole_lines_and_counts_them(caplog, monkeypatch, sink):
    """A pipe whose reader does not read: write() returns at once, lines beyond the queue
    limit are dropped and counted, one warning per interval; once the reader reads, close()
    delivers everything still queued. (Before the fix the first full pipe froze the loop.)"""
    caplog.set_level(logging.WARNING, logger="pyproxy")
    read_end, write_end = os.pipe()
    entry = {"path": "/" + "x" * 1000}
    sent = 400  # ~400 KB against a 64 KiB pipe and a 32 KiB queue
    log = open_log(sink, write_end, monkeypatch, buffer_limit=32 << 10, warn_interval=3600)
    try:
        started = time.monotonic()
        for _ in range(sent):
            log.write(entry)
            await asyncio.sleep(0)  # one line per loop iteration, as under light load
        assert time.monotonic() - started < 5
        assert log.dropped > 0
        periodic = [r.getMessage() for r in caplog.records]
        assert len(periodic) == 1 and periodic[0].startswith("access log: lines dropped: ")

        received = bytearray()
        reader = read_all(read_end, received)
        log.close()
        os.close(write_end)
        write_end = -1
        reader.join(10)
        assert not reader.is_alive()
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    lines = received.decode().splitlines()
    assert all(json.loads(line) == entry for line in lines)
    assert len(lines) + log.dropped == sent
    assert caplog.records[-1].getMessage() == f"access log: lines dropped in total: {log.dropped}"


@pytest.mark.timeout(20)
async def test_close_waits_a_bounded_time_for_a_sink_that_stays_stuck(caplog, monkeypatch):
    caplog.set_level(logging.WARNING, logger="pyproxy")
    read_end, write_end = os.pipe()
    log = open_log("stdout-blocking", write_end, monkeypatch, buffer_limit=1 << 20, close_timeout=0.5)
    try:
        for _ in range(200):
            log.write({"path": "/" + "x" * 1000})  # 200 KB: the pipe takes 64 KiB, the rest is queued
        await asyncio.sleep(0)
        started = time.monotonic()
        log.close()
        assert time.monotonic() - started < 3
        assert log.dropped > 0  # what was still queued or being written when the wait ended
        assert caplog.records[-1].getMessage() == f"access log: lines dropped in total: {log.dropped}"
    finally:
        os.close(read_end)  # the stuck writer thread now fails with EPIPE and ends
        os.close(write_end)
    for thread in threading.enumerate():
        if thread.name == "pyproxy-access-log":
            thread.join(5)
            assert not thread.is_alive()


async def test_a_reader_that_goes_away_stops_the_log(caplog):
    """BrokenPipe (e.g. `pyproxy | head`): logging stops, without an error per request."""
    read_end, write_end = os.pipe()
    log = AccessLog(f"/dev/fd/{write_end}")  # opening a pipe for writing needs a reader
    os.close(read_end)
    os.close(write_end)
    log.write({"path": "/"})
    await asyncio.sleep(0)
    log.close()
    assert not log.enabled
    assert any("stopped" in r.getMessage() for r in caplog.records)


async def test_write_errors_drop_the_lines_and_are_reported_once(caplog):
    """A sink that fails every write (/dev/full: ENOSPC) costs its lines, not the loop."""
    caplog.set_level(logging.WARNING, logger="pyproxy")
    log = AccessLog("/dev/full", close_timeout=5)
    for _ in range(3):
        log.write({"path": "/"})
        await asyncio.sleep(0)
    log.close()
    assert log.dropped == 3
    errors = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
    assert errors == ["access log: cannot write to /dev/full: [Errno 28] No space left on device"]
    assert caplog.records[-1].getMessage() == "access log: lines dropped in total: 3"


ENTRY = {
    "start_time": "2026-12-02T10:00:00.123Z", "method": "GET", "x-envoy-origin-path": "/hello?x=1",
    "protocol": "HTTP/1.1", "response_code": 200, "response_flags": "-", "response_code_details": "via_upstream",
    "bytes_received": 0, "bytes_sent": 128, "duration": 7, "x-forwarded-for": None, "user-agent": "curl/8.5.0",
    "x-request-id": "6f1c2a9e-2b1d-4c3e-8f00-0123456789ab", ":authority": "app.example.com",
    "upstream_host": "127.0.0.1:8000", "upstream_cluster": "backend/default/app",
    "downstream_local_address": "127.0.0.1:8080", "downstream_remote_address": "127.0.0.1:40000",
    "route_name": "httproute/default/app/rule/0/match/0",
}


def test_text_format_is_envoys_default_line_then_route_and_details():
    assert format_text(ENTRY) == (
        '[2026-12-02T10:00:00.123Z] "GET /hello?x=1 HTTP/1.1" 200 - 0 128 7 - "-" "curl/8.5.0" '
        '"6f1c2a9e-2b1d-4c3e-8f00-0123456789ab" "app.example.com" "127.0.0.1:8000" '
        "httproute/default/app/rule/0/match/0 via_upstream")


def test_text_format_of_a_local_reply_and_of_hostile_header_values():
    """Unset fields print -; quotes, backslashes and control or non-ASCII bytes in request
    values are escaped, so one request is always one line with its quoting intact."""
    entry = {**ENTRY, "method": "-", "x-envoy-origin-path": None, "response_code": 400, "response_flags": "DPE",
             "response_code_details": "upstream_reset_before_response_started{connection_failure,delayed connect "
                                      "error: 111}",
             "user-agent": 'a" "b\\c\x01\xe9', "x-request-id": None, ":authority": None, "upstream_host": None,
             "route_name": None}
    assert format_text(entry) == (
        '[2026-12-02T10:00:00.123Z] "- - HTTP/1.1" 400 DPE 0 128 7 - "-" "a\\" \\"b\\\\c\\u0001\\u00e9" "-" "-" "-" - '
        "upstream_reset_before_response_started{connection_failure,delayed_connect_error:_111}")


async def test_reopen_sends_later_lines_to_a_new_file(tmp_path):
    """logrotate: rename the file away, reopen; what was logged before stays in the renamed
    file, what is logged after goes to a new file at the path."""
    path, rotated = tmp_path / "access.log", tmp_path / "access.log.1"
    log = AccessLog(str(path), log_format="text")
    log.write({**ENTRY, "x-envoy-origin-path": "/before"})
    log.flush()
    path.rename(rotated)
    log.reopen()
    log.write({**ENTRY, "x-envoy-origin-path": "/after"})
    log.close()
    assert [line.split()[2] for line in rotated.read_text().splitlines()] == ["/before"]
    assert [line.split()[2] for line in path.read_text().splitlines()] == ["/after"]


async def test_reopen_of_stdout_or_off_does_nothing(tmp_path):
    for target in ("-", "off"):
        log = AccessLog(target)
        log.reopen()
        log.close()


async def test_text_format_and_sigusr1_reopen_through_the_cli(tmp_path, upstream):
    """`--access-log PATH --access-log-format text`, then logrotate's rename and SIGUSR1."""
    path, rotated = tmp_path / "access.log", tmp_path / "access.log.1"
    port = free_port()
    proxy = CliProcess("--config", str(route_to(tmp_path, upstream.port)), "--listen", f"127.0.0.1:{port}",
                       "--admin", "off", "--access-log", str(path), "--access-log-format", "text")

    def get(target: str) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{target}", timeout=10) as resp:
            return resp.status

    try:
        await asyncio.to_thread(proxy.wait_for, "ready:")
        assert await asyncio.to_thread(get, "/before") == 200
        path.rename(rotated)
        proxy.proc.send_signal(signal.SIGUSR1)
        await asyncio.to_thread(proxy.wait_for, f"access log: reopened {path}")
        assert await asyncio.to_thread(get, "/after") == 200
    finally:
        code, lines = proxy.stop()
    assert code == 0, lines
    [before] = rotated.read_text().splitlines()
    [after] = path.read_text().splitlines()
    assert re.fullmatch(r'\[\S+Z\] "GET /before HTTP/1.1" 200 - 0 \d+ \d+ - "-" "Python-urllib/[\d.]+" "[0-9a-f-]{36}" '
                        rf'"127.0.0.1:{port}" "127.0.0.1:{upstream.port}" httproute/default/web/rule/0/match/0 '
                        r"via_upstream", before), before
    assert after.split()[2] == "/after"

"""``--workers N`` through the real CLI: processes sharing the listener with SO_REUSEPORT, a
worker killed with SIGKILL replaced without a failed request on the other one, signals and
errors handled by the supervisor."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.http import Client
from tests.helpers.named import HOST, Named, route_config
from tests.helpers.proc import CliProcess, ProxyProcess, free_port, run_cli, start_proxy


def server_info(proxy: ProxyProcess) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{proxy.admin_port}/server_info", timeout=10) as resp:
        return json.load(resp)


def socket_owner(client: Client, pids: list[int]) -> int:
    """The pid of the worker holding the server side of ``client``'s connection: the socket
    from the proxy's port to the client's port, found through /proc."""
    local_port = client.writer.get_extra_info("sockname")[1]
    proxy_port = client.writer.get_extra_info("peername")[1]
    inode = None
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if (int(fields[2].split(":")[1], 16), int(fields[1].split(":")[1], 16)) == (local_port, proxy_port):
                inode = fields[9]
    assert inode is not None
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
            except FileNotFoundError:
                continue
    raise AssertionError(f"no worker holds the connection from port {local_port}")


async def test_a_killed_worker_is_replaced_and_the_other_loses_no_request(tmp_path):
    target = await Named("a").start()
    (tmp_path / "routes.yaml").write_text(route_config(target.port))
    proxy = start_proxy("--config", str(tmp_path), "--workers", "2", "--access-log", "off")
    try:
        await asyncio.to_thread(proxy.wait_ready)
        pids = [w["pid"] for w in (await asyncio.to_thread(server_info, proxy))["workers"]]
        assert len(set(pids)) == 2
        conns = [await Client.connect(proxy.listen_port) for _ in range(20)]
        for conn in conns:
            assert (await conn.request("GET", "/", host=HOST)).body == b"a"
        owners = [socket_owner(conn, pids) for conn in conns]
        assert set(owners) == set(pids), "SO_REUSEPORT spread 20 connections over both workers"

        victim, survivor = pids
        os.kill(victim, signal.SIGKILL)
        for conn, owner in zip(conns, owners, strict=True):
            if owner == survivor:
                for _ in range(5):
                    response = await conn.request("GET", "/", host=HOST)
                    assert (response.status, response.body) == (200, b"a")
            else:
                assert await conn.closed()

        deadline = time.monotonic() + 20
        while True:
            info = await asyncio.to_thread(server_info, proxy)
            if all(w["ready"] for w in info["workers"]) and victim not in [w["pid"] for w in info["workers"]]:
                break
            assert time.monotonic() < deadline, info
            await asyncio.sleep(0.1)
        assert [w["restarts"] for w in info["workers"]] == [1, 0]
        assert await asyncio.to_thread(proxy.ready)
        for _ in range(10):
            fresh = await Client.connect(proxy.listen_port)
            assert (await fresh.request("GET", "/", host=HOST)).body == b"a"
            await fresh.close()
        for conn in conns:
            await conn.close()
    finally:
        code, _, err = proxy.stop()
        await target.stop()
    assert code == 0, err
    assert "exited with signal SIGKILL; starting a new one" in err
    assert "supervisor: every worker stopped" in err


def scrape(proxy: ProxyProcess) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{proxy.admin_port}/stats/prometheus", timeout=10) as resp:
        text = resp.read().decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


async def test_the_supervisor_sums_the_workers_metrics(tmp_path):
    target = await Named("a").start()
    (tmp_path / "routes.yaml").write_text(route_config(target.port))
    proxy = start_proxy("--config", str(tmp_path), "--workers", "2", "--access-log", "off")
    try:
        await asyncio.to_thread(proxy.wait_ready)
        pids = [w["pid"] for w in (await asyncio.to_thread(server_info, proxy))["workers"]]
        conns = [await Client.connect(proxy.listen_port) for _ in range(20)]
        for conn in conns:
            for _ in range(3):
                assert (await conn.request("GET", "/", host=HOST)).status == 200
        assert {socket_owner(conn, pids) for conn in conns} == set(pids)  # both workers served some
        for conn in conns:
            await conn.close()
        samples = await asyncio.to_thread(scrape, proxy)
    finally:
        code, _, err = proxy.stop()
        await target.stop()
    assert code == 0, err
    prefix = frozenset({("envoy_http_conn_manager_prefix", f"http-{proxy.listen_port}")})
    assert samples["envoy_http_downstream_rq_total", prefix] == 60
    assert samples["envoy_cluster_upstream_rq_total", frozenset({("envoy_cluster_name", "backend/default/app")})] == 60
    assert samples["envoy_server_live", frozenset()] == 1
    assert samples["pyproxy_worker_restarts_total", frozenset()] == 0


def wait_lines(proxy: CliProcess, text: str, count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while sum(text in line for line in list(proxy.lines)) < count:
        assert time.monotonic() < deadline, "\n".join(proxy.lines)
        time.sleep(0.05)


@pytest.mark.parametrize("how", ["watch", "sighup"])
async def test_a_reload_reaches_every_worker(tmp_path, how):
    a, b = await Named("a").start(), await Named("b").start()
    config = tmp_path / "routes.yaml"
    config.write_text(route_config(a.port))
    port = free_port()
    proxy = CliProcess("--config", str(tmp_path), "--workers", "2", "--listen", str(port), "--admin", "off",
                       "--access-log", "off", *(["--no-watch"] if how == "sighup" else []))

    async def answers() -> set[bytes]:
        seen = set()
        for _ in range(20):
            conn = await Client.connect(port)
            seen.add((await conn.request("GET", "/", host=HOST)).body)
            await conn.close()
        return seen

    try:
        await asyncio.to_thread(proxy.wait_for, "supervisor: 2 workers serving")
        assert await answers() == {b"a"}
        tmp = tmp_path / ".routes.yaml.tmp"
        tmp.write_text(route_config(b.port))
        os.replace(tmp, config)
        if how == "sighup":
            assert await answers() == {b"a"}
            proxy.proc.send_signal(signal.SIGHUP)
        await asyncio.to_thread(wait_lines, proxy, "reloaded: generation 2", 2)
        assert await answers() == {b"b"}
    finally:
        code, lines = proxy.stop()
        await a.stop()
        await b.stop()
    assert code == 0, "\n".join(lines)


def test_a_config_error_stops_the_supervisor_before_any_worker(tmp_path):
    (tmp_path / "bad.yaml").write_text("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
                                       "metadata: {name: r}\nspecc: {}\n")
    result = run_cli("--config", str(tmp_path), "--workers", "2", "--admin", "off")
    assert result.returncode == 1
    assert "specc: unknown field" in result.stderr
    assert "worker" not in result.stderr


def test_a_worker_that_cannot_bind_stops_them_all(tmp_path):
    (tmp_path / "routes.yaml").write_text(route_config(9))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("--config", str(tmp_path), "--workers", "2", "--admin", "off", "--listen", str(port))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port} for the implicit listener (--listen): address already in use" \
        in result.stderr
    assert "did not start; stopping" in result.stderr
    assert "Traceback" not in result.stderr


def test_workers_is_a_count_or_auto():
    result = run_cli("serve", "--config", "x.yaml", "--workers", "0")
    assert result.returncode == 2
    assert "--workers: expected at least 1, got '0'" in result.stderr

"""The real CLI in a subprocess: version, help, flag forms, bind errors, the startup summary,
debug logging per request, and running without the optional modules."""
from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers.proc import CliProcess, free_port, message, run_cli, shim, start_proxy

SEED = Path(__file__).resolve().parents[2] / "config" / "seed-example.yaml"


def gateway_config(port: int, upstream_port: int = 9) -> str:
    return f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: eg
spec:
  gatewayClassName: pyproxy
  listeners:
  - name: web
    protocol: HTTP
    port: {port}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: app
spec:
  parentRefs:
  - name: eg
  hostnames:
  - app.example.com
  rules:
  - backendRefs:
    - group: gateway.envoyproxy.io
      kind: Backend
      name: app
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata:
  name: app
spec:
  endpoints:
  - ip: {{address: 127.0.0.1, port: {upstream_port}}}
"""


@contextmanager
def occupied() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_version():
    for args in (["--version"], ["version"]):
        result = run_cli(*args)
        assert (result.returncode, result.stdout, result.stderr) == (0, "pyproxy 0.1.0\n", "")


def test_help_lists_each_command_on_one_line():
    result = run_cli("--help", env={"COLUMNS": "80"})
    assert result.returncode == 0
    lines = [line.split() for line in result.stdout.splitlines()]
    for command in ("serve", "check", "explain", "demo", "version"):
        assert [line for line in lines if line[:1] == [command] and len(line) > 2], result.stdout


def test_bad_log_level_is_a_usage_error():
    result = run_cli("--config", str(SEED), "--log-level", "loud")
    assert result.returncode == 2
    assert "--log-level: invalid choice: 'loud'" in result.stderr


@pytest.mark.parametrize("form, address", [
    ("{port}", "127.0.0.1:{port}"),
    (":{port}", "127.0.0.1:{port}"),
    ("127.0.0.1:{port}", "127.0.0.1:{port}"),
    ("[::1]:{port}", "[::1]:{port}"),
])
def test_listen_forms_and_admin_off(form, address):
    port = free_port("::1" if "::1" in form else "127.0.0.1")
    proxy = CliProcess("--config", str(SEED), "--listen", form.format(port=port), "--admin", "off",
                       "--access-log", "off")
    try:
        ready = message(proxy.wait_for("ready:"))
    finally:
        code, lines = proxy.stop()
    assert f"http://{address.format(port=port)} serves listener/implicit" in ready
    assert ready.endswith("; admin off")
    assert code == 0, lines


@pytest.mark.parametrize("flag", ["--admin", "--listen"])
def test_a_busy_port_names_its_flag(flag):
    with occupied() as busy:
        ports = {"--admin": f"127.0.0.1:{free_port()}", "--listen": f"127.0.0.1:{free_port()}", flag: f"127.0.0.1:{busy}"}
        result = run_cli("--config", str(SEED), "--access-log", "off", *(x for kv in ports.items() for x in kv))
    what = {"--admin": "the admin interface", "--listen": "the implicit listener"}[flag]
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{busy} for {what} ({flag}): address already in use" in result.stderr.splitlines()
    assert "Traceback" not in result.stderr


def test_a_busy_gateway_port_names_the_listener_and_where_its_port_comes_from(tmp_path):
    with occupied() as busy:
        (tmp_path / "gw.yaml").write_text(gateway_config(busy))
        result = run_cli("--config", str(tmp_path), "--bind-address", "127.0.0.1", "--admin", "off",
                         "--access-log", "off")
    assert result.returncode == 1
    assert (
        f"cannot listen on 127.0.0.1:{busy} for Gateway default/eg listener web (its port comes from the Gateway's "
        "spec.listeners[].port, its address from --bind-address): address already in use"
    ) in result.stderr.splitlines()
    assert "Traceback" not in result.stderr


def test_an_access_log_that_cannot_be_opened_names_its_flag(tmp_path):
    target = tmp_path / "missing-dir" / "access.log"
    result = run_cli("--config", str(SEED), "--admin", "off", "--listen", str(free_port()),
                     "--access-log", str(target))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"cannot open the access log {target} (--access-log): No such file or directory"]


def test_demo_with_a_busy_port_prints_no_curl_command():
    with occupied() as busy:
        result = run_cli("demo", "--listen", str(busy), "--admin", "off", "--access-log", "off")
    assert result.returncode == 1
    assert (f"cannot listen on 127.0.0.1:{busy} for the implicit listener (--listen): address already in use"
            in result.stderr.splitlines())
    assert "curl" not in result.stderr
    assert "Traceback" not in result.stderr


async def test_startup_summary_names_files_counts_addresses_and_admin():
    proxy = start_proxy("--config", str(SEED), "--access-log", "off")
    try:
        await asyncio.to_thread(proxy.wait_ready)
    finally:
        code, _, err = proxy.stop()
    assert code == 0, err
    summaries = [message(line) for line in err.splitlines() if " INFO pyproxy: ready:" in line]
    assert summaries == [
        f"ready: loaded {SEED}: 1 route, 1 backend, 1 listener; http://127.0.0.1:{proxy.listen_port} serves "
        f"listener/implicit (hosts: www.example.com); admin http://127.0.0.1:{proxy.admin_port}"
    ]


def test_gateway_summary_and_unused_listen(tmp_path):
    port = free_port()
    (tmp_path / "gw.yaml").write_text(gateway_config(port))
    proxy = CliProcess("--config", str(tmp_path), "--bind-address", "127.0.0.1", "--listen", "18080",
                       "--admin", "off", "--access-log", "off")
    try:
        ready = message(proxy.wait_for("ready:"))
        unused = message(proxy.wait_for("--listen"))
    finally:
        code, lines = proxy.stop()
    assert ready == (
        f"ready: loaded {tmp_path / 'gw.yaml'}: 1 route, 1 backend, 1 listener; http://127.0.0.1:{port} serves "
        "gateway/default/eg/web (hosts: app.example.com); admin off"
    )
    assert unused == ("--listen 127.0.0.1:18080 is unused: the configuration has Gateways, whose listeners bind "
                      "their spec.listeners[].port on --bind-address")
    assert code == 0, lines


async def test_debug_logs_route_upstream_and_rejections(tmp_path, upstream):
    """`--log-level DEBUG` (any case): one line per request; a request rejected by the
    protocol layer also leaves its access-log line with the reason."""
    port = free_port()
    (tmp_path / "gw.yaml").write_text(gateway_config(port, upstream.port))
    access_log = tmp_path / "access.log"
    proxy = CliProcess("--config", str(tmp_path / "gw.yaml"), "--bind-address", "127.0.0.1", "--admin", "off",
                       "--access-log", str(access_log), "--log-level", "DEBUG")

    def exchange() -> bytes:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/hello", headers={"Host": "app.example.com"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: x\r\n\r\n")
            return s.recv(100)

    try:
        await asyncio.to_thread(proxy.wait_for, "ready:")
        reply = await asyncio.to_thread(exchange)
        routed = message(await asyncio.to_thread(proxy.wait_for, "-> 200"))
        rejected = message(await asyncio.to_thread(proxy.wait_for, "-> 400"))
    finally:
        code, lines = proxy.stop()
    assert code == 0, lines
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert routed.endswith(
        f"GET app.example.com/hello -> 200 route=httproute/default/app/rule/0/match/0 "
        f"upstream=127.0.0.1:{upstream.port} (backend/default/app) details=via_upstream"
    )
    assert rejected.endswith("-> 400 flags=DPE details=http1.codec_error")
    entries = [json.loads(line) for line in access_log.read_text().splitlines()]
    assert [(e["response_code"], e["response_flags"], e["response_code_details"]) for e in entries] == [
        (200, "-", "via_upstream"), (400, "DPE", "http1.codec_error")]


async def test_runs_on_asyncio_without_uvloop(tmp_path):
    proxy = start_proxy("--config", str(SEED), "--access-log", "off", env=shim(tmp_path, "uvloop"))
    try:
        await asyncio.to_thread(proxy.wait_ready)
    finally:
        code, _, err = proxy.stop()
    assert code == 0, err
    assert [message(line) for line in err.splitlines() if "uvloop" in line] == [
        "uvloop not available; using asyncio's event loop"]


def test_demo_without_trustme_says_how_to_install_it(tmp_path):
    result = run_cli("demo", env=shim(tmp_path, "trustme"))
    assert result.returncode == 2
    assert result.stderr == "pyproxy demo needs trustme to make its CA: pip install 'pyproxy[demo]'\n"

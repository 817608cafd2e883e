"""Hot reload through the real CLI: the config rewritten under load (atomic rename, and the
symlink swap of a Kubernetes ConfigMap volume), invalid writes, SIGHUP, listeners added and
removed, certificates changed on a socket that stays."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import time
import urllib.request
from pathlib import Path

import hpack
import pytest
import trustme
from hyperframe.frame import DataFrame, GoAwayFrame, HeadersFrame

from tests.helpers.h2client import H2Client, parse_frames
from tests.helpers.http import Client
from tests.helpers.named import HOST, Named, ready, route_config
from tests.helpers.proc import CliProcess, child_of, free_port


@pytest.fixture
async def targets():
    a, b = await Named("a").start(), await Named("b").start()
    yield a, b
    await a.stop()
    await b.stop()


async def sighup_moves_to(proxy: CliProcess, conn: Client, body: bytes) -> None:
    """SIGHUP, the reload's log line, then the next request answered by the new target."""
    proxy.proc.send_signal(signal.SIGHUP)
    await asyncio.to_thread(proxy.wait_for, "reloaded: generation 2")
    assert (await conn.request("GET", "/", host=HOST)).body == body


def server_info(admin_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/server_info", timeout=5) as resp:
        return json.load(resp)


class ConfigMapDir:
    """A directory laid out as kubelet lays out a ConfigMap volume: ``routes.yaml`` is a
    symlink to ``..data/routes.yaml``, ``..data`` a symlink to a timestamped directory, and an
    update writes a new directory and renames a new ``..data`` symlink over the old one."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.version = 0

    def write(self, text: str) -> None:
        self.version += 1
        stamp = f"..2026_12_02_{self.version:04d}"
        (self.root / stamp).mkdir()
        (self.root / stamp / "routes.yaml").write_text(text)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(stamp)
        os.replace(tmp, self.root / "..data")
        link = self.root / "routes.yaml"
        if not link.is_symlink():
            link.symlink_to("..data/routes.yaml")


def atomic_write(path: Path, text: str) -> None:
    """How editors and config tools save: a new file renamed over the old."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.mark.parametrize("swap", ["rename", "symlink"])
async def test_rewrites_under_load_lose_no_request_and_move_traffic_within_2s(targets, tmp_path, swap):
    a, b = targets
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    configmap = ConfigMapDir(config_dir)

    def write(port: int) -> None:
        if swap == "rename":
            atomic_write(config_dir / "routes.yaml", route_config(port))
        else:
            configmap.write(route_config(port))

    write(a.port)
    port = free_port()
    proxy = CliProcess("--config", str(config_dir), "--listen", str(port), "--admin", "off", "--access-log", "off")
    results: list[tuple[float, float, str]] = []  # (sent at, answered at, upstream name or error)
    try:
        await asyncio.to_thread(proxy.wait_for, "ready:")

        async def client(stop_at: float) -> None:
            conn = await Client.connect(port)
            try:
                while time.monotonic() < stop_at:
                    sent = time.monotonic()
                    try:
                        response = await conn.request("GET", "/", host=HOST)
                        outcome = response.body.decode() if response.status == 200 else f"status {response.status}"
                    except (ConnectionError, TimeoutError) as exc:
                        outcome = f"error {exc!r}"
                        await conn.close()
                        conn = await Client.connect(port)
                    results.append((sent, time.monotonic(), outcome))
            finally:
                await conn.close()

        start = time.monotonic()
        clients = [asyncio.create_task(client(start + 10.0)) for _ in range(20)]
        writes: list[tuple[float, str]] = []
        for i, (target, name) in enumerate([(b, "b"), (a, "a"), (b, "b"), (a, "a")]):
            await asyncio.sleep(start + 0.5 + 2.3 * i - time.monotonic())
            await asyncio.to_thread(write, target.port)
            writes.append((time.monotonic(), name))
        await asyncio.wait_for(asyncio.gather(*clients), 30)
    finally:
        code, lines = proxy.stop()
    assert code == 0, "\n".join(lines)
    failed = [r for r in results if r[2] not in ("a", "b")]
    assert not failed, failed[:5]
    assert len(results) > 200
    bounds = [w[0] for w in writes[1:]] + [start + 10.0]
    for (written, name), until in zip(writes, bounds, strict=True):
        settled = [r for r in results if written + 2.0 <= r[0] and r[1] < until]
        assert settled, f"no request between {written + 2.0 - start:.1f}s and {until - start:.1f}s"
        assert {r[2] for r in settled} == {name}, f"traffic had not moved to {name} 2 s after the write"
    assert sum("reloaded: generation" in line for line in lines) >= 4


async def test_an_invalid_write_changes_nothing_and_a_fix_or_the_old_config_clears_the_error(targets, tmp_path):
    a, b = targets
    config = tmp_path / "routes.yaml"
    config.write_text(route_config(a.port))
    port, admin = free_port(), free_port()
    proxy = CliProcess("--config", str(config), "--listen", str(port), "--admin", f"127.0.0.1:{admin}",
                       "--access-log", "off")
    try:
        await asyncio.to_thread(proxy.wait_for, "ready:")
        conn = await Client.connect(port)
        assert (await conn.request("GET", "/", host=HOST)).body == b"a"

        atomic_write(config, route_config(b.port).replace("spec:\n  endpoints:", "specc:\n  endpoints:"))
        failed = await asyncio.to_thread(proxy.wait_for, "reload failed")
        assert "generation 1 keeps serving" in failed
        error = await asyncio.to_thread(proxy.wait_for, "specc")
        assert error.endswith("routes.yaml: document 2 (Backend default/app), line 17: specc: unknown field; "
                              "did you mean 'spec'?"), error
        assert (await conn.request("GET", "/", host=HOST)).body == b"a"
        assert await asyncio.to_thread(ready, admin) == 200
        info = await asyncio.to_thread(server_info, admin)
        assert (info["generation"], info["reloads"]) == (1, {"success": 0, "failure": 1})
        assert "specc: unknown field" in info["last_reload_error"]

        atomic_write(config, route_config(a.port))  # what serves, again: the reload changes nothing
        deadline = time.monotonic() + 20
        while (info := await asyncio.to_thread(server_info, admin))["last_reload_error"] is not None:
            assert time.monotonic() < deadline, info
            await asyncio.sleep(0.05)
        assert (info["generation"], info["reloads"]) == (1, {"success": 0, "failure": 1})

        atomic_write(config, route_config(b.port))
        await asyncio.to_thread(proxy.wait_for, "reloaded: generation 2")
        assert (await conn.request("GET", "/", host=HOST)).body == b"b"
        info = await asyncio.to_thread(server_info, admin)
        assert (info["generation"], info["last_reload_error"]) == (2, None)
        await conn.close()
    finally:
        code, lines = proxy.stop()
    assert code == 0, "\n".join(lines)
    assert not any("Traceback" in line for line in lines)


async def test_a_reload_keeps_the_upstream_connections_of_unchanged_backends(targets, tmp_path):
    a, _ = targets
    config = tmp_path / "routes.yaml"
    config.write_text(route_config(a.port))
    port = free_port()
    proxy = CliProcess("--config", str(config), "--listen", str(port), "--admin", "off", "--access-log", "off",
                       "--no-watch")
    try:
        await asyncio.to_thread(proxy.wait_for, "ready:")
        conn = await Client.connect(port)
        assert (await conn.request("GET", "/", host=HOST)).body == b"a"
        config.write_text(route_config(a.port).replace("hostnames: [app.example.com]",
                                                       "hostnames: [app.example.com, other.example.com]"))
        proxy.proc.send_signal(signal.SIGHUP)
        await asyncio.to_thread(proxy.wait_for, "reloaded: generation 2")
        assert (await conn.request("GET", "/", host="other.example.com")).body == b"a"
        await conn.close()
    finally:
        code, lines = proxy.stop()
    assert code == 0, "\n".join(lines)
    assert len(a.peers) == 2 and a.peers[0] == a.peers[1], "the pooled upstream connection was not reused"


async def test_sighup_reloads_with_no_watch(targets, tmp_path):
    a, b = targets
    config = tmp_path / "routes.yaml"
    config.write_text(route_config(a.port))
    port = free_port()
    proxy = CliProcess("--config", str(config), "--listen", str(port), "--admin", "off", "--access-log", "off",
                       "--no-watch")
    try:
        await asyncio.to_thread(proxy.wait_for, "ready:")
        config.write_text(route_config(b.port))
        conn = await Client.connect(port)
        assert (await conn.request("GET", "/", host=HOST)).body == b"a"  # not watched: nothing moved
        await sighup_moves_to(proxy, conn, b"b")
        await conn.close()
    finally:
        code, lines = proxy.stop()
    assert code == 0, "\n".join(lines)
    assert any("SIGHUP: reloading" in line for line in lines)


async def test_listeners_added_and_removed_by_a_reload(targets, tmp_path):
    """A listener the change adds is bound; one it removes stops accepting, and its keep-alive
    connection gets its in-flight answer with Connection: close."""
    a, _ = targets
    first, second = free_port(), free_port()
    config = tmp_path / "gw.yaml"
    config.write_text(route_config(a.port, listeners=(first,)))
    proxy = CliProcess("--config", str(config), "--bind-address", "127.0.0.1", "--admin", "off",
                       "--access-log", "off", "--no-watch")
    try:
        await asyncio.to_thread(proxy.wait_for, "ready:")
        kept = await Client.connect(first)
        assert (await kept.request("GET", "/", host=HOST)).body == b"a"

        config.write_text(route_config(a.port, listeners=(first, second)))
        proxy.proc.send_signal(signal.SIGHUP)
        await asyncio.to_thread(proxy.wait_for, "reloaded: generation 2")
        added = await Client.connect(second)
        assert (await added.request("GET", "/", host=HOST)).body == b"a"
        assert (await kept.request("GET", "/", host=HOST)).header("connection") is None

        arrived = a.arrived
        await kept.send(f"GET /slow HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        await a.wait_arrived(arrived + 1)
        config.write_text(route_config(a.port, listeners=(second,)))
        proxy.proc.send_signal(signal.SIGHUP)
        await asyncio.to_thread(proxy.wait_for, "reloaded: generation 3")
        answer = await kept.read_response()
        assert (answer.status, answer.body, answer.header("connection")) == (200, b"a", "close")
        assert await kept.closed()
        with pytest.raises(OSError):
            await Client.connect(first)
        assert (await added.request("GET", "/", host=HOST)).body == b"a"
        await added.close()
    finally:
        code, lines = proxy.stop()
    assert code == 0, "\n".join(lines)


def tls_gateway(port: int, target_port: int, cert: trustme.LeafCert) -> str:
    def indented(pem: bytes) -> str:
        return "".join(f"    {line}\n" for line in pem.decode().strip().splitlines())

    return f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  gatewayClassName: pyproxy
  listeners:
  - name: https
    port: {port}
    protocol: HTTPS
    tls:
      certificateRefs:
      - name: cert
---
apiVersion: v1
kind: Secret
metadata:
  name: cert
type: kubernetes.io/tls
stringData:
  tls.crt: |
{indented(cert.cert_chain_pems[0].bytes())}  tls.key: |
{indented(cert.private_key_pem.bytes())}---
{route_config(target_port).replace("spec:", "spec:" + chr(10) + "  parentRefs:" + chr(10) + "  - name: gw", 1)}"""


async def test_a_certificate_change_keeps_the_socket_and_serves_the_new_certificate(targets, tmp_path):
    a, _ = targets
    old_ca, new_ca = trustme.CA(), trustme.CA()
    port = free_port()
    config = tmp_path / "gw.yaml"
    config.write_text(tls_gateway(port, a.port, old_ca.issue_cert(HOST)))
    proxy = CliProcess("--config", str(config), "--bind-address", "127.0.0.1", "--admin", "off",
                       "--access-log", "off", "--no-watch")

    def client_context(ca: trustme.CA) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        return ctx

    try:
        await asyncio.to_thread(proxy.wait_for, "ready:")
        before = await Client.connect(port, ssl_context=client_context(old_ca), server_hostname=HOST)
        assert (await before.request("GET", "/", host=HOST)).body == b"a"

        config.write_text(tls_gateway(port, a.port, new_ca.issue_cert(HOST)))
        proxy.proc.send_signal(signal.SIGHUP)
        await asyncio.to_thread(proxy.wait_for, "reloaded: generation 2")
        after = await Client.connect(port, ssl_context=client_context(new_ca), server_hostname=HOST)
        assert (await after.request("GET", "/", host=HOST)).body == b"a"
        assert (await before.request("GET", "/", host=HOST)).body == b"a"  # the old connection goes on
        with pytest.raises(ssl.SSLCertVerificationError):
            await Client.connect(port, ssl_context=client_context(old_ca), server_hostname=HOST)
        await before.close()
        await after.close()
    finally:
        code, lines = proxy.stop()
    assert code == 0, "\n".join(lines)


async def test_an_http2_connection_on_a_removed_listener_gets_goaway_after_its_stream(targets, tmp_path):
    """HTTP/2 (prior knowledge) on a listener a reload removes: the stream in flight is
    answered, GOAWAY says no new stream, and the connection closes."""
    a, _ = targets
    first, second = free_port(), free_port()
    config = tmp_path / "gw.yaml"
    config.write_text(route_config(a.port, listeners=(first, second)))
    proxy = CliProcess("--config", str(config), "--bind-address", "127.0.0.1", "--admin", "off",
                       "--access-log", "off", "--no-watch")
    try:
        await asyncio.to_thread(proxy.wait_for, "ready:")
        client = await H2Client.connect(first)
        arrived = a.arrived
        sid = await client.start("/slow", authority=HOST.encode())
        await a.wait_arrived(arrived + 1)
        config.write_text(route_config(a.port, listeners=(second,)))
        proxy.proc.send_signal(signal.SIGHUP)
        await asyncio.to_thread(proxy.wait_for, "reloaded: generation 2")
        # read raw to the end: h2 itself refuses frames that follow a GOAWAY it received
        received = b""
        async with asyncio.timeout(10):
            while data := await client.reader.read(65536):
                received += data
        await client.close()
    finally:
        code, lines = proxy.stop()
    assert code == 0, "\n".join(lines)
    frames = list(parse_frames(received))
    goaway = [f for f in frames if isinstance(f, GoAwayFrame)]
    headers = [hpack.Decoder().decode(f.data) for f in frames if isinstance(f, HeadersFrame)]
    body = b"".join(f.data for f in frames if isinstance(f, DataFrame) and f.stream_id == sid)
    assert [(f.error_code, f.last_stream_id) for f in goaway] == [(0, sid)]
    assert [h[0] for h in headers] == [(":status", "200")]
    assert body == b"a"


async def test_a_loader_killed_on_reload_keeps_the_old_configuration_serving(targets, tmp_path):
    a, b = targets
    (tmp_path / "routes.yaml").write_text(route_config(a.port))
    port, admin = free_port(), free_port()
    proxy = CliProcess("--config", str(tmp_path), "--listen", str(port), "--admin", f"127.0.0.1:{admin}",
                       "--access-log", "off", "--no-watch")
    try:
        await asyncio.to_thread(proxy.wait_for, "ready:")
        conn = await Client.connect(port)
        (tmp_path / "routes.yaml").write_text(route_config(b.port))
        os.mkfifo(tmp_path / "stall.yaml")  # the loader blocks opening it: still running when killed
        proxy.proc.send_signal(signal.SIGHUP)
        child = await asyncio.to_thread(child_of, proxy.proc.pid)
        os.kill(child, signal.SIGKILL)
        failed = await asyncio.to_thread(proxy.wait_for, "reload failed")
        assert "generation 1 keeps serving" in failed
        error = f"cannot load the configuration: the loader process (pid {child}) was killed by SIGKILL"
        assert (await asyncio.to_thread(proxy.wait_for, "cannot load")).endswith(error)
        assert (await conn.request("GET", "/", host=HOST)).body == b"a"
        info = await asyncio.to_thread(server_info, admin)
        assert (info["generation"], info["reloads"], info["last_reload_error"]) == (
            1, {"success": 0, "failure": 1}, error)

        (tmp_path / "stall.yaml").unlink()
        await sighup_moves_to(proxy, conn, b"b")
        await conn.close()
    finally:
        code, lines = proxy.stop()
    assert code == 0, "\n".join(lines)
    assert not any("Traceback" in line for line in lines)

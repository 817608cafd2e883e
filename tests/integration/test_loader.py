"""The loader process (pyproxy/loader.py, a fork of the serving process): the serving process
never imports config/, translate/ or PyYAML; what the loader logs and the config errors it
finds reach the user as ``check`` shows them; a loader that crashes, is killed or hangs is a
clear error (on reload: test_reload.py)."""
from __future__ import annotations

import asyncio
import logging
import os
import re
import signal

import pytest

from pyproxy import loader, loading
from pyproxy.errors import ConfigError
from tests.helpers.http import Client
from tests.helpers.named import HOST, route_config
from tests.helpers.proc import SERVE_THEN_LIST_MODULES, CliProcess, child_of, free_port, run_cli


def loading_only(name: str) -> bool:
    """A module only the loader process should import."""
    return name.split(".")[0] in ("yaml", "_yaml") or name.startswith(("pyproxy.config", "pyproxy.translate",
                                                                          "pyproxy.loading"))


BAD_BACKEND = route_config(1).replace("spec:\n  endpoints:", "specc:\n  endpoints:")
SKIPPED = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n---\n"


async def test_the_serving_process_never_imports_config_translate_or_yaml(tmp_path):
    config = tmp_path / "config"
    config.mkdir()
    (config / "routes.yaml").write_text(route_config(free_port()))
    modules = tmp_path / "modules.txt"
    port, admin = free_port(), free_port()
    proxy = CliProcess(str(modules), "--config", str(config), "--listen", str(port), "--admin", f"127.0.0.1:{admin}",
                       "--access-log", "off", program=("-c", SERVE_THEN_LIST_MODULES))
    try:
        await asyncio.to_thread(proxy.wait_for, "ready:")
        conn = await Client.connect(port)
        assert (await conn.request("GET", "/", host=HOST)).status == 503  # no upstream listens there
        (config / "routes.yaml").write_text(route_config(free_port(), name="other"))
        await asyncio.to_thread(proxy.wait_for, "reloaded: generation 2")  # watched
        assert (await conn.request("GET", "/", host=HOST)).status == 503
        await conn.close()
    finally:
        code, lines = proxy.stop()
    assert code == 0, "\n".join(lines)
    imported = modules.read_text().splitlines()
    assert "pyproxy.status" in imported and "pyproxy.dataplane.server" in imported  # it served what it unpickled
    assert [name for name in imported if loading_only(name)] == []


def test_serve_prints_the_config_errors_check_prints(tmp_path):
    (tmp_path / "routes.yaml").write_text(BAD_BACKEND)
    check = run_cli("check", "--config", str(tmp_path))
    serve = run_cli("--config", str(tmp_path), "--listen", "127.0.0.1:0", "--admin", "off")
    assert (serve.returncode, check.returncode) == (1, 1)
    assert serve.stderr == check.stderr
    config = tmp_path / "routes.yaml"
    assert serve.stderr.splitlines() == [
        f"{config}: document 2 (Backend default/app), line 17: specc: unknown field; did you mean 'spec'?",
        f"{config}: document 2 (Backend default/app), line 13: spec: required field missing",
    ]


async def test_the_loader_reports_config_errors_and_log_records_as_an_in_process_load(tmp_path, caplog):
    config = tmp_path / "routes.yaml"
    config.write_text(BAD_BACKEND)
    with pytest.raises(ConfigError) as in_process:
        loading.load([str(config)], ("127.0.0.1", 0), "127.0.0.1")
    with pytest.raises(ConfigError) as in_child:
        await loader.load([str(config)], ("127.0.0.1", 0), "127.0.0.1")
    assert type(in_child.value) is ConfigError
    assert in_child.value.messages == in_process.value.messages

    config.write_text(SKIPPED + route_config(1))
    caplog.set_level(logging.INFO, logger="pyproxy")
    loaded = await loader.load([str(config)], ("127.0.0.1", 0), "127.0.0.1")
    expected = loading.load([str(config)], ("127.0.0.1", 0), "127.0.0.1")
    assert (loaded.files, loaded.result, loaded.resources) == (expected.files, expected.result, ())
    skipped = [(r.name, r.levelno, r.getMessage()) for r in caplog.records if "skipping" in r.getMessage()]
    assert skipped == [("pyproxy", logging.INFO, f"skipping Deployment web ({config}: document 1, line 1)")] * 2


async def test_a_loader_that_does_not_answer_is_killed_after_the_timeout(tmp_path):
    os.mkfifo(tmp_path / "stall.yaml")  # opening it blocks until a writer comes: none will
    with pytest.raises(loader.LoaderError) as caught:
        await loader.load([str(tmp_path)], ("127.0.0.1", 0), "127.0.0.1", timeout=1)
    [message] = caught.value.messages
    match = re.fullmatch(r"cannot load the configuration: the loader process \(pid (\d+)\) did not answer "
                         r"within 1 s and was killed", message)
    assert match, message
    assert not os.path.exists(f"/proc/{match.group(1)}")  # killed and reaped


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_loader_killed_at_start_makes_serve_exit_1_with_why(tmp_path, sig):
    """SIGTERM (as from a kill of the process group) ends the loader by its default action:
    the child left the parent's handlers, so the parent does not take it for its own drain."""
    (tmp_path / "routes.yaml").write_text(route_config(1))
    os.mkfifo(tmp_path / "stall.yaml")
    proxy = CliProcess("--config", str(tmp_path), "--listen", str(free_port()), "--admin", "off")
    child = child_of(proxy.proc.pid)
    os.kill(child, sig)
    code = proxy.proc.wait(20)
    _, lines = proxy.stop()
    assert code == 1, "\n".join(lines)
    assert lines == [f"cannot load the configuration: the loader process (pid {child}) was killed by {sig.name}"]


def test_sigterm_while_the_configuration_loads_stops_serve_and_its_loader(tmp_path):
    (tmp_path / "routes.yaml").write_text(route_config(1))
    os.mkfifo(tmp_path / "stall.yaml")  # the loader blocks opening it: a hung mount, say
    proxy = CliProcess("--config", str(tmp_path), "--listen", str(free_port()), "--admin", "off")
    child = child_of(proxy.proc.pid)
    code, lines = proxy.stop()
    assert code == 0, "\n".join(lines)
    assert any(line.endswith("stopped before the configuration loaded") for line in lines), lines
    assert not os.path.exists(f"/proc/{child}")  # killed and reaped, not left holding the listen port


async def test_a_loader_that_crashes_is_a_clear_error_with_its_traceback(tmp_path, monkeypatch, capfd):
    def broken(*args: object) -> None:
        raise RuntimeError("a bug in loading")

    monkeypatch.setattr(loading, "load", broken)  # the fork inherits the patched module
    (tmp_path / "routes.yaml").write_text(route_config(1))
    with pytest.raises(loader.LoaderError) as caught:
        await loader.load([str(tmp_path)], ("127.0.0.1", 0), "127.0.0.1")
    [message] = caught.value.messages
    assert re.fullmatch(r"cannot load the configuration: the loader process \(pid \d+\) exited with code 1",
                        message), message
    stderr = capfd.readouterr().err
    assert "failed:\nTraceback" in stderr and "RuntimeError: a bug in loading" in stderr

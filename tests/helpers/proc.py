"""The real CLI in a subprocess: start, wait for readiness on the admin port, stop."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def child_of(parent: int, timeout: float = 20) -> int:
    """The pid of a child process of ``parent`` (the loader process), once one runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = []
        for task in os.listdir(f"/proc/{parent}/task"):
            try:
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    children += f.read().split()
            except OSError:
                continue  # the thread ended meanwhile
        if children:
            return int(children[0])
        time.sleep(0.02)
    raise AssertionError(f"no child process under pid {parent}")


# The real CLI's main, then the names of every module the process imported, written to
# argv[1]: ``CliProcess(path, *args, program=("-c", SERVE_THEN_LIST_MODULES))``.
SERVE_THEN_LIST_MODULES = """\
import sys
from pyproxy.cli import main
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    f.write("\\n".join(sorted(sys.modules)))
raise SystemExit(code)
"""


def run_cli(*args: str, env: dict | None = None, timeout: float = 60,
            cwd: str | os.PathLike[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pyproxy", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=cwd)


@dataclass
class ProxyProcess:
    proc: subprocess.Popen
    listen_port: int
    admin_port: int

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/ready", timeout=1) as resp:
                return resp.status == 200
        except (urllib.error.URLError, ConnectionError, OSError):
            return False

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out, err = self.proc.communicate(timeout=5)
                raise AssertionError(f"pyproxy exited with {self.proc.returncode}:\n{err}")
            if self.ready():
                return
            time.sleep(0.05)
        raise AssertionError("pyproxy did not become ready in time")

    def stop(self, timeout: float = 10) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate(timeout=5)
        return self.proc.returncode, out, err


def start_proxy(*args: str, env: dict | None = None) -> ProxyProcess:
    listen_port, admin_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "pyproxy", *args, "--listen", f"127.0.0.1:{listen_port}",
           "--admin", f"127.0.0.1:{admin_port}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    return ProxyProcess(proc, listen_port, admin_port)


class CliProcess:
    """The CLI in a subprocess whose stderr lines are collected on a thread, so a test can wait
    for a line (readiness without the admin port) with a deadline. ``program``: what the
    interpreter runs before ``args``."""

    def __init__(self, *args: str, env: dict | None = None, program: tuple[str, ...] = ("-m", "pyproxy")) -> None:
        self.proc = subprocess.Popen([sys.executable, *program, *args], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        self.lines: list[str] = []
        self._closed = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="stderr-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 20) -> str:
        """The first stderr line containing ``text``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    raise AssertionError(f"no stderr line with {text!r}:\n" + "\n".join(self.lines))
                self._changed.wait(remaining)

    def stop(self, timeout: float = 10) -> tuple[int, list[str]]:
        """SIGTERM, then the exit code and every stderr line."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(5)
        self._reader.join(5)
        return code, self.lines


def message(line: str) -> str:
    """A log line without its timestamp, level and logger name."""
    return line.split(": ", 1)[1]


def shim(directory, *modules: str) -> dict:
    """Environment that makes ``modules`` unimportable in a subprocess: a module of each name
    that raises ImportError, first on PYTHONPATH."""
    for name in modules:
        (directory / f"{name}.py").write_text(f"raise ImportError('{name} hidden by a test shim')\n")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(directory), os.environ.get("PYTHONPATH")]))}

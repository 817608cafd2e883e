"""The real CLI in a subprocess: start, wait for readiness on the admin port, stop."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


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

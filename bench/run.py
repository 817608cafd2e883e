#!/usr/bin/env python3
"""pyproxy vs nginx, same machine, same run, same HTTPS upstream.

    ./dev bench                       # or: .venv/bin/python bench/run.py
    ./dev bench --duration 20 --rounds 3

What runs (everything on loopback, everything in one temporary directory, everything stopped on
exit, Ctrl-C included):

    wrk ──HTTP/1.1──► pyproxy (1 process) ──┐
                                            ├──HTTPS (SNI upstream.bench, CA-verified)──► nginx upstream
    wrk ──HTTP/1.1──► nginx proxy (1 worker)┘                                               (1 worker)

Workloads: ``small`` (GET /small, 128-byte body) and ``large`` (GET /large, 1 MiB body), each
with 50 keep-alive connections from 2 wrk threads, after a short warm-up. For each workload the
two proxies are measured back to back (the order alternates between workloads and rounds), and
the table shows req/s, MiB/s read by wrk, p50/p99 latency, peak RSS and CPU of the proxy, errors,
and the ratio pyproxy/nginx. The same numbers go to bench/results/latest.json.

Only the standard library and trustme (both in the project venv); wrk and nginx come from apt.
There are no assertions on the numbers: this is a measurement, not a test.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import http.client
import json
import os
import platform
import pwd
import grp
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/'s own modules, however run.py is started
import syscalls  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_OUTPUT = HERE / "results" / "latest.json"

UPSTREAM_NAME = "upstream.bench"  # SNI, verified name and rewritten Host
ROUTE_HOST = "bench.example"  # the Host wrk sends, matched by the HTTPRoute
UPSTREAM_ADDR = "127.0.0.2"  # the upstream nginx gets its own loopback address
PROXY_ADDR = "127.0.0.1"

SMALL_BODY = b"0123456789abcdef" * 8  # 128 bytes; no quotes, '$' or '\' (it sits in nginx.conf)
LARGE_SIZE = 1 << 20
WORKLOADS = {  # name -> (path, body size)
    "small": ("/small", len(SMALL_BODY)),
    "large": ("/large", LARGE_SIZE),
    "h2": ("/small", len(SMALL_BODY)),  # HTTP/2 with prior knowledge, h2load: 10 streams per connection
}
H2_STREAMS = 10
TARGETS = ("pyproxy", "nginx", "pyproxy-w2")  # pyproxy-w2: --workers 2
TARGETS_SMALL_RPS = 0.75  # issue 11's targets, reported (never asserted)
TARGETS_LARGE_MIBS = 0.95
TARGET_IDLE_RSS_MIB = 30.0


class BenchError(Exception):
    """A setup failure with a message for the user (no traceback)."""


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- tools


def ensure_tools() -> tuple[str, str]:
    """Paths of wrk and nginx, installing both with apt-get when one is missing."""

    def find() -> tuple[str | None, str | None]:
        path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin:/usr/local/sbin"
        return shutil.which("wrk", path=path), shutil.which("nginx", path=path)

    wrk, nginx = find()
    if wrk and nginx:
        return wrk, nginx
    missing = [name for name, path in (("wrk", wrk), ("nginx", nginx)) if not path]
    apt = shutil.which("apt-get")
    if apt is None:
        raise BenchError(f"{' and '.join(missing)} not found and apt-get is not available; "
                         "install wrk and nginx yourself and run again")
    prefix = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if prefix is None:
        raise BenchError(f"{' and '.join(missing)} not found; run as root (or with sudo) so the benchmark "
                         "can `apt-get install -y wrk nginx`, or install them yourself")
    say(f"{' and '.join(missing)} not installed: running apt-get update && apt-get install -y wrk nginx")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (prefix + [apt, "update"], prefix + [apt, "install", "-y", "wrk", "nginx"]):
        try:
            done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, timeout=900)
        except subprocess.TimeoutExpired:
            raise BenchError(f"`{' '.join(argv)}` did not finish within 15 minutes") from None
        if done.returncode != 0:
            raise BenchError(f"`{' '.join(argv)}` failed (exit {done.returncode}); install wrk and nginx yourself")
    wrk, nginx = find()
    if not (wrk and nginx):
        raise BenchError("apt-get succeeded but wrk/nginx are still not on PATH")
    return wrk, nginx


def tool_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0] if text else "?"


def git_revision() -> str:
    try:
        done = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                              text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return done.stdout.strip() or "?"


# --------------------------------------------------------------------------- processes


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the benchmark dies, even by SIGKILL (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Processes:
    """Every process the benchmark starts, each in its own session so a terminal Ctrl-C reaches
    only us; ``stop_all`` ends them in reverse order (SIGTERM, bounded wait, then SIGKILL to the
    process group we created)."""

    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], log_path: Path, cwd: Path | None = None,
              env: dict | None = None) -> subprocess.Popen:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=cwd, env=env, start_new_session=True, preexec_fn=_die_with_parent)
        self.started.append((name, proc))
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
                return
            except subprocess.TimeoutExpired:
                pass
        # Gone already, or ignoring SIGTERM: kill whatever is left of the group we created (an
        # nginx master killed hard would leave its workers behind).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5.0)

    def stop_all(self) -> None:
        # A second Ctrl-C must not cut the cleanup short (every wait in it is bounded).
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            self._stop_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stop_all(self) -> None:
        while self.started:
            name, proc = self.started.pop()
            try:
                self.stop(proc)
            except Exception as exc:  # keep stopping the others
                say(f"could not stop {name} (pid {proc.pid}): {exc}")


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:]) or "    (empty log)"


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def wait_until(what: str, check, proc: subprocess.Popen, log_path: Path, timeout: float) -> None:
    """Poll ``check()`` (truthy = ready) until ``timeout``; fail early when ``proc`` exits."""
    deadline = time.monotonic() + timeout
    last_error: object = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with code {proc.returncode} before it was ready; its log:\n"
                             f"{log_tail(log_path)}")
        try:
            if check():
                return
        except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
            last_error = exc
        time.sleep(0.05)
    raise BenchError(f"{what} not ready within {timeout:.0f} s (last error: {last_error}); its log:\n"
                     f"{log_tail(log_path)}")


def http_get(host: str, port: int, path: str, host_header: str, ssl_context: ssl.SSLContext | None = None,
             server_hostname: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    """One GET; with ``ssl_context`` it dials ``host`` but sends SNI for (and verifies)
    ``server_hostname``."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        if ssl_context is not None:
            sock = socket.create_connection((host, port), timeout)
            try:
                conn.sock = ssl_context.wrap_socket(sock, server_hostname=server_hostname)
            except BaseException:
                sock.close()
                raise
        conn.request("GET", path, headers={"Host": host_header})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------- sampling /proc


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def minor_faults(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rpartition(")")[2].split()[7])  # minflt (field 10 of stat)
    except (OSError, ValueError, IndexError):
        return 0


def cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15 of stat)
    except (OSError, ValueError, IndexError):
        return 0


def children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        pass
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rpartition(")")[2].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


class Sampler:
    """Peak RSS (sum over ``pids``) every ``interval`` seconds, and CPU used, while a run lasts."""

    def __init__(self, pids: list[int], interval: float = 0.1) -> None:
        self.pids = pids
        self.interval = interval
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._t0 = 0.0
        self._ticks0 = 0
        self.cpu_percent = 0.0
        self.elapsed = 0.0
        self.minor_faults = 0

    def _sample(self) -> None:
        self.peak_kib = max(self.peak_kib, sum(rss_kib(pid) for pid in self.pids))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "Sampler":
        self._t0 = time.monotonic()
        self._ticks0 = sum(cpu_ticks(pid) for pid in self.pids)
        self._faults0 = sum(minor_faults(pid) for pid in self.pids)
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self._sample()
        elapsed = self.elapsed = time.monotonic() - self._t0
        ticks = sum(cpu_ticks(pid) for pid in self.pids) - self._ticks0
        self.minor_faults = sum(minor_faults(pid) for pid in self.pids) - self._faults0
        self.cpu_percent = 100.0 * ticks / os.sysconf("SC_CLK_TCK") / elapsed if elapsed > 0 else 0.0


# --------------------------------------------------------------------------- wrk

_SIZE = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
_TIME = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}  # -> milliseconds


def _ms(value: str, unit: str) -> float:
    return float(value) * _TIME[unit]


def parse_wrk(text: str) -> dict:
    """The numbers of one `wrk --latency` run (units as wrk prints them: binary sizes)."""
    def need(pattern: str) -> re.Match:
        m = re.search(pattern, text, re.M)
        if m is None:
            raise BenchError(f"cannot parse wrk output (no match for {pattern!r}):\n{text}")
        return m

    total = need(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h), ([\d.]+)(B|KB|MB|GB|TB) read")
    requests = int(total.group(1))
    seconds = _ms(total.group(2), total.group(3)) / 1e3
    read_bytes = float(total.group(4)) * _SIZE[total.group(5)]
    latency = {}
    for pct in ("50", "75", "90", "99"):
        m = need(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s|m|h)\s*$")
        latency[pct] = _ms(m.group(1), m.group(2))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    socket_errors = dict(zip(("connect", "read", "write", "timeout"),
                             (int(x) for x in sock.groups()))) if sock else dict.fromkeys(
        ("connect", "read", "write", "timeout"), 0)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "requests": requests,
        "seconds": seconds,
        "req_per_s": float(need(r"^Requests/sec:\s+([\d.]+)").group(1)),
        "mib_per_s": read_bytes / seconds / (1 << 20) if seconds else 0.0,
        "p50_ms": latency["50"],
        "p75_ms": latency["75"],
        "p90_ms": latency["90"],
        "p99_ms": latency["99"],
        "non_2xx_3xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": socket_errors,
        "errors": (int(non2xx.group(1)) if non2xx else 0) + sum(socket_errors.values()),
    }


def run_h2load(wrk: str, port: int, path: str, seconds: float, args: argparse.Namespace,
               procs: Processes) -> str:
    """h2load for ``seconds``: ``--connections`` connections of ``H2_STREAMS`` streams each,
    HTTP/2 with prior knowledge (``wrk`` is unused: the signature is ``run_wrk``'s)."""
    h2load = shutil.which("h2load")
    if h2load is None:
        raise BenchError("h2load not found (Debian: apt-get install nghttp2-client)")
    argv = [h2load, "-D", f"{max(1, round(seconds))}", "-c", str(args.connections), "-m", str(H2_STREAMS),
            "-t", str(args.threads), "-H", f":authority: {ROUTE_HOST}", f"http://{PROXY_ADDR}:{port}{path}"]
    return run_load("h2load", argv, seconds, args, procs)


def parse_h2load(text: str) -> dict:
    """h2load's summary in ``parse_wrk``'s shape; its request times are a mean and a max,
    reported in the p50 and p99 rows (h2load has no percentiles)."""
    done = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                     r"(\d+) errored, (\d+) timeout", text)
    finished = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s, ([\d.]+)([KMG]?B)/s", text)
    times = re.search(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", text)
    if done is None or finished is None or times is None:
        raise BenchError(f"cannot read h2load's output:\n{text[-2000:]}")
    scale = {"B": 1 / (1 << 20), "KB": 1 / 1024, "MB": 1.0, "GB": 1024.0}[finished.group(4)]
    unit = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    succeeded = int(done.group(3))
    return {
        "requests": succeeded,
        "seconds": float(finished.group(1)),
        "errors": int(done.group(1)) - succeeded,
        "req_per_s": float(finished.group(2)),
        "mib_per_s": float(finished.group(3)) * scale,
        "p50_ms": float(times.group(5)) * unit[times.group(6)],  # the mean
        "p99_ms": float(times.group(3)) * unit[times.group(4)],  # the max
    }


def run_wrk(wrk: str, port: int, path: str, seconds: float, args: argparse.Namespace,
            procs: Processes) -> str:
    argv = [wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds:g}s", "--timeout",
            f"{args.timeout:g}s", "--latency", "-H", f"Host: {ROUTE_HOST}", f"http://{PROXY_ADDR}:{port}{path}"]
    return run_load("wrk", argv, seconds, args, procs)


def run_load(name: str, argv: list[str], seconds: float, args: argparse.Namespace, procs: Processes) -> str:
    """Run a load generator for ``seconds`` (bounded), stopped with the rest on Ctrl-C; its output."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    procs.started.append((name, proc))
    try:
        out, _ = proc.communicate(timeout=seconds + args.timeout + 30)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{name} did not finish within {seconds + args.timeout + 30:.0f} s") from None
    finally:
        if proc.poll() is None:
            Processes.stop(proc)
        procs.started.remove((name, proc))
    if proc.returncode != 0:
        raise BenchError(f"{name} failed (exit {proc.returncode}):\n{out}")
    return out


# --------------------------------------------------------------------------- the setup


@dataclass
class Target:
    name: str
    port: int
    proc: subprocess.Popen
    log: Path
    rss_pids: list[int] = field(default_factory=list)
    failed: str | None = None  # why it cannot be (further) measured
    h2_port: int = 0  # where it takes HTTP/2 with prior knowledge (0: on ``port``)
    idle_rss_mib: float | None = None  # after start and one small request


def idle_rss(target: Target) -> float:
    """RSS (MiB, summed over the target's processes) after one small request and half a second
    of quiet: issue 11's "idle" measurement, taken before anything else reaches the target."""
    http_get(PROXY_ADDR, target.port, WORKLOADS["small"][0], ROUTE_HOST, timeout=10.0)
    time.sleep(0.5)
    return sum(rss_kib(pid) for pid in target.rss_pids) / 1024


def fill(template: Path, dest: Path, **values: str) -> None:
    text = template.read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    leftover = re.findall(r"@[A-Z_]+@", text)
    if leftover:
        raise BenchError(f"{template.name}: unfilled markers {sorted(set(leftover))}")
    dest.write_text(text)


def nginx_user_line() -> str:
    """nginx started by root drops its workers to ``nobody``; name a group that exists."""
    if os.geteuid() != 0:
        return ""
    for group in ("nogroup", "nobody"):
        with contextlib.suppress(KeyError):
            grp.getgrnam(group)
            pwd.getpwnam("nobody")
            return f"user nobody {group};"
    return "user root root;"  # a throwaway benchmark on loopback; workers need to read the files


def nginx_prefix(root: Path, name: str) -> Path:
    prefix = root / name
    for sub in ("tmp/client_body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi", "logs"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    return prefix


def start_nginx(nginx: str, procs: Processes, name: str, prefix: Path) -> subprocess.Popen:
    conf = prefix / "nginx.conf"
    log = prefix / "stdout.log"
    test = subprocess.run([nginx, "-t", "-q", "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    if test.returncode != 0:
        raise BenchError(f"nginx rejects the generated {name} config {conf}:\n{test.stdout}{test.stderr}")
    return procs.start(name, [nginx, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)], log)


def pyproxy_config(upstream_port: int, ca_pem: str) -> str:
    """The seed example's shape (``pyproxy.demo.seed_config``) with an ``ip`` endpoint."""
    from pyproxy.demo import seed_config

    return seed_config(
        name="bench", route_host=ROUTE_HOST, upstream_name=UPSTREAM_NAME,
        endpoint=f"ip: {{address: {UPSTREAM_ADDR}, port: {upstream_port}}}", ca_pem=ca_pem,
        comment="Generated by bench/run.py: the seed example's shape, pointed at the local nginx upstream.",
    )


def validate(target: Target, large_digest: str) -> None:
    """Both bodies come back intact through the proxy before anything is timed."""
    expected = {"small": (SMALL_BODY, None), "large": (None, large_digest)}
    for workload, (path, size) in WORKLOADS.items():
        if workload == "h2":
            continue  # the same path as small, over HTTP/2 (h2load checks every status)
        status, body = http_get(PROXY_ADDR, target.port, path, ROUTE_HOST, timeout=10.0)
        exact, digest = expected[workload]
        ok = status == 200 and len(body) == size and (body == exact if exact is not None
                                                       else hashlib.sha256(body).hexdigest() == digest)
        if not ok:
            raise BenchError(f"{target.name}: GET {path} (Host: {ROUTE_HOST}) answered {status} with "
                             f"{len(body)} bytes (expected 200 with the {size}-byte body): {body[:200]!r}")


def start_pyproxy(procs: Processes, root: Path, upstream_port: int, ca_pem: str, args: argparse.Namespace,
                  name: str = "pyproxy", workers: int = 1) -> Target:
    config_dir = root / f"{name}-config"
    config_dir.mkdir()
    (config_dir / "bench.yaml").write_text(pyproxy_config(upstream_port, ca_pem))
    port, admin = free_port(PROXY_ADDR), free_port(PROXY_ADDR)
    log = root / f"{name}.log"
    python = REPO / ".venv" / "bin" / "python"
    if not python.exists():
        python = Path(sys.executable)
    argv = [str(python), "-m", "pyproxy", "--config", str(config_dir), "--listen", f"{PROXY_ADDR}:{port}",
            "--admin", f"{PROXY_ADDR}:{admin}", "--access-log", "off", "--log-level", "warning",
            "--workers", str(workers)]
    env = None
    cwd = REPO
    if args.pyproxy_src is not None:
        # A/B runs: the `pyproxy` package from another checkout (e.g. a git worktree) shadows
        # the one installed in the venv.
        cwd = args.pyproxy_src
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (str(args.pyproxy_src), os.environ.get("PYTHONPATH", "")) if p))
    say(f"starting pyproxy: {' '.join(argv)}" + (f" (from {args.pyproxy_src})" if env else ""))
    proc = procs.start(name, argv, log, cwd=cwd, env=env)

    def ready() -> bool:
        status, _ = http_get(PROXY_ADDR, admin, "/ready", "localhost", timeout=2.0)
        return status == 200

    wait_until(name, ready, proc, log, args.ready_timeout)
    # with workers, the supervisor and its workers (CPU and RSS are summed over them)
    return Target(name, port, proc, log, rss_pids=[proc.pid, *(children_of(proc.pid) if workers > 1 else [])])


def start_nginx_proxy(nginx: str, procs: Processes, root: Path, upstream_port: int) -> Target:
    prefix = nginx_prefix(root, "nginx-proxy")
    shutil.copy(root / "nginx-upstream" / "ca.crt", prefix / "ca.crt")
    port, h2_port = free_port(PROXY_ADDR), free_port(PROXY_ADDR)
    fill(HERE / "nginx-proxy.conf.in", prefix / "nginx.conf", USER=nginx_user_line(), PREFIX=str(prefix),
         ADDR=PROXY_ADDR, PORT=str(port), H2PORT=str(h2_port), ROUTE_HOST=ROUTE_HOST, UPSTREAM_ADDR=UPSTREAM_ADDR,
         UPSTREAM_PORT=str(upstream_port), UPSTREAM_NAME=UPSTREAM_NAME)
    proc = start_nginx(nginx, procs, "nginx proxy", prefix)
    log = prefix / "error.log"

    def listening() -> bool:
        with socket.create_connection((PROXY_ADDR, port), timeout=1.0):
            return True

    wait_until("nginx proxy", listening, proc, log, 15.0)
    workers: list[int] = []
    deadline = time.monotonic() + 10
    while not workers and time.monotonic() < deadline:
        workers = children_of(proc.pid)
        time.sleep(0.05)
    if not workers:
        raise BenchError("nginx proxy: no worker process found")
    return Target("nginx", port, proc, log, rss_pids=workers, h2_port=h2_port)


def start_upstream(nginx: str, procs: Processes, root: Path) -> tuple[int, str, str]:
    """The HTTPS upstream; returns (port, CA PEM, sha256 of the large body)."""
    import trustme  # the project venv has it (pyproxy's demo uses it)

    prefix = nginx_prefix(root, "nginx-upstream")
    ca = trustme.CA(organization_name="pyproxy bench CA")
    leaf = ca.issue_cert(UPSTREAM_NAME)
    ca_pem = ca.cert_pem.bytes().decode()
    (prefix / "ca.crt").write_text(ca_pem)
    (prefix / "upstream.crt").write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key = prefix / "upstream.key"
    key.write_bytes(leaf.private_key_pem.bytes())
    key.chmod(0o600)  # read by the master (as root) only
    www = prefix / "www"
    www.mkdir()
    large = os.urandom(LARGE_SIZE)
    (www / "large.bin").write_bytes(large)
    # nginx workers run as nobody: they must be able to reach www/large.bin.
    for path in (root, prefix, www):
        path.chmod(0o755)
    (www / "large.bin").chmod(0o644)
    port = free_port(UPSTREAM_ADDR)
    fill(HERE / "nginx-upstream.conf.in", prefix / "nginx.conf", USER=nginx_user_line(), PREFIX=str(prefix),
         ADDR=UPSTREAM_ADDR, PORT=str(port), NAME=UPSTREAM_NAME, SMALL_BODY=SMALL_BODY.decode())
    proc = start_nginx(nginx, procs, "nginx upstream", prefix)
    log = prefix / "error.log"
    client_ctx = ssl.create_default_context(cafile=str(prefix / "ca.crt"))

    def serving() -> bool:
        status, body = http_get(UPSTREAM_ADDR, port, "/small", UPSTREAM_NAME, client_ctx, UPSTREAM_NAME, 2.0)
        return status == 200 and body == SMALL_BODY

    wait_until("nginx upstream", serving, proc, log, 15.0)
    status, body = http_get(UPSTREAM_ADDR, port, "/large", UPSTREAM_NAME, client_ctx, UPSTREAM_NAME, 10.0)
    if status != 200 or body != large:
        raise BenchError(f"nginx upstream: GET /large answered {status} with {len(body)} bytes; log:\n"
                         f"{log_tail(log)}")
    say(f"HTTPS upstream (nginx) on {UPSTREAM_ADDR}:{port}, certificate for {UPSTREAM_NAME} verified")
    return port, ca_pem, hashlib.sha256(large).hexdigest()


# --------------------------------------------------------------------------- measuring


def measure(target: Target, workload: str, wrk: str, args: argparse.Namespace, procs: Processes) -> dict:
    path, _ = WORKLOADS[workload]
    load = run_wrk
    if workload == "h2":
        load = run_h2load
        port = target.h2_port or target.port
    else:
        port = target.port
    if args.warmup > 0:
        load(wrk, port, path, args.warmup, args, procs)
    if target.proc.poll() is not None:
        raise BenchError(f"{target.name} exited (code {target.proc.returncode}) during the warm-up; log:\n"
                         f"{log_tail(target.log)}")
    with Sampler(target.rss_pids) as sampler:
        out = load(wrk, port, path, args.duration, args, procs)
    result = parse_h2load(out) if workload == "h2" else parse_wrk(out)
    result["rss_mib"] = sampler.peak_kib / 1024
    result["cpu_percent"] = sampler.cpu_percent
    # CPU time of the proxy per request: steadier than req/s when wrk, the upstream and the
    # proxy share two cores.
    # Page faults per request: high values mean fresh memory per request (e.g. malloc handing
    # out big buffers through mmap), which costs CPU in the kernel.
    result["minor_faults_per_req"] = sampler.minor_faults / result["requests"] if result["requests"] else 0.0
    result["cpu_us_per_req"] = (sampler.cpu_percent / 100 * sampler.elapsed * 1e6 / result["requests"]
                                if result["requests"] else 0.0)
    if target.proc.poll() is not None:
        raise BenchError(f"{target.name} exited (code {target.proc.returncode}) during the run; log:\n"
                         f"{log_tail(target.log)}")
    return result


SYSCALL_SECONDS = 5.0  # the extra run counted under strace (--syscalls)


def measure_syscalls(targets: dict[str, Target], wrk: str, args: argparse.Namespace,
                     procs: Processes) -> dict[str, dict]:
    """Syscalls per request of each proxy on the small workload, by ``strace -c -f``."""
    strace = syscalls.available()
    if strace is None:
        say("strace not found (apt-get install strace): no syscall counts")
        return {}
    path, _ = WORKLOADS["small"]
    table: dict[str, dict] = {}
    for name, target in targets.items():
        if target.failed:
            continue
        say(f"syscalls: {name} under strace -c -f ({SYSCALL_SECONDS:g} s of small)")

        def load(target: Target = target) -> dict:
            return parse_wrk(run_wrk(wrk, target.port, path, SYSCALL_SECONDS, args, procs))

        calls, result = syscalls.count(strace, target.rss_pids, load)
        table[name] = {"requests": result["requests"], "calls": calls,
                       "per_request": syscalls.per_request(calls, result["requests"])}
    return table


def summarize(runs: list[dict]) -> dict:
    """Median over rounds of every number (one round: that round)."""
    keys = ("req_per_s", "mib_per_s", "p50_ms", "p99_ms", "rss_mib", "cpu_percent", "cpu_us_per_req",
            "minor_faults_per_req")
    summary = {key: statistics.median(run[key] for run in runs) for key in keys}
    summary["errors"] = sum(run["errors"] for run in runs)
    summary["requests"] = sum(run["requests"] for run in runs)
    summary["rounds"] = len(runs)
    return summary


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


ROWS = (  # (label, key, format)
    ("req/s", "req_per_s", "{:,.0f}"),
    ("MiB/s", "mib_per_s", "{:,.1f}"),
    ("p50 ms", "p50_ms", "{:.2f}"),
    ("p99 ms", "p99_ms", "{:.2f}"),
    ("RSS MiB (peak)", "rss_mib", "{:.1f}"),
    ("CPU % (1 core=100)", "cpu_percent", "{:.0f}"),
    ("CPU us/request", "cpu_us_per_req", "{:,.1f}"),
    ("errors", "errors", "{:,}"),
)


def render(report: dict) -> str:
    lines = []
    header = (f"{'workload':<9} {'metric':<19} {'pyproxy':>12} {'nginx':>12} {'pyproxy -w2':>12} "
              f"{'pyproxy/nginx':>14} {'w2/w1':>7}")
    lines.append(header)
    lines.append("-" * len(header))
    for workload, data in report["workloads"].items():
        first = True
        for label, key, fmt in ROWS:
            cells = []
            for target in TARGETS:
                summary = data.get(target)
                value = summary.get(key) if summary else None
                cells.append(fmt.format(value) if value is not None else "-")
            r, w = data["ratio"].get(key), data["workers_ratio"].get(key)
            ratio_text = f"{r:.2f}" if r is not None else "-"
            workers_text = f"{w:.2f}" if w is not None else "-"
            lines.append(f"{workload if first else '':<9} {label:<19} {cells[0]:>12} {cells[1]:>12} {cells[2]:>12} "
                         f"{ratio_text:>14} {workers_text:>7}")
            first = False
        target_note = data.get("target")
        if target_note:
            lines.append(f"{'':<9} {'issue target':<19} {target_note}")
        lines.append("")
    idle = report.get("idle_rss_mib", {})
    if idle:
        cells = [f"{idle[t]:.1f}" if idle.get(t) is not None else "-" for t in TARGETS]
        lines.append(f"{'idle':<9} {'RSS MiB':<19} {cells[0]:>12} {cells[1]:>12} {cells[2]:>12}")
        mine = idle.get("pyproxy")
        if mine is not None:
            met = "met" if mine <= TARGET_IDLE_RSS_MIB else "NOT met"
            lines.append(f"{'':<9} {'issue target':<19} <= {TARGET_IDLE_RSS_MIB:g} MiB after start and one request: "
                         f"{mine:.1f} ({met})")
        lines.append("")
    for target, why in report.get("failures", {}).items():
        lines.append(f"{target}: NOT MEASURED: {why.splitlines()[0]}")
    return "\n".join(lines).rstrip() + "\n"


def target_note(workload: str, ratios: dict) -> str | None:
    if workload == "small":
        r, want, what = ratios.get("req_per_s"), TARGETS_SMALL_RPS, "req/s"
    elif workload == "large":
        r, want, what = ratios.get("mib_per_s"), TARGETS_LARGE_MIBS, "MiB/s"
    else:
        return None
    if r is None:
        return f">= {want}x nginx {what}: not measured"
    return f">= {want}x nginx {what}: {r:.2f}x ({'met' if r >= want else 'NOT met'})"


def build_report(args: argparse.Namespace, runs: list[dict], failures: dict[str, str], meta: dict) -> dict:
    workloads = {}
    for workload in args.workloads:
        data: dict = {}
        for target in TARGETS:
            mine = [run["result"] for run in runs if run["workload"] == workload and run["target"] == target]
            data[target] = summarize(mine) if mine else None
        py, ng, w2 = data["pyproxy"], data["nginx"], data["pyproxy-w2"]
        data["ratio"] = {key: ratio(py and py[key], ng and ng[key]) for _, key, _ in ROWS if key != "errors"}
        data["workers_ratio"] = {key: ratio(w2 and w2[key], py and py[key]) for _, key, _ in ROWS if key != "errors"}
        data["target"] = target_note(workload, data["ratio"])
        workloads[workload] = data
    return {"meta": meta, "workloads": workloads, "runs": runs, "failures": failures}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Benchmark pyproxy against nginx (same upstream, same run).")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured run (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each run (default 2)")
    p.add_argument("--connections", type=int, default=50, help="keep-alive connections (default 50)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("--timeout", type=float, default=5.0, help="wrk per-request timeout in seconds (default 5)")
    p.add_argument("--rounds", type=int, default=1, help="measure each pair this many times; the table "
                                                         "shows medians (default 1)")
    p.add_argument("--workloads", default="small,large,h2",
                   help="comma-separated: small,large,h2 (HTTP/2 with h2load) (default all)")
    p.add_argument("--targets", default="pyproxy,nginx,pyproxy-w2",
                   help="comma-separated: pyproxy,nginx,pyproxy-w2 (pyproxy with --workers 2) (default all)")
    p.add_argument("--ready-timeout", type=float, default=30.0, help="seconds to wait for pyproxy /ready")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON results (default {DEFAULT_OUTPUT})")
    p.add_argument("--pyproxy-src", type=Path, metavar="DIR",
                   help="run the pyproxy package found in DIR (a checkout or worktree) instead of this tree's")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs)")
    p.add_argument("--syscalls", action="store_true",
                   help=f"after the runs, count each proxy's syscalls per request with strace -c -f "
                        f"({SYSCALL_SECONDS:g} s of small each)")
    p.add_argument("--hold", action="store_true",
                   help="after starting everything, print the addresses and wait for Ctrl-C (for profiling)")
    args = p.parse_args(argv)
    args.workloads = [w for w in args.workloads.split(",") if w]
    args.targets = [t for t in args.targets.split(",") if t]
    bad = [w for w in args.workloads if w not in WORKLOADS] + [t for t in args.targets if t not in TARGETS]
    if bad or not args.workloads or not args.targets:
        p.error(f"unknown or empty workloads/targets: {bad}")
    if args.pyproxy_src is not None:
        args.pyproxy_src = args.pyproxy_src.resolve()
        if not (args.pyproxy_src / "pyproxy" / "__main__.py").is_file():
            p.error(f"--pyproxy-src {args.pyproxy_src}: no pyproxy/__main__.py there")
    if args.duration <= 0 or args.rounds < 1 or args.connections < args.threads or args.threads < 1:
        p.error("need --duration > 0, --rounds >= 1, --threads >= 1 and --connections >= --threads")
    return args


def _raise_interrupt(signum, frame):  # SIGTERM -> the same cleanup path as Ctrl-C
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl-C, kill and a closed terminal all take the same cleanup path. SIGINT is set
    # explicitly: a shell's background job starts with it ignored.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)
    try:
        wrk, nginx = ensure_tools()
    except BenchError as exc:
        say(str(exc))
        return 2
    procs = Processes()
    root = Path(tempfile.mkdtemp(prefix="pyproxy-bench-"))
    runs: list[dict] = []
    failures: dict[str, str] = {}
    syscall_table: dict[str, dict] = {}
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "pyproxy_revision": git_revision() if args.pyproxy_src is None else f"source {args.pyproxy_src}",
        "nginx": tool_version([nginx, "-v"]),
        "wrk": tool_version([wrk, "-v"]),
        "loadavg_at_start": os.getloadavg(),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "connections": args.connections,
        "threads": args.threads,
        "rounds": args.rounds,
        "upstream": f"nginx, 1 worker, https://{UPSTREAM_ADDR} (SNI {UPSTREAM_NAME})",
        "mib_per_s": "bytes read by wrk (headers included) per second, 2^20 bytes per MiB",
    }
    targets: dict[str, Target] = {}
    try:
        upstream_port, ca_pem, large_digest = start_upstream(nginx, procs, root)
        if "nginx" in args.targets:
            targets["nginx"] = start_nginx_proxy(nginx, procs, root, upstream_port)
            targets["nginx"].idle_rss_mib = idle_rss(targets["nginx"])
            validate(targets["nginx"], large_digest)
            say(f"nginx proxy on {PROXY_ADDR}:{targets['nginx'].port} (workers {targets['nginx'].rss_pids})")
        for name, workers in (("pyproxy", 1), ("pyproxy-w2", 2)):
            if name not in args.targets:
                continue
            try:
                targets[name] = start_pyproxy(procs, root, upstream_port, ca_pem, args, name, workers)
                targets[name].idle_rss_mib = idle_rss(targets[name])
                validate(targets[name], large_digest)
                say(f"{name} on {PROXY_ADDR}:{targets[name].port} (pids {targets[name].rss_pids})")
            except BenchError as exc:
                failures[name] = str(exc)
                say(f"{name} cannot be measured:\n{exc}")
                targets.pop(name, None)
        if args.hold:
            for t in targets.values():
                print(f"{t.name}: http://{PROXY_ADDR}:{t.port}/small (Host: {ROUTE_HOST}) pids {t.rss_pids}",
                      flush=True)
            say(f"holding (temporary directory {root}); Ctrl-C to stop")
            while True:
                time.sleep(3600)
        step = 0
        for round_no in range(args.rounds):
            for workload in args.workloads:
                order = [t for t in TARGETS if t in targets]
                if step % 2:
                    order.reverse()
                step += 1
                for name in order:
                    target = targets[name]
                    if target.failed:
                        continue
                    say(f"round {round_no + 1}/{args.rounds} {workload:<5} {name:<10} "
                        f"({args.warmup:g} s warm-up + {args.duration:g} s)")
                    try:
                        result = measure(target, workload, wrk, args, procs)
                    except BenchError as exc:
                        target.failed = str(exc)
                        failures[name] = str(exc)
                        say(f"{name} failed: {exc}")
                        continue
                    say(f"  {result['req_per_s']:,.0f} req/s, {result['mib_per_s']:,.1f} MiB/s, "
                        f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
                        f"RSS {result['rss_mib']:.1f} MiB, CPU {result['cpu_percent']:.0f}% "
                        f"({result['cpu_us_per_req']:,.1f} us/req, {result['minor_faults_per_req']:.1f} faults/req), "
                        f"errors {result['errors']}")
                    runs.append({"round": round_no + 1, "workload": workload, "target": name, "result": result})
        if args.syscalls:
            syscall_table = measure_syscalls(targets, wrk, args, procs)
    except BenchError as exc:
        say(str(exc))
        return 2
    except KeyboardInterrupt:
        say("interrupted; stopping everything")
        return 130
    finally:
        procs.stop_all()
        if args.keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    report = build_report(args, runs, failures, meta)
    report["idle_rss_mib"] = {name: target.idle_rss_mib for name, target in targets.items()}
    table = render(report)
    if syscall_table:
        report["syscalls"] = syscall_table
        table += "\n" + syscalls.render(syscall_table)
    report["table"] = table
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(f"pyproxy vs nginx: {args.connections} keep-alive connections, {args.threads} wrk threads, "
          f"{args.duration:g} s per run, {args.rounds} round(s), HTTPS upstream on loopback "
          f"({meta['cpus']} CPUs, pyproxy {meta['pyproxy_revision']})")
    print()
    print(table)
    say(f"results written to {args.output}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Syscalls per request, counted by ``strace -c -f`` attached to a proxy's processes during one
extra load run (``run.py --syscalls``). Not part of the timed runs: strace stops the process
at every syscall, which changes its speed (and so how many events each epoll_wait returns),
but not what one request costs in reads and writes."""
from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ATTACH_WAIT = 1.0  # seconds for strace to attach to every thread before the load starts


def available() -> str | None:
    return shutil.which("strace")


def count(strace: str, pids: list[int], load: Callable[[], dict]) -> tuple[dict[str, int], dict]:
    """Every syscall of ``pids`` (and their threads) while ``load`` runs: (calls by name, what
    ``load`` returned)."""
    with tempfile.TemporaryDirectory(prefix="pyproxy-strace-") as tmp:
        out = Path(tmp) / "strace.txt"
        argv = [strace, "-c", "-f", "-o", str(out)]
        for pid in pids:
            argv += ["-p", str(pid)]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            time.sleep(ATTACH_WAIT)
            result = load()
        finally:
            proc.send_signal(signal.SIGINT)  # strace detaches and writes its summary
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return parse(out.read_text() if out.exists() else ""), result


def parse(text: str) -> dict[str, int]:
    """``strace -c``'s table: calls by syscall name (the ``total`` row left out)."""
    calls: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        # % time, seconds, usecs/call, calls, [errors,] syscall
        if len(fields) in (5, 6) and fields[3].isdigit() and fields[-1] != "total":
            calls[fields[-1]] = calls.get(fields[-1], 0) + int(fields[3])
    return calls


def per_request(calls: dict[str, int], requests: int) -> dict[str, float]:
    """Calls per request by name, most first, with ``total``."""
    if not requests:
        return {}
    rows = {name: n / requests for name, n in sorted(calls.items(), key=lambda item: -item[1])}
    return {"total": sum(calls.values()) / requests, **rows}


def render(table: dict[str, dict]) -> str:
    """The syscalls-per-request table: a column per target, the busiest syscalls as rows."""
    targets = [t for t, data in table.items() if data.get("per_request")]
    if not targets:
        return ""
    names: list[str] = []
    for t in targets:
        for name, value in table[t]["per_request"].items():
            if name not in names and (name == "total" or value >= 0.05):
                names.append(name)
    lines = [f"{'syscalls/request':<19} " + " ".join(f"{t:>12}" for t in targets)]
    lines.append("-" * len(lines[0]))
    for name in names:
        cells = [table[t]["per_request"].get(name) for t in targets]
        lines.append(f"{name:<19} " + " ".join(f"{c:>12.2f}" if c is not None else f"{'-':>12}" for c in cells))
    lines.append(f"{'(requests counted)':<19} " + " ".join(f"{table[t]['requests']:>12,}" for t in targets))
    return "\n".join(lines) + "\n"

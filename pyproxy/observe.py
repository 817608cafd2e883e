"""Access log: one line per request, JSON with Envoy Gateway's default field names where they
apply (the default), or text in Envoy's default format (``format_text``).

Logging must never stop serving. The event loop only encodes a line and appends it to a list;
once per loop iteration the batch is handed to a writer thread through a bounded queue, and
only that thread touches the sink. When the sink does not keep up (a stdout pipe nobody reads,
a stalled disk) and the queue is full, whole batches are dropped and counted
(``AccessLog.dropped``), with a warning at most once per ``warn_interval`` and one at close.

``AccessLog.reopen`` (SIGUSR1, or the admin's ``/reopen_logs``) opens the file path again
after logrotate has renamed it: lines logged before the call go to the old file, later ones
to the new.
"""
from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import os
import select
import sys
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger("pyproxy")

T = TypeVar("T")

# Built once: json.dumps with a non-default argument builds a new encoder on every call.
_encode = json.JSONEncoder(separators=(",", ":")).encode
_FILE_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


def _quoted(value: str | None) -> str:
    """A field in double quotes (``"-"`` when unset), escaped as a JSON string so that no
    request byte can break the line or its quoting."""
    return '"-"' if value is None else _encode(value)


def format_text(entry: dict) -> str:
    """An access-log entry as a line of Envoy's default text format:
    ``[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%"
    %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
    %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
    "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"``, then pyproxy's
    ``%ROUTE_NAME%`` and ``%RESPONSE_CODE_DETAILS%`` (whitespace as ``_``, as Envoy writes
    it). The upstream service time is always ``-``: pyproxy sends no such header."""
    request = f"{entry['method'] or '-'} {entry['x-envoy-origin-path'] or '-'} {entry['protocol']}"
    details = "_".join((entry["response_code_details"] or "-").split())
    return (f"[{entry['start_time']}] {_quoted(request)} {entry['response_code']} {entry['response_flags']} "
            f"{entry['bytes_received']} {entry['bytes_sent']} {entry['duration']} - "
            f"{_quoted(entry['x-forwarded-for'])} {_quoted(entry['user-agent'])} {_quoted(entry['x-request-id'])} "
            f"{_quoted(entry[':authority'])} {_quoted(entry['upstream_host'])} {entry['route_name'] or '-'} {details}")


FORMATS = {"json": _encode, "text": format_text}


def describe(entry: dict) -> str:
    """An access-log entry as one readable debug line: the request, the route chosen, the
    upstream picked, and (for the proxy's own answers) why."""
    request = f"{entry['method'] or '-'} {entry[':authority'] or '-'}{entry['x-envoy-origin-path'] or ''}"
    line = f"{request} -> {entry['response_code']}"
    if entry["route_name"]:
        line += f" route={entry['route_name']}"
    if entry["upstream_host"]:
        line += f" upstream={entry['upstream_host']} ({entry['upstream_cluster']})"
    if entry["response_flags"] != "-":
        line += f" flags={entry['response_flags']}"
    return line + f" details={entry['response_code_details'] or '-'}"


class PerSecond(Generic[T]):
    """A value that depends only on the whole second (the Date header, the date and time of an
    access-log line), made by ``make`` at most once per second: formatting a time costs far
    more than the requests of one second should pay each."""

    __slots__ = ("_make", "_second", "_value")

    def __init__(self, make: Callable[[int], T]) -> None:
        self._make = make
        self._second = -1
        self._value: T | None = None

    def at(self, second: int) -> T:
        if second != self._second or self._value is None:
            self._value = self._make(second)
            self._second = second
        return self._value

    def get(self) -> T:
        """The value for the current second."""
        return self.at(int(time.time()))


def _rfc3339_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))


_START_SECOND = PerSecond(_rfc3339_second)


def format_time(epoch: float) -> str:
    """RFC 3339 with milliseconds in UTC, as Envoy's %START_TIME%. The date and time up to the
    second come from ``PerSecond`` (gmtime and strftime cost 2-3 us, once per access-log
    line); the fraction is rounded to microseconds first, as ``datetime.fromtimestamp`` does."""
    fraction, whole = math.modf(epoch)
    micros = round(fraction * 1_000_000)
    second = int(whole)
    if micros >= 1_000_000:
        second += 1
        micros -= 1_000_000
    return f"{_START_SECOND.at(second)}{micros // 1000:03d}Z"


class _Writer:
    """A thread writing text to a file descriptor, fed through a queue of at most ``limit``
    characters (queued plus being written; lines are ASCII, so characters are bytes).
    ``offer`` never blocks and takes no lock: the deque is thread-safe, and each counter has
    one writer (``_offered`` the loop, ``_written`` the thread), so their difference is the
    queue's size.

    The thread writes once ``FLUSH_SIZE`` characters are queued or ``FLUSH_INTERVAL`` seconds
    after the first line arrived, not once per loop iteration: waking it that often makes
    the two threads trade the GIL and costs the loop more than the write itself."""

    FLUSH_SIZE = 64 << 10
    FLUSH_INTERVAL = 0.2

    def __init__(self, fd: int, owned: bool, name: str, limit: int) -> None:
        self.fd, self.owned, self.name, self.limit = fd, owned, name, limit
        self.broken = False  # the reader went away: nothing more will be written
        self.lost = 0  # lines accepted but not written because of write errors (thread only)
        self.abandoned = 0  # lines still queued or being written when close gave up
        self._batches: collections.deque[tuple[str, int] | None] = collections.deque()  # None: reopen here
        self._offered = 0
        self._written = 0
        self._in_flight = 0
        self._closing = False
        self._last_error: int | None = None
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pyproxy-access-log", daemon=True)
        self._thread.start()

    def offer(self, text: str, lines: int) -> bool:
        """Queue ``text`` (``lines`` lines); False when the queue is full. A batch larger than
        the whole limit is still taken when nothing else is queued."""
        queued = self._offered - self._written
        size = queued + len(text)
        if queued and size > self.limit:
            return False
        self._batches.append((text, lines))
        self._offered += len(text)
        if not queued or queued < self.FLUSH_SIZE <= size:
            self._wake.set()
        return True

    def reopen(self) -> None:
        """Open the file path again once the lines queued so far are written (a file only)."""
        self._batches.append(None)
        self._wake.set()

    def close(self, timeout: float) -> None:
        """Let the thread write what is queued, waiting at most ``timeout`` seconds. Lines
        still queued or being written after that count as lost; the descriptor then stays
        open, since the thread may still be inside a write on it."""
        self._closing = True
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.abandoned = self._in_flight + sum(batch[1] for batch in self._batches if batch is not None)
            self._batches.clear()
        elif self.owned:
            os.close(self.fd)

    def _run(self) -> None:
        while True:
            # clear, then look, then wait: a set() after the look ends the wait at once
            self._wake.clear()
            if not self._batches and not self._closing:
                self._wake.wait()
                continue
            if not self._closing and self._offered - self._written < self.FLUSH_SIZE:
                self._wake.wait(self.FLUSH_INTERVAL)  # gather more, unless the queue fills
            if not self._batches:
                return
            texts, lines, reopen = [], 0, False
            while self._batches:
                batch = self._batches.popleft()
                if batch is None:
                    reopen = True
                    break
                texts.append(batch[0])
                lines += batch[1]
            self._in_flight = lines
            data = "".join(texts)
            try:
                self._write(data.encode())
            except BrokenPipeError:
                self.broken = True
                log.warning("access log: %s was closed by its reader; access logging stopped", self.name)
                return
            except OSError as exc:
                self._lose(exc)
            else:
                self._last_error = None
            self._in_flight = 0
            self._written += len(data)
            if reopen:
                self._reopen()

    def _reopen(self) -> None:
        try:
            fd = os.open(self.name, _FILE_FLAGS, 0o666)
        except OSError as exc:
            log.warning("access log: cannot reopen %s: %s; still writing to the file open before",
                        self.name, exc.strerror or exc)
            return
        os.close(self.fd)
        self.fd = fd
        log.info("access log: reopened %s", self.name)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                # a non-blocking descriptor handed to us (stdout): wait until it takes more
                poller = select.poll()
                poller.register(self.fd, select.POLLOUT)
                poller.poll()

    def _lose(self, exc: OSError) -> None:
        """Count the batch in hand as lost; report an error once until a write succeeds or
        another error comes."""
        self.lost += self._in_flight
        if exc.errno != self._last_error:
            self._last_error = exc.errno
            log.warning("access log: cannot write to %s: %s", self.name, exc)


class AccessLogError(Exception):
    """The access log file cannot be opened; the message names the path and the flag."""


class AccessLog:
    """``target`` is ``-`` (stdout), ``off``, or a file path (appended); ``log_format`` a key
    of ``FORMATS``.

    ``write`` is called on the event loop once per request; ``close`` at shutdown writes what
    is queued, waiting at most ``close_timeout`` seconds for the sink."""

    def __init__(self, target: str = "-", *, log_format: str = "json", buffer_limit: int = 4 << 20,
                 warn_interval: float = 10.0, close_timeout: float = 5.0) -> None:
        self.enabled = target != "off"
        self._format = FORMATS[log_format]
        self._dropped = 0
        self._reported = 0
        self._warned_at = -warn_interval
        self._warn_interval = warn_interval
        self._close_timeout = close_timeout
        self._pending: list[str] = []
        self._scheduled = False
        self._writer: _Writer | None = None
        if target == "-":
            self._writer = _Writer(sys.stdout.fileno(), False, "stdout", buffer_limit)
        elif self.enabled:
            try:
                fd = os.open(target, _FILE_FLAGS, 0o666)
            except OSError as exc:
                raise AccessLogError(f"cannot open the access log {target} (--access-log): "
                                     f"{exc.strerror or exc}") from exc
            self._writer = _Writer(fd, True, target, buffer_limit)

    @property
    def dropped(self) -> int:
        """Lines never written: refused by a full queue, or lost to write errors or the
        shutdown deadline (not those after the reader went away: logging stops then)."""
        writer = self._writer
        return self._dropped + (writer.lost if writer is not None else 0)

    def write(self, entry: dict) -> None:
        """Format ``entry`` now (the dict is the caller's); everything else waits for the
        flush at the end of this loop iteration."""
        self._pending.append(self._format(entry))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Hand this loop iteration's lines to the writer (or drop them if it is full)."""
        self._scheduled = False
        writer = self._writer
        if not self._pending or writer is None:
            return
        lines, self._pending = self._pending, []
        if writer.broken:
            self.enabled = False
            return
        if not writer.offer("\n".join(lines) + "\n", len(lines)):
            self._dropped += len(lines)
        if self.dropped != self._reported:
            self._warn_dropped()

    def reopen(self) -> None:
        """Reopen the file (after logrotate renamed it); nothing for stdout or ``off``."""
        self.flush()
        writer = self._writer
        if writer is not None and writer.owned:
            writer.reopen()

    def _warn_dropped(self) -> None:
        now = time.monotonic()
        if now - self._warned_at < self._warn_interval:
            return
        total = self.dropped
        sink = self._writer.name if self._writer is not None else "the sink"
        log.warning("access log: lines dropped: %d (%d in total); %s is not keeping up",
                    total - self._reported, total, sink)
        self._warned_at, self._reported = now, total

    def close(self) -> None:
        self.flush()
        writer, self._writer = self._writer, None
        self.enabled = False
        if writer is None:
            return
        writer.close(self._close_timeout)
        self._dropped += writer.lost + writer.abandoned  # the writer is detached: count its losses here
        if self._dropped:
            log.warning("access log: lines dropped in total: %d", self._dropped)

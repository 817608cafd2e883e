"""The loader process: the serving process has its configuration read and translated by a
short-lived fork of itself, which writes back through a pipe, pickled, only what is served:
the files read, the IR and the status conditions (``Reply``).

Why a child: config/, translate/ and PyYAML cost a serving process 4 MiB of imports (of 35
idle), plus what a parse leaves behind in its allocator, and a parse in a thread holds the
GIL against the data plane for as long as it runs. A crash or a runaway document (a YAML
alias bomb) ends the child, never the proxy.

Why fork rather than a fresh interpreter: the child inherits everything but config/ and
translate/ already imported, so a load costs those imports (a quarter of a second on our
2-core machines) instead of a whole interpreter's start (0.6-1.2 s, measured). The fork is
taken while uvloop's resolver threads and the file watcher's thread may run; the child only
imports and runs our pure-Python loading code, opens the config files and exits with
``os._exit``, so it needs no lock those threads could hold (the import and logging locks are
reinitialised by CPython in a forked child; glibc's malloc by its own atfork handlers).

This module is the serving side and stays light: it imports neither config/ nor translate/,
and unpickling a reply imports only ir.py and status.py. A child that crashes or does not
answer in time is a ``LoaderError``, a ``ConfigError``: ``serve`` exits 1 with it, and a
reload reports it and keeps the old configuration serving.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import math
import os
import pickle
import signal
import traceback
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import ConfigError
from .status import Result

TIMEOUT = 60.0  # seconds a load may take before the child is killed
REAP_WAIT = 5.0  # seconds to wait for a child that closed its pipe (or was killed) to exit


@dataclass(frozen=True)
class Loaded:
    files: tuple[str, ...]  # every file a document was read from, in order
    result: Result
    # What was translated (``explain`` reads routes' rules and ages). The loader process does
    # not send them: nothing in the serving process reads them.
    resources: tuple[object, ...] = ()


@dataclass(frozen=True)
class Reply:
    """What the loader process writes to its pipe, pickled: the log records of the load
    (logger name, level, message) and either the configuration or the config errors."""

    records: tuple[tuple[str, int, str], ...]
    loaded: Loaded | None
    errors: tuple[str, ...] = ()


class LoaderError(ConfigError):
    """The loader process crashed or hung: no configuration was read."""

    def __init__(self, message: str) -> None:
        super().__init__([f"cannot load the configuration: {message}"])


async def load(paths: Sequence[str], listen: tuple[str, int], bind_address: str,
               timeout: float = TIMEOUT) -> Loaded:
    """Load and translate in a loader process. What it logged is logged here; config errors
    raise ``ConfigError`` with the messages ``check`` prints."""
    loop = asyncio.get_running_loop()
    read_fd, write_fd = os.pipe()
    # Signals wait until the child has left the parent's handlers (a SIGTERM caught by the
    # parent's handler in the child would reach the parent's loop through the wakeup fd).
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    pid = -1
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns about forking a process with threads; why this fork is safe
            # is in the module's docstring.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError as exc:
        os.close(read_fd)
        os.close(write_fd)
        raise LoaderError(f"cannot start the loader process: {exc.strerror}") from exc
    finally:
        if pid != 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    if pid == 0:  # the child: never returns
        _child(write_fd, tuple(paths), listen, bind_address, timeout, mask)
    os.close(write_fd)
    os.set_blocking(read_fd, False)
    output = bytearray()
    done = loop.create_future()

    def readable() -> None:
        try:
            while chunk := os.read(read_fd, 1 << 16):
                output.extend(chunk)
        except BlockingIOError:
            return
        if not done.done():
            done.set_result(None)  # end of file: the child closed its end by exiting

    loop.add_reader(read_fd, readable)
    try:
        await asyncio.wait_for(done, timeout)
    except TimeoutError:
        raise LoaderError(f"the loader process (pid {pid}) did not answer within {timeout:g} s "
                          "and was killed") from None
    finally:
        loop.remove_reader(read_fd)
        os.close(read_fd)
        if not done.done() or done.cancelled():  # timed out, or the load was cancelled
            _kill(pid)
        status = await _reaped(pid)
    if status != 0:
        raise LoaderError(f"the loader process (pid {pid}) {_ended(status)}")
    reply: Reply = pickle.loads(output)
    for name, level, message in reply.records:
        logging.getLogger(name).log(level, "%s", message)
    if reply.loaded is None:
        raise ConfigError(list(reply.errors))
    return reply.loaded


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # already exited (not yet reaped: that is done next)


async def _reaped(pid: int) -> int | None:
    """The child's wait status once it exited, or None (and a warning) if it does not exit
    within ``REAP_WAIT`` (an uninterruptible wait in the kernel): it stays a zombie."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REAP_WAIT
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if loop.time() > deadline:
            logging.getLogger("pyproxy").warning("the loader process (pid %d) does not exit", pid)
            return None
        await asyncio.sleep(0.002)


def _ended(status: int | None) -> str:
    if status is None:
        return "did not exit"
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


class _Records(logging.Handler):
    """Every record logged, as (logger name, level, message), for the serving process to log."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.name, record.levelno, record.getMessage()))


def _child(write_fd: int, paths: tuple[str, ...], listen: tuple[str, int], bind_address: str,
           timeout: float, mask: set[int | signal.Signals]) -> None:
    """The loader process: load, write the pickled ``Reply`` and exit without running the
    parent's cleanup (``os._exit``: no atexit handler, no flush of the parent's buffers)."""
    code = 1
    try:
        # The parent's objects are not the child's to collect: a finalizer of the parent's
        # pending garbage could act on what both share (the loop's epoll instance).
        gc.freeze()
        _leave_parent_signals()
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        # The child holds copies of the parent's sockets while it runs (closing them could
        # break what other libraries' fork handlers restart in the child); it never accepts
        # on them. The parent kills it at the timeout or when the load is cancelled (at
        # shutdown); this alarm ends it too if the parent was killed meanwhile.
        signal.alarm(math.ceil(timeout) + 5)
        handler = _Records()
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(logging.DEBUG)
        from . import loading  # the config/ and translate/ imports happen here, in the child only

        try:
            loaded = loading.load(paths, listen, bind_address)
            reply = Reply(tuple(handler.records), Loaded(loaded.files, loaded.result))
        except ConfigError as exc:
            reply = Reply(tuple(handler.records), None, tuple(exc.messages))
        data = memoryview(pickle.dumps(reply, pickle.HIGHEST_PROTOCOL))
        while data:
            data = data[os.write(write_fd, data):]
        code = 0
    except BaseException:
        os.write(2, f"pyproxy loader process (pid {os.getpid()}) failed:\n{traceback.format_exc()}".encode())
    finally:
        os._exit(code)


def _leave_parent_signals() -> None:
    """The parent's signal handlers wake its event loop through a file descriptor the child
    shares: a SIGTERM to the process group must end the child, not drain the parent twice."""
    signal.set_wakeup_fd(-1)
    for sig in signal.valid_signals():
        try:
            if callable(signal.getsignal(sig)):
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            continue  # SIGKILL, SIGSTOP and the like


__all__ = ["ConfigError", "Loaded", "LoaderError", "Reply", "load"]

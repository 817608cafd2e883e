"""Watching the ``--config`` paths (watchfiles: inotify on Linux, FSEvents/kqueue elsewhere).

A directory is watched recursively with watchfiles' default filter (editor swap and backup
files, VCS directories ignored). A file is watched through its directory, because editors
save by writing a new file and renaming it over the old one, which ends a watch on the file
itself; events for the file, for the file it points to, and for ``..``-named entries (the
``..data`` symlink Kubernetes swaps when a ConfigMap volume changes) count.

Bursts of writes are grouped: watchfiles yields once no event came for ``step`` ms (at most
``debounce`` ms after the first), then the runtime reloads once. A reload of an unchanged
configuration changes nothing, so an event that does not matter costs one load.

Each watcher is watchfiles' blocking iterator, advanced one burst at a time on a thread of the
loop's executor. Its ``awatch`` does the same through anyio, whose asyncio backend would cost
the serving process 1.1 MiB of RSS.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Sequence

import watchfiles

log = logging.getLogger("pyproxy.watch")

STEP_MS = 150
DEBOUNCE_MS = 1000


class _FileFilter(watchfiles.DefaultFilter):
    """Events in a file's directory that concern the watched files."""

    def __init__(self, files: Sequence[str]) -> None:
        super().__init__()
        self._files = {os.path.abspath(f) for f in files}

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        if os.path.basename(path).startswith(".."):
            return True
        if path in self._files:
            return True
        return any(os.path.realpath(f) == path for f in self._files)


def _plans(paths: Sequence[str]) -> list[tuple[tuple[str, ...], bool, watchfiles.BaseFilter]]:
    """(watched paths, recursive, filter) for each watchfiles watcher needed."""
    directories = [os.path.abspath(p) for p in paths if os.path.isdir(p)]
    files = [os.path.abspath(p) for p in paths if not os.path.isdir(p)]
    plans: list[tuple[tuple[str, ...], bool, watchfiles.BaseFilter]] = []
    if directories:
        plans.append((tuple(directories), True, watchfiles.DefaultFilter()))
    if files:
        parents = tuple(dict.fromkeys(os.path.dirname(f) for f in files))
        plans.append((parents, False, _FileFilter(files)))
    return plans


async def watch(paths: Sequence[str], changed: Callable[[], Awaitable[object]], stop: asyncio.Event) -> None:
    """Call ``changed`` after each burst of changes to ``paths`` until ``stop`` is set."""
    watchers = [
        asyncio.create_task(_watch(watched, recursive, watch_filter, changed, stop), name=f"pyproxy.watch:{watched[0]}")
        for watched, recursive, watch_filter in _plans(paths)
    ]
    try:
        await asyncio.gather(*watchers)
    finally:
        for task in watchers:
            task.cancel()


class _Stop:
    """What watchfiles asks, on its thread, between steps: has serving stopped, or this watch
    ended (its task cancelled)?"""

    def __init__(self, serving: asyncio.Event) -> None:
        self.serving = serving
        self.ended = threading.Event()

    def is_set(self) -> bool:
        return self.serving.is_set() or self.ended.is_set()


async def _watch(watched: tuple[str, ...], recursive: bool, watch_filter: watchfiles.BaseFilter,
                 changed: Callable[[], Awaitable[object]], stop: asyncio.Event) -> None:
    halt = _Stop(stop)
    bursts = watchfiles.watch(*watched, watch_filter=watch_filter, recursive=recursive, step=STEP_MS,
                              debounce=DEBOUNCE_MS, stop_event=halt, raise_interrupt=False)
    try:
        # None once stopped (within STEP_MS of halt); the iterator closes its OS watch when dropped
        while (changes := await asyncio.to_thread(next, bursts, None)) is not None:
            log.info("config changed (%s); reloading", ", ".join(sorted({path for _, path in changes})[:3]))
            await changed()
    except (OSError, RuntimeError) as exc:
        # the watched directory went away or the OS refused the watch: SIGHUP still reloads
        log.warning("watching %s stopped: %s; reload with SIGHUP", ", ".join(watched), exc)
    finally:
        halt.ended.set()

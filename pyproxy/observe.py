"""Access log: one JSON line per request, with Envoy Gateway's default field names where they
apply. Lines are buffered and written once per event-loop iteration, so a slow reader of
stdout costs one write per batch, not one per request."""
from __future__ import annotations

import asyncio
import datetime
import json
import sys
from typing import IO


def format_time(epoch: float) -> str:
    """RFC 3339 with milliseconds in UTC, as Envoy's %START_TIME%."""
    dt = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


class AccessLog:
    """``target`` is ``-`` (stdout), ``off``, or a file path (appended)."""

    def __init__(self, target: str = "-") -> None:
        self.enabled = target != "off"
        self._stream: IO[str] | None = None
        self._owned = False
        if target == "-":
            self._stream = sys.stdout
        elif self.enabled:
            self._stream = open(target, "a", encoding="utf-8", buffering=1 << 16)
            self._owned = True
        self._pending: list[str] = []
        self._scheduled = False

    def write(self, entry: dict) -> None:
        self._pending.append(json.dumps(entry, separators=(",", ":")))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if not self._pending or self._stream is None:
            return
        lines, self._pending = self._pending, []
        try:
            self._stream.write("\n".join(lines) + "\n")
            self._stream.flush()
        except (BrokenPipeError, ValueError):
            # stdout went away (reader closed): stop logging rather than fail requests.
            self.enabled = False
            self._stream = None

    def close(self) -> None:
        self.flush()
        if self._owned and self._stream is not None:
            self._stream.close()
        self._stream = None

"""The access-log entries of an in-process proxy, read from its debug lines (``observe.describe``,
logged by ``pyproxy.server`` at DEBUG for every finished exchange): status, Envoy response
flags and response code details, without a log file."""
from __future__ import annotations

import logging
import re

import pytest

_LINE = re.compile(r"-> (\d{3})(?: route=\S+)?(?: upstream=\S+ \(\S+\))?(?: flags=(\S+))? details=(.*)$")


def capture(caplog: pytest.LogCaptureFixture) -> None:
    """Start recording the entries (call before the requests)."""
    caplog.set_level(logging.DEBUG, logger="pyproxy.server")


def entries(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str, str]]:
    """(status, flags, details) of every exchange finished so far, in order."""
    found = []
    for record in caplog.records:
        if record.name == "pyproxy.server":
            match = _LINE.search(record.getMessage())
            if match:
                found.append((int(match.group(1)), match.group(2) or "-", match.group(3)))
    return found

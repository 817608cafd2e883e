"""GEP-2257 durations (``1h``, ``500ms``, ``1h30m30s500ms``) as float seconds."""

from __future__ import annotations

import re

_DURATION = re.compile(r"(?:[0-9]{1,5}(?:h|m|s|ms)){1,4}")
_COMPONENT = re.compile(r"([0-9]{1,5})(ms|h|m|s)")
_MILLIS = {"h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}


def parse_duration(text: str) -> float:
    """Seconds in ``text``; ``ValueError`` unless it is a GEP-2257 duration.

    GEP-2257 is the regular expression ``^([0-9]{1,5}(h|m|s|ms)){1,4}$`` interpreted as Go's
    ``time.ParseDuration`` does, so components add up (``1s1s`` is two seconds). The sum is
    taken in whole milliseconds so that ``1h2m3s4ms`` is exactly 3723.004."""
    if not _DURATION.fullmatch(text):
        raise ValueError(f"{text!r} is not a duration: use 1 to 4 parts like 1h, 30m, 10s or 500ms (e.g. 1m30s)")
    millis = sum(int(value) * _MILLIS[unit] for value, unit in _COMPONENT.findall(text))
    return millis / 1000

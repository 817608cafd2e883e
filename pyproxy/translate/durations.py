"""Durations as float seconds: GEP-2257 (``1h``, ``500ms``, ``1h30m30s500ms``) and
Kubernetes ``metav1.Duration`` (``1.5s``)."""

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


_GO_COMPONENT = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_GO_SECONDS = {"h": (3600, 1), "m": (60, 1), "s": (1, 1), "ms": (1, 1000), "us": (1, 10**6), "µs": (1, 10**6),
               "μs": (1, 10**6), "ns": (1, 10**9)}  # (numerator, denominator)


def parse_go_duration(text: str) -> float:
    """Seconds in a Kubernetes ``metav1.Duration`` (Go's ``time.ParseDuration`` without a
    sign: ``1.5s``, ``300ms``, ``1h30m``, ``0``); ``ValueError`` otherwise. Summed exactly, so
    ``1.1s`` is 1.1."""
    from fractions import Fraction  # deferred: 0.4 MiB of RSS (fractions, decimal) without such a value

    parts = _GO_COMPONENT.findall(text)
    if text != "0" and (not parts or "".join(value + unit for value, unit in parts) != text):
        raise ValueError(f"{text!r} is not a duration: use parts like 1h, 30m, 1.5s or 500ms")
    return float(sum((Fraction(value) * Fraction(*_GO_SECONDS[unit]) for value, unit in parts), Fraction(0)))

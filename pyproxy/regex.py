"""RegularExpression matches: RE2, the dialect of Envoy (and so of Envoy Gateway).

RE2 runs in time linear in the text, so no pattern can make a request backtrack for seconds
(Python's ``re`` spent 11 s matching ``^(a+)+$`` against a 35-byte path). It has no
backreferences and no look-around (https://github.com/google/re2/wiki/Syntax).

config/ rejects a pattern RE2 cannot compile and dataplane/ compiles it for matching; both
use this module, so they cannot disagree about which patterns compile. It imports nothing from
pyproxy, so either room may depend on it.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType
from typing import Any


@functools.cache
def _re2() -> tuple[ModuleType, Any]:
    """The ``re2`` module and the options every pattern compiles with. Imported by the first
    pattern checked or compiled (at config load or compile time, never per request): a
    configuration without a RegularExpression never pays for it."""
    import re2  # deferred: 2.4 MiB of RSS after start and one request (bench config)

    options = re2.Options()
    options.log_errors = False  # RE2 would also print each compile error to stderr
    return re2, options


def problem(pattern: str) -> str | None:
    """Why RE2 cannot compile ``pattern`` (RE2's own words), or None when it can."""
    re2, options = _re2()
    try:
        re2.compile(pattern, options)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else ""
        return detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)
    return None


def full_matcher(pattern: str) -> Callable[[str], bool]:
    """A predicate: does ``pattern`` match the whole text.

    Text is matched character by character as ``re`` would: RE2 reads UTF-8, so the text is
    encoded to it first, and a latin-1-decoded path or header value (where each byte 0x80-0xff
    is one character, e.g. ``'\\xe9'``) is matched as those characters and never raises.
    Encoding here rather than passing ``str`` spares re2's per-call offset bookkeeping."""
    re2, options = _re2()
    full = re2.compile(pattern, options).fullmatch
    return lambda text: full(text.encode()) is not None

"""Policy fields to IR fields, one declaration each: ``Rule(path, target, convert)`` reads the
spec attribute at ``path`` and, when it is set, stores ``convert(value, where)`` as the IR
field ``target``. A field is not set when it is None or, unless ``keep_empty``, an empty list
or map (what an omitted list reads as). ``convert`` raises ``Invalid`` for a value the IR
cannot take; ``build`` collects every such problem (naming the field in YAML spelling) and
leaves the field out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..config.checks import yaml_fields
from .durations import parse_duration, parse_go_duration
from .problems import Invalid
from .sizes import parse_quantity

Convert = Callable[[Any, str], Any]


def same(value: Any, where: str) -> Any:
    return value


@dataclass(frozen=True, slots=True)
class Rule:
    path: tuple[str, ...]  # attribute names from the spec object down to the field
    target: str  # the IR field it sets
    convert: Convert = same
    keep_empty: bool = False  # an empty list is a value (e.g. no ALPN protocols), not "not set"


def build(spec: object, rules: Sequence[Rule], where: str, problems: list[str]) -> dict[str, Any]:
    """The IR fields ``rules`` take from ``spec`` (fields not set are left out); a problem per
    invalid value is appended to ``problems``."""
    fields: dict[str, Any] = {}
    for rule in rules:
        value, at = _walk(spec, rule.path, where)
        if value is None or (not rule.keep_empty and isinstance(value, tuple | dict) and not value):
            continue
        try:
            fields[rule.target] = rule.convert(value, at)
        except Invalid as exc:
            problems.append(exc.problem.message)
    return fields


def _walk(spec: object, path: tuple[str, ...], where: str) -> tuple[Any, str]:
    value: Any = spec
    for attr in path:
        if value is None:
            return None, where
        cls: type = type(value)
        names = {f.name: key for key, f in yaml_fields(cls).items()}
        where = f"{where}.{names[attr]}"
        value = getattr(value, attr)
    return value, where


def invalid(where: str, problem: str) -> Invalid:
    return Invalid("Invalid", f"{where}: {problem}")


# ------------------------------------------------------------------ converters


def duration(value: str, where: str) -> float:
    """A GEP-2257 duration, longer than 0s."""
    return _positive(parse_duration(value), value, where)


def duration_or_off(value: str, where: str) -> float | None:
    """A GEP-2257 duration; ``0s`` turns the timeout off (None)."""
    return parse_duration(value) or None


def go_duration(value: str, where: str) -> float:
    """A metav1.Duration (``1.5s``), longer than 0s."""
    return _positive(parse_go_duration(value), value, where)


def _positive(seconds: float, text: str, where: str) -> float:
    if seconds <= 0:
        raise invalid(where, f"{text} must be longer than 0s")
    return seconds


def count(value: int, where: str) -> int:
    """A uint32, as Envoy Gateway's counters and thresholds are."""
    return in_range(value, where, 0, 2**32 - 1)


def at_least_one(value: int, where: str) -> int:
    return in_range(value, where, 1, 2**32 - 1)


def percent(value: int, where: str) -> int:
    return in_range(value, where, 0, 100)


def port(value: int, where: str) -> int:
    return in_range(value, where, 1, 65535)


def in_range(value: int, where: str, low: int, high: int) -> int:
    if not low <= value <= high:
        raise invalid(where, f"{value} is not between {low} and {high}")
    return value


def size(value: str, where: str) -> int:
    """A resource.Quantity in bytes, at least 1."""
    try:
        parsed = parse_quantity(value)
    except ValueError as exc:
        raise invalid(where, str(exc)) from exc
    if parsed < 1:
        raise invalid(where, f"{value} must be at least 1 byte")
    return parsed


def status_codes(low: int, high: int) -> Convert:
    """A list of HTTP status codes between ``low`` and ``high``, duplicates removed."""

    def convert(codes: tuple[int, ...], where: str) -> tuple[int, ...]:
        for k, code in enumerate(codes):
            in_range(code, f"{where}[{k}]", low, high)
        return tuple(dict.fromkeys(codes))

    return convert

"""How translate/ carries a semantic mistake until it becomes a status condition."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Problem:
    reason: str  # a Gateway API condition reason, e.g. BackendNotFound
    message: str  # names the field in YAML spelling and says what to do


def kind_label(kind: str, group: str) -> str:
    """``Service (group core)``: the core API group is the empty string in YAML."""
    return f"{kind} (group {group or 'core'})"


class Invalid(Exception):
    """Raised inside translate/ when the part being translated (a route rule, a listener) must
    be dropped; caught by the code that owns that part and turned into a condition. It never
    escapes ``translate()``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.problem = Problem(reason, message)


def attempt(translate: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T | Problem:
    """``translate(*args, **kwargs)``, or the Problem of the ``Invalid`` it raised."""
    try:
        return translate(*args, **kwargs)
    except Invalid as exc:
        return exc.problem

"""Status conditions: what translate/ says about each object, as Gateway API status would."""
from __future__ import annotations

from dataclasses import dataclass

from .. import ir


@dataclass(frozen=True, slots=True)
class Condition:
    type: str  # Accepted, ResolvedRefs, PartiallyInvalid, Programmed, Conflicted ...
    status: bool
    reason: str
    message: str = ""
    parent: str | None = None  # for route conditions: the parentRef, "gateway/<ns>/<name>[/<section>]"


@dataclass(frozen=True, slots=True)
class ObjectStatus:
    kind: str
    namespace: str
    name: str
    location: str  # "file: document N, line L"
    conditions: tuple[Condition, ...]

    @property
    def ok(self) -> bool:
        """False when any condition reports an error (a False condition other than a benign one)."""
        return all(c.status or c.type == "PartiallyInvalid" for c in self.conditions if c.type != "Conflicted") and not any(
            c.type == "Conflicted" and c.status for c in self.conditions
        )


@dataclass(frozen=True, slots=True)
class Result:
    config: ir.Config
    statuses: tuple[ObjectStatus, ...]

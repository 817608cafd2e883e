"""Status conditions: what translate/ says about each object, as Gateway API status would.

Plain data beside ir.py rather than in translate/: the serving process gets them pickled from
the loader process (loader.py) and must not import translate/ to read them."""

from __future__ import annotations

from dataclasses import dataclass

from . import ir

# Condition types whose *True* status reports a problem ("abnormal-true" polarity in the
# Kubernetes API conventions). Every other type (Accepted, ResolvedRefs, Programmed) reports a
# problem when False.
ABNORMAL_TRUE = frozenset({"Conflicted", "PartiallyInvalid"})


@dataclass(frozen=True, slots=True)
class Condition:
    type: str  # Accepted, ResolvedRefs, PartiallyInvalid, Programmed, Conflicted ...
    status: bool
    reason: str
    message: str = ""
    # Whom the condition is about, when an object reports per parent or per part: a route's
    # parentRef ("gateway/<ns>/<name>[/<section>][:<port>]" or "implicit"), a Gateway
    # listener's name, a BackendTLSPolicy target ("backend/<ns>/<name>[/<section>]").
    parent: str | None = None

    @property
    def is_error(self) -> bool:
        """True when the condition reports that something was rejected, dropped or unresolved.

        A condition may be healthy and still carry a message (e.g. an Accepted=True that notes
        an ignored field, a listener's Programmed=True with its attachedRoutes); that is not
        an error."""
        return self.status if self.type in ABNORMAL_TRUE else not self.status

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "type": self.type,
            "status": "True" if self.status else "False",
            "reason": self.reason,
        }
        if self.message:
            out["message"] = self.message
        if self.parent is not None:
            out["parent"] = self.parent
        return out


@dataclass(frozen=True, slots=True)
class ObjectStatus:
    kind: str
    namespace: str
    name: str
    location: str  # "file: document N, line L"
    conditions: tuple[Condition, ...]

    @property
    def ok(self) -> bool:
        """No condition reports an error (see ``Condition.is_error``): every part of the object
        was accepted, resolved and programmed as written."""
        return not any(c.is_error for c in self.conditions)

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "location": self.location,
            "conditions": [c.to_dict() for c in self.conditions],
        }


@dataclass(frozen=True, slots=True)
class Result:
    config: ir.Config
    statuses: tuple[ObjectStatus, ...]  # sorted by kind, namespace, name

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.statuses)

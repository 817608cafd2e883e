"""ReferenceGrant: may an object in one namespace refer to an object in another?"""

from __future__ import annotations

from dataclasses import dataclass

from .index import Index
from .problems import kind_label


@dataclass(frozen=True, slots=True)
class Reference:
    """A cross-namespace reference: who refers (group, kind, namespace) to what."""

    from_group: str
    from_kind: str
    from_namespace: str
    to_group: str
    to_kind: str
    to_namespace: str
    to_name: str

    def describe(self) -> str:
        return (
            f"a ReferenceGrant in namespace {self.to_namespace} from {kind_label(self.from_kind, self.from_group)} "
            f"in namespace {self.from_namespace} to {kind_label(self.to_kind, self.to_group)} {self.to_name}"
        )


def permitted(index: Index, ref: Reference) -> bool:
    """Same-namespace references are always allowed; others need a ReferenceGrant in the
    target namespace whose ``from`` and ``to`` both match (a ``to`` without name allows every
    object of that kind)."""
    if ref.from_namespace == ref.to_namespace:
        return True
    for grant in index.grants.values():
        if grant.metadata.namespace != ref.to_namespace:
            continue
        from_ok = any(
            f.group == ref.from_group and f.kind == ref.from_kind and f.namespace == ref.from_namespace
            for f in grant.spec.from_
        )
        to_ok = any(
            t.group == ref.to_group and t.kind == ref.to_kind and t.name in (None, ref.to_name) for t in grant.spec.to
        )
        if from_ok and to_ok:
            return True
    return False

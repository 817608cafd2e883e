"""The status of one config resource (the conditions are ``pyproxy.status``'s plain data)."""

from __future__ import annotations

from ..status import Condition, ObjectStatus, Result

__all__ = ["Condition", "ObjectStatus", "Result", "object_status"]


def object_status(kind: str, resource: object, conditions: list[Condition] | tuple[Condition, ...]) -> ObjectStatus:
    """The status of ``resource`` (any config resource: it has ``metadata`` and ``location``)."""
    meta, location = resource.metadata, resource.location  # type: ignore[attr-defined]
    return ObjectStatus(kind, meta.namespace, meta.name, str(location), tuple(conditions))

"""Precedence: which route match is tried first, which of two conflicting objects wins."""

from __future__ import annotations

from datetime import UTC, datetime

from .. import ir
from ..config import resources as res

# Envoy Gateway's order of path match kinds (internal/gatewayapi/sort.go); the Gateway API
# leaves RegularExpression's place to the implementation.
_PATH_KIND_RANK = {"Exact": 0, "RegularExpression": 1, "PathPrefix": 2}


def age_key(meta: res.Metadata) -> tuple[tuple[int, float], str]:
    """Sorts older objects first, then by ``namespace/name``.

    A missing (or unparsable) ``creationTimestamp`` compares equal to other missing ones and
    after every present one: files usually carry none, and then the name decides."""
    return (_timestamp_key(meta.creation_timestamp), f"{meta.namespace}/{meta.name}")


def _timestamp_key(text: str | None) -> tuple[int, float]:
    if text is None:
        return (1, 0.0)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return (1, 0.0)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (0, moment.timestamp())


def match_key(match: ir.Match) -> tuple[int, int, int, int, int]:
    """Gateway API match precedence (most specific first): Exact, then RegularExpression, then
    PathPrefix; longer path value; has a method; more header matches; more query matches."""
    return (
        _PATH_KIND_RANK[match.path.kind],
        -len(match.path.value),
        0 if match.method else 1,
        -len(match.headers),
        -len(match.query_params),
    )


def route_match_key(match: ir.Match, route: res.HTTPRoute, rule: int, index: int) -> tuple[object, ...]:
    """The full sort key of one (rule, match) of ``route`` within a virtual host: the match's
    specificity, then the older route, then ``namespace/name``, then rule and match order."""
    return (*match_key(match), *age_key(route.metadata), rule, index)

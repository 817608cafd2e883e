"""Precedence: which route match is tried first, which of two conflicting objects wins."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


def route_match_key(match: ir.Match, route: res.RouteResource, rule: int, index: int) -> tuple[object, ...]:
    """The full HTTPRoute sort key of one (rule, match) of ``route`` within a virtual host: the
    match's specificity, then the older route, then ``namespace/name``, then rule and match
    order."""
    return (*match_key(match), *age_key(route.metadata), rule, index)


@dataclass(frozen=True, slots=True)
class Ranked:
    """One route (a rule's match) with its place in a virtual host: ``key`` orders it among
    the routes of its own ``kind``, each kind by its own precedence rules; ``across`` is its
    HTTPRoute key, which orders it against routes of the other kind (``in_order``)."""

    kind: str
    key: tuple[object, ...]
    across: tuple[object, ...]
    route: ir.Route
    rule: int  # the index of the rule it comes from in its route's spec.rules


def http_ranked(route: ir.Route, source: res.HTTPRoute, rule: int, index: int) -> Ranked:
    key = route_match_key(route.match, source, rule, index)
    return Ranked("HTTPRoute", key, key, route, rule)


def grpc_ranked(
    route: ir.Route, method: res.GRPCMethodMatch | None, source: res.GRPCRoute, rule: int, index: int
) -> Ranked:
    """GRPCRoute precedence: more characters in the service, then in the method (a pattern
    counts as written, an omitted part as 0), then more header matches; then the older route,
    ``namespace/name``, rule and match order. (Hostnames come first, but they choose the
    virtual host, not the order within one.)"""
    service_chars = len(method.service or "") if method else 0
    method_chars = len(method.method or "") if method else 0
    key = (-service_chars, -method_chars, -len(route.match.headers), *age_key(source.metadata), rule, index)
    return Ranked("GRPCRoute", key, route_match_key(route.match, source, rule, index), route, rule)


def in_order(entries: Sequence[Ranked]) -> tuple[ir.Route, ...]:
    """The routes of a virtual host, first match first.

    HTTPRoutes and GRPCRoutes sharing a hostname share the virtual host, as in Envoy Gateway,
    which sorts both kinds together by HTTPRoute precedence of the paths a GRPCRoute's matches
    become. Here each kind keeps its own order and the two are merged by that HTTPRoute
    precedence (``across``); on a tie the HTTPRoute goes first."""
    http = sorted((e for e in entries if e.kind == "HTTPRoute"), key=lambda e: e.key)
    grpc = sorted((e for e in entries if e.kind != "HTTPRoute"), key=lambda e: e.key)
    merged: list[ir.Route] = []
    i = j = 0
    while i < len(http) and j < len(grpc):
        if grpc[j].across < http[i].across:
            merged.append(grpc[j].route)
            j += 1
        else:
            merged.append(http[i].route)
            i += 1
    merged += [e.route for e in http[i:]] + [e.route for e in grpc[j:]]
    return tuple(merged)

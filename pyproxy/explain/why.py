"""Why a route did not take a request: the first part of its match that fails (path, method,
header, query parameter, in that order), or, when it matches too, what made the winner go
first (the component of the translator's precedence key where the two differ)."""
from __future__ import annotations

from typing import cast
from urllib.parse import parse_qsl

from .. import ir
from ..dataplane.framing import RequestHead
from ..dataplane.router import path_matcher, value_matcher
from ..translate.precedence import Ranked, match_key
from .sources import RouteId, Sources

_SHOWN = 40  # characters of a request's header or parameter value quoted in a reason
# how many leading components of an HTTPRoute key are the match's specificity (then age, name, rule, match)
_SPECIFIC = len(match_key(ir.Match(ir.PathMatch("Exact", "/"))))


def _quote(value: str) -> str:
    return repr(value if len(value) <= _SHOWN else value[:_SHOWN] + "…")


def match_failure(match: ir.Match, head: RequestHead) -> str | None:
    """The first component of ``match`` the request fails, described; None if none fails."""
    path = match.path
    if not path_matcher(path)(head.path):
        verb = {"Exact": "is not", "PathPrefix": "is not under", "RegularExpression": "does not match"}[path.kind]
        return f"path: {head.path} {verb} {path.value} ({path.kind})"
    if match.method is not None and head.method != match.method:
        return f"method: wants {match.method}, the request is {head.method}"
    for header in match.headers:
        name = header.name.encode("latin-1")
        value = next((v.decode("latin-1") for n, v in head.headers if n == name), None)
        if value is None:
            return f"header {header.name}: missing (wants {header.kind} {header.value!r})"
        if not value_matcher(header.kind, header.value)(value):
            return f"header {header.name}: {_quote(value)} does not match {header.kind} {header.value!r}"
    if match.query_params:
        params: dict[str, str] = {}
        for key, val in parse_qsl(head.query, keep_blank_values=True):
            params.setdefault(key, val)
        for query in match.query_params:
            got = params.get(query.name)
            if got is None:
                return f"query param {query.name}: missing (wants {query.kind} {query.value!r})"
            if not value_matcher(query.kind, query.value)(got):
                return f"query param {query.name}: {_quote(got)} does not match {query.kind} {query.value!r}"
    return None


def _more(what: str, a: int, b: int) -> str:
    return f"more {what} ({a} vs {b})"


def _http_reason(index: int, winner: ir.Match, loser: ir.Match) -> str:
    """The reason for the first differing component of ``precedence.match_key``."""
    if index == 0:
        return f"{winner.path.kind} beats {loser.path.kind}"
    if index == 1:
        longer = "longer prefix" if winner.path.kind == "PathPrefix" else "longer path"
        return f"{longer} ({winner.path.value} vs {loser.path.value})"
    if index == 2:
        return f"has a method match ({winner.method})"
    if index == 3:
        return _more("header matches", len(winner.headers), len(loser.headers))
    return _more("query param matches", len(winner.query_params), len(loser.query_params))


def _grpc_reason(index: int, winner: Ranked, loser: Ranked) -> str:
    """The reason for the first differing component of a GRPCRoute key: service and method
    characters (negated in the key), then header matches."""
    if index in (0, 1):
        what = "service" if index == 0 else "method"
        mine, theirs = cast(int, winner.key[index]), cast(int, loser.key[index])
        return f"longer {what} name ({-mine} vs {-theirs} characters)"
    return _more("header matches", len(winner.route.match.headers), len(loser.route.match.headers))


def _tie_reason(offset: int, winner: RouteId, loser: RouteId, sources: Sources) -> str:
    """Past the match's specificity the key is: age, ``namespace/name``, rule, match."""
    if offset == 0:
        mine, theirs = sources.created(winner), sources.created(loser)
        if theirs is None:
            return f"older creationTimestamp ({mine}; the other has none)"
        return f"older creationTimestamp ({mine} vs {theirs})"
    if offset == 1:
        return f"name order ({winner.namespace}/{winner.name} before {loser.namespace}/{loser.name})"
    if offset == 2:
        return f"earlier rule (rule {winner.rule} vs {loser.rule})"
    return f"earlier match (match {winner.match} vs {loser.match})"


def _first_difference(a: tuple[object, ...], b: tuple[object, ...]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), None)


def precedence_reason(winner: tuple[RouteId, ir.Route], loser: tuple[RouteId, ir.Route], sources: Sources) -> str:
    """Why ``winner`` is tried before ``loser`` (both match the request)."""
    (wid, wroute), (lid, lroute) = winner, loser
    wrank, lrank = sources.ranked(wid, wroute), sources.ranked(lid, lroute)
    if wrank is None or lrank is None:
        return "earlier in precedence order"
    if wrank.kind != lrank.kind:
        return _across_reason(wrank, lrank, wid, lid, sources)
    index = _first_difference(wrank.key, lrank.key)
    if index is None:
        return "earlier in precedence order"
    if wrank.kind == "HTTPRoute":
        specific = _SPECIFIC
        if index < specific:
            return _http_reason(index, wroute.match, lroute.match)
    else:
        specific = 3  # service, method, header matches
        if index < specific:
            return _grpc_reason(index, wrank, lrank)
    return _tie_reason(index - specific, wid, lid, sources)


def _across_reason(wrank: Ranked, lrank: Ranked, wid: RouteId, lid: RouteId, sources: Sources) -> str:
    """An HTTPRoute and a GRPCRoute in one virtual host: merged by HTTPRoute precedence of the
    paths the GRPCRoute's matches became, the HTTPRoute first on a tie (``in_order``)."""
    index = _first_difference(wrank.across, lrank.across)
    if index is None:
        return "an HTTPRoute goes before a GRPCRoute of the same precedence"
    if wrank.across > lrank.across:
        return "earlier in precedence order (each route kind keeps its own order when the two are merged)"
    if index < _SPECIFIC:
        return _http_reason(index, wrank.route.match, lrank.route.match)
    return _tie_reason(index - _SPECIFIC, wid, lid, sources)

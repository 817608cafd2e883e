"""HTTPRoute matches → ``ir.Match``, with the syntax checks the Gateway API CRDs make (header
matches serve GRPCRoute too).

Header names arrive checked (config/ refuses a name that is not an RFC 9110 token), and so do
RegularExpression values (config/ refuses a pattern RE2 cannot compile)."""

from __future__ import annotations

import re

from .. import ir
from ..config import resources as res
from .problems import Invalid

_PATH_CHARS = re.compile(r"(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|%[0-9a-fA-F]{2})+")
_PATH_FORBIDDEN = ("//", "/./", "/../", "%2f", "%2F", "#")
_PATH_FORBIDDEN_ENDINGS = ("/..", "/.")
DEFAULT_PATH = res.HTTPPathMatch()


def path_problem(value: str) -> str | None:
    """Why ``value`` is not a valid Exact/PathPrefix path, or None."""
    if not value.startswith("/"):
        return "must start with '/'"
    for bad in _PATH_FORBIDDEN:
        if bad in value:
            return f"must not contain {bad!r}"
    if value.endswith(_PATH_FORBIDDEN_ENDINGS):
        return "must not end with '/..' or '/.'"
    if not _PATH_CHARS.fullmatch(value):
        return "contains characters that are not allowed in a path (percent-encode them)"
    return None


def translate_match(spec: res.HTTPRouteMatch, where: str) -> ir.Match:
    return ir.Match(
        path=_path(spec.path or DEFAULT_PATH, f"{where}.path"),
        headers=header_matches(spec.headers),
        query_params=_query_params(spec.query_params, f"{where}.queryParams"),
        method=spec.method,
    )


def _path(spec: res.HTTPPathMatch, where: str) -> ir.PathMatch:
    if spec.type == "RegularExpression":
        return ir.PathMatch("RegularExpression", spec.value)
    if problem := path_problem(spec.value):
        raise Invalid("UnsupportedValue", f"{where}.value {spec.value!r} {problem}")
    if spec.type == "PathPrefix":
        return ir.PathMatch("PathPrefix", normalise_prefix(spec.value))
    return ir.PathMatch("Exact", spec.value)


def normalise_prefix(value: str) -> str:
    """A trailing ``/`` does not change a PathPrefix match (``/abc/`` = ``/abc``), except ``/``."""
    return value.rstrip("/") or "/"


def header_matches(specs: tuple[res.HTTPHeaderMatch, ...]) -> tuple[ir.HeaderMatch, ...]:
    """The first entry for a header name counts; later ones with an equivalent name are ignored."""
    matches: dict[str, ir.HeaderMatch] = {}
    for spec in specs:
        name = spec.name.lower()
        matches.setdefault(name, ir.HeaderMatch(name, spec.type, spec.value))
    return tuple(matches.values())


def _query_params(specs: tuple[res.HTTPQueryParamMatch, ...], where: str) -> tuple[ir.QueryMatch, ...]:
    """Names are exact (case-sensitive); the first entry for a name counts."""
    matches: dict[str, ir.QueryMatch] = {}
    for k, spec in enumerate(specs):
        if not spec.name:
            raise Invalid("UnsupportedValue", f"{where}[{k}].name must not be empty")
        matches.setdefault(spec.name, ir.QueryMatch(spec.name, spec.type, spec.value))
    return tuple(matches.values())

"""What the CRDs' validation refuses across the fields of one object, refused as early as a
malformed duration: RE2 patterns, GRPCRoute method names, Envoy Gateway's discriminated
unions (``UNION``) and policies' target references.

``problem(value)`` returns (YAML name of the field at fault, or "" for the object itself;
problem), or None when the object is fine. Also here: the YAML name of each declared field.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable
from typing import Any

from pyproxy import regex
from pyproxy.config.envoygateway import BackendTrafficPolicySpec, ClientTrafficPolicySpec
from pyproxy.config.resources import GRPCMethodMatch, HTTPHeaderMatch, HTTPPathMatch, HTTPQueryParamMatch

# Exact GRPCRoute names, as the CRD validates them: protobuf full names and identifiers
_GRPC_SERVICE = re.compile(r"\.?[A-Za-z_][A-Za-z_0-9]*(?:\.[A-Za-z_][A-Za-z_0-9]*)*")
_GRPC_METHOD = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")

Found = tuple[str, str] | None


@functools.cache
def yaml_fields(cls: type) -> dict[str, dataclasses.Field]:
    """YAML name -> field, in declaration order (which is also the order of suggestions)."""
    return {f.metadata.get("yaml", _camel(f.name)): f for f in dataclasses.fields(cls)}


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.capitalize() for part in rest)


def problem(value: Any) -> Found:
    check = _CHECKS.get(type(value))
    found = check(value) if check is not None else None
    if found is None and hasattr(value, "UNION"):
        found = _union(value)
    return found


def _regex_value(match: HTTPPathMatch | HTTPHeaderMatch | HTTPQueryParamMatch) -> Found:
    """A RegularExpression ``value`` must be a pattern RE2 (the matching engine) compiles."""
    if match.type != "RegularExpression":
        return None
    return _re2_problem("value", match.value)


def _re2_problem(key: str, pattern: str) -> Found:
    found = regex.problem(pattern)
    if found is None:
        return None
    return key, f"invalid RE2 regular expression {pattern!r}: {found}"


def _grpc_method(match: GRPCMethodMatch) -> Found:
    """One or both of service and method; Exact ones are protobuf names (so never hold a
    ``/``), RegularExpression ones compile with RE2."""
    if not (match.service or match.method):
        return "", "one or both of service and method are required"
    names = (("service", match.service, _GRPC_SERVICE, "dot-separated names such as helloworld.Greeter"),
             ("method", match.method, _GRPC_METHOD, "a name such as SayHello"))
    for key, value, syntax, example in names:
        if value is None:
            continue
        if match.type == "RegularExpression":
            found = _re2_problem(key, value)
            if found is not None:
                return found
        elif not syntax.fullmatch(value):
            return key, (f"{value!r} is not a gRPC {key} name ({example}: letters, digits and '_', not starting "
                         "with a digit); use type RegularExpression for a pattern")
    return None


def _one_target(spec: BackendTrafficPolicySpec | ClientTrafficPolicySpec) -> Found:
    """Envoy Gateway's CRD: either targetRef (deprecated) or targetRefs, not both, not none."""
    if spec.target_ref is not None and spec.target_refs:
        return "targetRef", "set either targetRefs or targetRef (deprecated), not both"
    if spec.target_ref is None and not spec.target_refs:
        return "targetRefs", "required field missing (or the deprecated targetRef)"
    return None


def _union(value: Any) -> Found:
    """``type`` names the member field that must be set (``UNION``: type value -> YAML name);
    the members of other types must not be."""
    members: dict[str, str] = value.UNION
    cls: type = type(value)
    fields = yaml_fields(cls)
    own = members.get(value.type)
    if own is not None and getattr(value, fields[own].name) is None:
        return own, f"required when type is {value.type}"
    for kind, key in members.items():
        if kind != value.type and getattr(value, fields[key].name) is not None:
            return key, f"{key} can only be set when type is {kind}"
    return None


_CHECKS: dict[type, Callable[[Any], Found]] = {
    HTTPPathMatch: _regex_value,
    HTTPHeaderMatch: _regex_value,
    HTTPQueryParamMatch: _regex_value,
    GRPCMethodMatch: _grpc_method,
    BackendTrafficPolicySpec: _one_target,
    ClientTrafficPolicySpec: _one_target,
}

"""The CORS filter → ``ir.Cors``, with the checks the Gateway API CRDs make.

Header names are lower-cased (browsers compare them case-insensitively); origins and methods
are kept as written, because both are compared case-sensitively."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from .. import ir
from ..config import resources as res
from .hostnames import hostname_problem
from .problems import Invalid

WILDCARD = "*"
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
_ORIGIN = re.compile(r"(?:http|https)://(?P<host>[^:/?#]+)(?::(?P<port>[0-9]{1,5}))?")


def translate_cors(spec: res.HTTPCORSFilter, where: str) -> ir.Cors:
    """Unset ``allowCredentials`` is false; ``maxAge`` (default 5) must be at least 1."""
    if spec.max_age < 1:
        raise Invalid("UnsupportedValue", f"{where}.maxAge {spec.max_age} must be at least 1 (seconds)")
    return ir.Cors(
        allow_origins=_entries(spec.allow_origins, f"{where}.allowOrigins", _origin, lone_wildcard=True),
        allow_methods=_entries(spec.allow_methods, f"{where}.allowMethods", _method, lone_wildcard=True),
        allow_headers=_entries(spec.allow_headers, f"{where}.allowHeaders", _header_name),
        expose_headers=_entries(spec.expose_headers, f"{where}.exposeHeaders", _header_name),
        allow_credentials=bool(spec.allow_credentials),
        max_age=spec.max_age,
    )


def _entries(
    values: tuple[str, ...], where: str, check: Callable[[str, str], str], *, lone_wildcard: bool = False
) -> tuple[str, ...]:
    """Each value checked once (the lists are sets in the CRDs); ``*`` alone where the CRD says so."""
    if lone_wildcard and WILDCARD in values and len(values) > 1:
        raise Invalid("UnsupportedValue", f"{where}: '*' allows everything and cannot be listed with other entries")
    checked: list[str] = []
    for k, value in enumerate(values):
        entry = check(value, f"{where}[{k}]")
        if entry in checked:
            raise Invalid("UnsupportedValue", f"{where}[{k}]: {value!r} is listed twice")
        checked.append(entry)
    return tuple(checked)


def _origin(value: str, where: str) -> str:
    """``*``, or ``http(s)://host[:port]``; the host is an IPv4 address or a lower-case
    hostname that may start with ``*.`` (any number of labels)."""
    if value == WILDCARD:
        return value
    found = _ORIGIN.fullmatch(value)
    if found is None or not _origin_host_ok(found["host"]) or not 0 < int(found["port"] or 80) < 65536:
        raise Invalid(
            "UnsupportedValue",
            f"{where}: {value!r} is not an origin; use '*' or http(s)://host[:port] with a lower-case host "
            "(it may start with '*.') and a port from 1 to 65535",
        )
    return value


def _origin_host_ok(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return hostname_problem(host) is None
    return True


def _header_name(value: str, where: str) -> str:
    """A header name (a token or ``*``, checked by config/), lower-cased."""
    return value.lower()


def _method(value: str, where: str) -> str:
    if value != WILDCARD and value not in METHODS:
        raise Invalid("UnsupportedValue", f"{where}: {value!r} is not a method; use '*' or one of {', '.join(METHODS)}")
    return value

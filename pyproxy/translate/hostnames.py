"""Hostname rules of the Gateway API: validation and listener/route intersection."""

from __future__ import annotations

import ipaddress
import re

_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_PRECISE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_MAX_LENGTH = 253


def is_wildcard(hostname: str) -> bool:
    return hostname.startswith("*.")


def hostname_problem(hostname: str, *, wildcard: bool = True) -> str | None:
    """Why ``hostname`` is not a valid Gateway API hostname, or None when it is.

    Valid: lower-case RFC 1123 names, optionally (``wildcard``) with a leading ``*.`` label;
    IP addresses are not hostnames."""
    name = hostname[2:] if wildcard and is_wildcard(hostname) else hostname
    if len(hostname) > _MAX_LENGTH:
        return f"hostname {hostname!r} is longer than {_MAX_LENGTH} characters"
    if _is_ip(name):
        return f"hostname {hostname!r} is an IP address; IP addresses are not allowed"
    if not _PRECISE.fullmatch(name):
        form = "an optional leading '*.' label, then " if wildcard else ""
        return (
            f"hostname {hostname!r} is not valid: expected {form}lower-case labels of letters, "
            "digits and '-' separated by dots (RFC 1123)"
        )
    return None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def matches_wildcard(hostname: str, wildcard: str) -> bool:
    """``*.example.com`` matches ``a.example.com`` and ``a.b.example.com`` (and narrower
    wildcards such as ``*.b.example.com``), never ``example.com`` itself."""
    suffix = wildcard[1:]
    return hostname.endswith(suffix) and len(hostname) > len(suffix)


def intersect(listener: str | None, route: str) -> str | None:
    """The set of hosts both ``listener`` and ``route`` match, as one hostname; None if empty.

    With two wildcards the narrower one is the intersection (``*.example.com`` ∩
    ``*.foo.example.com`` = ``*.foo.example.com``)."""
    if listener is None or listener == route:
        return route
    if is_wildcard(listener) and matches_wildcard(route, listener):
        return route
    if is_wildcard(route) and matches_wildcard(listener, route):
        return listener
    return None


def effective_hostnames(listener: str | None, route_hostnames: tuple[str, ...]) -> tuple[str, ...]:
    """The virtual host names a route gets on a listener, sorted; ``()`` when they do not
    intersect. ``*`` stands for "any host" (neither side names one)."""
    if not route_hostnames:
        return (listener or "*",)
    found = {host for host in (intersect(listener, r) for r in route_hostnames) if host is not None}
    return tuple(sorted(found))

"""Request matching: listener by Host on a shared port, virtual host by Host, then the first
route (already in precedence order) whose match accepts the request.

Everything here is built once per snapshot by ``compile.py`` and read per request without
allocation beyond what matching needs. Header names and values are ``bytes`` as the parser
delivers them (names lower-case); paths are ``str`` (latin-1 decoded, so bytes round-trip).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, TypeVar
from urllib.parse import parse_qsl

from .. import ir, regex

T = TypeVar("T")


def normalize_host(host: bytes) -> str:
    """The Host header as matched: lower-case, port removed, trailing dot removed."""
    text = host.decode("latin-1").lower()
    if text.startswith("["):
        end = text.find("]")
        return text[: end + 1] if end > 0 else text
    colon = text.rfind(":")
    if colon >= 0:
        text = text[:colon]
    return text[:-1] if text.endswith(".") else text


class HostIndex(Generic[T]):
    """Maps a hostname to the most specific entry: exact name, then the longest wildcard
    suffix (``*.example.com`` matches one or more labels before ``.example.com``), then the
    catch-all ``*`` (or ``None`` hostname)."""

    __slots__ = ("exact", "wildcards", "catch_all")

    def __init__(self, entries: Iterable[tuple[str | None, T]]) -> None:
        self.exact: dict[str, T] = {}
        self.wildcards: dict[str, T] = {}  # ".example.com" -> entry
        self.catch_all: T | None = None
        for hostname, entry in entries:
            if hostname is None or hostname == "*":
                self.catch_all = entry
            elif hostname.startswith("*."):
                self.wildcards[hostname[1:].lower()] = entry
            else:
                self.exact[hostname.lower()] = entry

    def find(self, host: str) -> T | None:
        entry = self.exact.get(host)
        if entry is not None:
            return entry
        if self.wildcards:
            dot = host.find(".")
            while dot > 0:
                entry = self.wildcards.get(host[dot:])
                if entry is not None:
                    return entry
                dot = host.find(".", dot + 1)
        return self.catch_all


def path_matcher(match: ir.PathMatch) -> Callable[[str], bool]:
    """A predicate over the request path (without query)."""
    value = match.value
    if match.kind == "Exact":
        return value.__eq__
    if match.kind == "RegularExpression":
        return regex.full_matcher(value)
    prefix = value.rstrip("/")
    if not prefix:
        return lambda path: True
    with_slash = prefix + "/"

    def prefix_match(path: str) -> bool:
        return path == prefix or path.startswith(with_slash)

    return prefix_match


def value_matcher(kind: str, value: str) -> Callable[[str], bool]:
    if kind == "RegularExpression":
        return regex.full_matcher(value)
    return value.__eq__


class Matcher:
    """A compiled ``ir.Match``. Header values are compared as latin-1 text, so any byte
    sequence a client sends round-trips; the first value of a repeated header is used, the
    first value of a repeated query parameter too (as the spec recommends)."""

    __slots__ = ("path", "method", "headers", "query")

    def __init__(self, match: ir.Match) -> None:
        self.path = path_matcher(match.path)
        self.method = match.method
        self.headers = tuple((h.name.encode("latin-1"), value_matcher(h.kind, h.value)) for h in match.headers)
        self.query = tuple((q.name, value_matcher(q.kind, q.value)) for q in match.query_params)

    def __call__(self, method: str, path: str, query: str, headers: list[tuple[bytes, bytes]]) -> bool:
        if self.method is not None and method != self.method:
            return False
        if not self.path(path):
            return False
        for name, accept in self.headers:
            for hname, hvalue in headers:
                if hname == name:
                    if not accept(hvalue.decode("latin-1")):
                        return False
                    break
            else:
                return False
        if self.query:
            params: dict[str, str] = {}
            for key, val in parse_qsl(query, keep_blank_values=True):
                params.setdefault(key, val)
            for qname, accept in self.query:
                got = params.get(qname)
                if got is None or not accept(got):
                    return False
        return True


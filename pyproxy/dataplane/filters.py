"""HTTPRoute filters as pure functions over header lists and paths.

Headers are ``list[tuple[bytes, bytes]]`` with lower-case names, as the protocols hold them.
"""
from __future__ import annotations

from .. import ir


class HeaderOps:
    """A compiled ``ir.HeaderMutation``: remove, then set, then add."""

    __slots__ = ("remove", "set", "add")

    def __init__(self, mutation: ir.HeaderMutation) -> None:
        self.set = tuple((n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in mutation.set)
        self.add = tuple((n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in mutation.add)
        removed = frozenset(n.lower().encode("latin-1") for n in mutation.remove)
        self.remove = removed | frozenset(n for n, _ in self.set)

    def apply(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """Return the mutated list (a new list when anything is removed)."""
        if self.remove:
            headers = [h for h in headers if h[0] not in self.remove]
        headers.extend(self.set)
        for name, value in self.add:
            for i, (hname, hvalue) in enumerate(headers):
                if hname == name:
                    headers[i] = (hname, hvalue + b"," + value)
                    break
            else:
                headers.append((name, value))
        return headers


def compile_mutation(mutation: ir.HeaderMutation | None) -> HeaderOps | None:
    if mutation is None or not (mutation.set or mutation.add or mutation.remove):
        return None
    return HeaderOps(mutation)


def replace_prefix(path: str, prefix: str, replacement: str) -> str:
    """Replace the element-wise ``prefix`` of ``path`` (``/foo`` in ``/foo/bar``) with
    ``replacement``: ``/foo/bar`` with ``/xyz`` gives ``/xyz/bar``, ``/foo`` with ``/`` gives
    ``/``. Never produces ``//`` at the seam."""
    prefix = prefix.rstrip("/")
    rest = path[len(prefix):]
    head = replacement.rstrip("/")
    if not rest and replacement.endswith("/") and head:
        return head + "/"
    out = head + rest
    return out if out.startswith("/") else "/" + out


def rewrite_path(path: str, modifier: ir.PathModifier) -> str:
    if modifier.kind == "ReplaceFullPath":
        return modifier.value
    return replace_prefix(path, modifier.prefix or "/", modifier.value)


DEFAULT_PORTS = {"http": 80, "https": 443}


def redirect_location(redirect: ir.Redirect, scheme: str, host: str, listener_port: int, path: str, query: str) -> str:
    """The Location of a RequestRedirect (Gateway API rules): the scheme, host, port and path
    of the request unless the filter replaces them; with no port in the filter, a changed
    scheme implies its default port, otherwise the listener's port is kept; the scheme's
    default port is never written."""
    out_scheme = redirect.scheme or scheme
    out_host = redirect.hostname or host
    if redirect.port is not None:
        port = redirect.port
    elif redirect.scheme is not None:
        port = DEFAULT_PORTS[out_scheme]
    else:
        port = listener_port
    if ":" in out_host and not out_host.startswith("["):
        out_host = "[" + out_host + "]"
    authority = out_host if DEFAULT_PORTS.get(out_scheme) == port else f"{out_host}:{port}"
    out_path = rewrite_path(path, redirect.path) if redirect.path is not None else path
    location = f"{out_scheme}://{authority}{out_path}"
    return location + "?" + query if query else location

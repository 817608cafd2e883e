"""The listening sockets of a runtime, bound from the difference between two snapshots.

A socket is keyed by its listener group's (address, port) and lives as long as some snapshot
has that group with the same scheme: a reload that changes routes, hostnames,
certificates or TLS options keeps the socket (HTTPS sockets use ``tls.switching_context``, so
each handshake takes the certificates of the snapshot serving then, and the socket's front
context is given the new versions, ciphers and ALPN: ``tls.configure_server``). A group that appears is bound; one
that disappears stops accepting, and its connections are drained by the runtime; one whose
scheme flips between HTTP and HTTPS is closed and bound again.

Binding comes first and is all-or-nothing: when a new socket cannot be bound, the ones bound
for the same change are closed again and ``ListenError`` is raised, so a failed reload
leaves the serving sockets exactly as they were.
"""
from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from .dataplane import tls
from .dataplane.compile import PortGroup, Snapshot
from .startup import bind_host, listen_error

Key = tuple[str, int]
ProtocolFactory = Callable[[Key, str], asyncio.Protocol]


@dataclass(frozen=True)
class Bound:
    """One listening socket."""

    scheme: str
    server: asyncio.base_events.Server
    port: int  # the bound port (differs from the configured one only when that is 0)


@dataclass(frozen=True)
class Change:
    """What ``Listeners.apply`` did: the sockets it bound, and the groups no longer served
    (their connections are to be drained)."""

    bound: tuple[Key, ...]
    removed: tuple[Key, ...]


class Listeners:
    def __init__(self, factory: ProtocolFactory, reuse_port: bool = False) -> None:
        self._factory = factory
        self._reuse_port = reuse_port
        self._bound: dict[Key, Bound] = {}
        self._contexts: dict[Key, ssl.SSLContext] = {}  # what each HTTPS socket's handshakes switch to
        self._fronts: dict[Key, tuple[ssl.SSLContext, tls.ServerOptions]] = {}  # each HTTPS socket's own

    @property
    def ports(self) -> dict[Key, int]:
        return {key: bound.port for key, bound in self._bound.items()}

    async def apply(self, snapshot: Snapshot, purpose: Callable[[Key], str]) -> Change:
        """Make the sockets match ``snapshot``'s listener groups. ``purpose(key)`` names what
        a socket is for, in the error raised when it cannot be bound."""
        groups = snapshot.groups
        flipped = [key for key, bound in self._bound.items()
                   if key in groups and _scheme(groups[key]) != bound.scheme]
        fresh: dict[Key, Bound] = {}
        try:
            for key, group in groups.items():
                if key not in self._bound:
                    fresh[key] = await self._bind(key, group, purpose)
        except BaseException:
            for key in fresh:
                fresh[key].server.close()
                self._fronts.pop(key, None)
            raise
        removed = [key for key in self._bound if key not in groups]
        for key in (*removed, *flipped):
            self._bound.pop(key).server.close()
            self._fronts.pop(key, None)
        for key in flipped:
            fresh[key] = await self._bind(key, groups[key], purpose)
        self._bound.update(fresh)
        self._contexts = {key: group.ssl_context for key, group in groups.items() if group.ssl_context is not None}
        for key, (front, options) in list(self._fronts.items()):
            wanted = groups[key].tls_options if key in groups else None
            if wanted is not None and wanted != options:
                # the versions and ciphers are fixed when a connection is created, from the front
                tls.configure_server(front, wanted)
                self._fronts[key] = (front, wanted)
        return Change(tuple(fresh), tuple(removed) + tuple(flipped))

    async def _bind(self, key: Key, group: PortGroup, purpose: Callable[[Key], str]) -> Bound:
        scheme = _scheme(group)
        front = None
        options = group.tls_options or tls.ServerOptions()
        if group.ssl_context is not None:
            first = group.ssl_context

            def current() -> ssl.SSLContext:
                # a handshake still arriving on a socket a reload removed keeps the last context
                return self._contexts.get(key, first)

            front = tls.switching_context(current, options)
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(lambda: self._factory(key, scheme),
                                              host=bind_host(group.address),  # type: ignore[arg-type]  # bytes: see bind_host
                                              port=group.port, ssl=front, reuse_address=True,
                                              reuse_port=self._reuse_port or None, backlog=1024)
        except OSError as exc:
            raise listen_error(group.address, group.port, purpose(key), exc) from exc
        if front is not None:
            self._fronts[key] = (front, options)
        return Bound(scheme, server, server.sockets[0].getsockname()[1])

    def close(self) -> None:
        """Stop accepting on every socket (connections already accepted go on)."""
        for bound in self._bound.values():
            bound.server.close()

    async def wait_closed(self, timeout: float) -> None:
        for bound in self._bound.values():
            try:
                await asyncio.wait_for(bound.server.wait_closed(), timeout)
            except TimeoutError:
                pass
        self._bound.clear()


def _scheme(group: PortGroup) -> str:
    return "https" if group.ssl_context is not None else "http"


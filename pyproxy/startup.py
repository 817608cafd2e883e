"""What pyproxy says when it starts: the one-line summary of what it serves, and the message of
an address it cannot bind (what the address was for, and the flag or field that sets it)."""
from __future__ import annotations

import os
import socket
from collections.abc import Sequence

from . import ir

WORKER_ENV = "PYPROXY_WORKER"  # set in the environment of a --workers process (supervisor.py)


def worker_pipes() -> tuple[int, int] | None:
    """In a worker: (report fd, lifeline fd), from the environment; None elsewhere. Here, not
    in supervisor.py, so that a serving process does not import the supervisor's aiohttp
    client (about 14 MiB of RSS with --admin off)."""
    value = os.environ.get(WORKER_ENV)
    if not value:
        return None
    report, lifeline = value.split(",")
    return int(report), int(lifeline)
DEFAULT_LISTEN = ("127.0.0.1", 8080)  # the implicit listener's address without --listen
IMPLICIT = "the implicit listener (--listen)"
ADMIN = "the admin interface (--admin)"
GATEWAY_HINT = "its port comes from the Gateway's spec.listeners[].port, its address from --bind-address"


class ListenError(Exception):
    """An address that cannot be bound; the message names what it was for."""


def bind_host(address: str) -> str | list[bytes]:
    """``create_server``'s host for ``address``: an ASCII one as bytes in a list, which uvloop
    hands to getaddrinfo as it is. A str it encodes with the idna codec first, and importing
    that codec (unicodedata, stringprep) is 0.9 MiB of a serving process's RSS. asyncio's own
    loop takes bytes hosts too; typeshed lists only str, hence the callers' type: ignore."""
    return [address.encode("ascii")] if address.isascii() else address


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_error(host: str, port: int, purpose: str, exc: OSError) -> ListenError:
    """``cannot listen on HOST:PORT for PURPOSE: REASON`` (the reason without the address
    asyncio repeats in its own message)."""
    if isinstance(exc, socket.gaierror):
        reason = str(exc.strerror)
    elif exc.errno:
        reason = os.strerror(exc.errno)
    else:
        reason = str(exc)
    return ListenError(f"cannot listen on {format_address(host, port)} for {purpose}: {reason[:1].lower()}{reason[1:]}")


def listener_label(name: str) -> str:
    """``gateway/<ns>/<name>/<listener>`` → ``Gateway <ns>/<name> listener <listener>``."""
    parts = name.split("/")
    if len(parts) == 4 and parts[0] == "gateway":
        return f"Gateway {parts[1]}/{parts[2]} listener {parts[3]}"
    return "the implicit listener"


def group_purpose(listeners: Sequence[ir.Listener]) -> str:
    """What a listening socket serves, for a bind error: the implicit listener with its flag,
    or the Gateway listeners with where their address and port come from."""
    if all(not lst.name.startswith("gateway/") for lst in listeners):
        return IMPLICIT
    return ", ".join(listener_label(lst.name) for lst in listeners) + f" ({GATEWAY_HINT})"


def summary(files: Sequence[str], config: ir.Config, ports: dict[tuple[str, int], int],
            admin: tuple[str, int] | None) -> str:
    """One line: files, counts, each bound address with its listeners and hostnames, the admin."""
    routes = {route.name.split("/rule/")[0] for lst in config.listeners for vh in lst.virtual_hosts
              for route in vh.routes}
    backends = {wb.destination.name for lst in config.listeners for vh in lst.virtual_hosts for route in vh.routes
                if isinstance(route.action, ir.Forward) for wb in route.action.backends if wb.destination is not None}
    by_port: dict[tuple[str, int], list[ir.Listener]] = {}
    for lst in config.listeners:
        by_port.setdefault((lst.address, lst.port), []).append(lst)
    served = []
    for key, listeners in by_port.items():
        scheme = "https" if listeners[0].protocol == "HTTPS" else "http"
        hosts = sorted({vh.hostname for lst in listeners for vh in lst.virtual_hosts})
        names = ", ".join(lst.name for lst in listeners)
        served.append(f"{scheme}://{format_address(key[0], ports.get(key, key[1]))} serves {names} "
                      f"(hosts: {', '.join(hosts) or 'none'})")
    where = f"http://{format_address(*admin)}" if admin is not None else "off"
    return (f"loaded {', '.join(files) or 'no files'}: {_count(len(routes), 'route')}, "
            f"{_count(len(backends), 'backend')}, {_count(len(config.listeners), 'listener')}; "
            f"{'; '.join(served) or 'nothing to serve'}; admin {where}")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"

"""A listener's ``ClientSettings`` (Envoy Gateway's ClientTrafficPolicy) as the downstream
connections read them: resolved once per snapshot by ``compile.py`` into a ``ClientPolicy``
of plain attributes (a ``Limits`` with the listener's values in place, small integer codes
for the actions), so that a connection looks nothing up per request or per header.

Which listener's settings a connection takes is decided once, when it is accepted (see
``PortGroup.policy_for``): on an HTTPS port, the listener the TLS server name selects, as
Envoy's filter chain match does; on an HTTP port, the first listener, as Envoy Gateway's one
HTTP connection manager for all HTTP listeners of a port does. The request head is read with
these settings before the Host picks a listener for routing, so the head rules (underscores,
header size, path normalisation) cannot follow the Host.

A timeout of 0 in the IR means none (Envoy's 0: disabled); ``None`` means the ``Limits``
value.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import math
from dataclasses import dataclass

from .. import ir
from .limits import DEFAULT as DEFAULT_LIMITS
from .limits import Limits

# headers_with_underscores
ALLOW, REJECT, DROP = 0, 1, 2
_UNDERSCORES = {"Allow": ALLOW, "RejectRequest": REJECT, "DropHeader": DROP}

# escaped_slashes (%2F, %5C in a path)
KEEP, REJECT_PATH, UNESCAPE, REDIRECT = 0, 1, 2, 3
_ESCAPED = {"KeepUnchanged": KEEP, "RejectRequest": REJECT_PATH, "UnescapeAndForward": UNESCAPE,
            "UnescapeAndRedirect": REDIRECT}


@dataclass(frozen=True, slots=True)
class HeadRules:
    """How a request head is read: what a header name with ``_`` gets, and how the path is
    normalised (``framing.validate``, ``http.normalize_path``)."""

    underscores: int = REJECT
    escaped_slashes: int = REDIRECT
    merge_slashes: bool = True


@dataclass(frozen=True, slots=True)
class ClientPolicy:
    """One listener's client settings, ready for a connection.

    ``limits``: the runtime's ``Limits`` with the listener's header and idle timeouts, header
    size and buffer limit in place (an infinite timeout where the listener disabled one).
    ``request_timeout``: the whole request must be received within it (0: none).
    ``generate_id``/``preserve_id``: Envoy's ``generate_request_id`` and
    ``preserve_external_request_id``. ``trusted_hops``: Envoy's ``xff_num_trusted_hops``."""

    limits: Limits
    rules: HeadRules
    request_timeout: float
    connection_limit: int | None
    generate_id: bool
    preserve_id: bool
    trusted_hops: int

    @property
    def shortest_timeout(self) -> float:
        """The shortest deadline this policy arms (the sweeper runs at least 4 times within it)."""
        limits = self.limits
        return min(limits.header_timeout, limits.idle_timeout, self.request_timeout or math.inf)


def _timeout(value: float | None, default: float) -> float:
    if value is None:
        return default
    return value if value > 0 else math.inf


def resolve(settings: ir.ClientSettings, limits: Limits = DEFAULT_LIMITS) -> ClientPolicy:
    """The policy of ``settings`` over the runtime's ``limits``."""
    own = dataclasses.replace(
        limits,
        header_timeout=_timeout(settings.request_headers_timeout, limits.header_timeout),
        idle_timeout=_timeout(settings.idle_timeout, limits.idle_timeout),
        max_header_bytes=settings.max_request_header_bytes or limits.max_header_bytes,
        buffer_limit=settings.buffer_limit or limits.buffer_limit,
    )
    mode = settings.request_id
    return ClientPolicy(
        limits=own if own != limits else limits,
        rules=HeadRules(_UNDERSCORES[settings.headers_with_underscores], _ESCAPED[settings.escaped_slashes],
                        settings.merge_slashes),
        request_timeout=settings.request_timeout or 0.0,
        connection_limit=settings.connection_limit,
        generate_id=mode in ("Generate", "PreserveOrGenerate"),
        preserve_id=mode in ("Preserve", "PreserveOrGenerate"),
        trusted_hops=settings.xff_trusted_hops,
    )


DEFAULT = resolve(ir.ClientSettings())


def trusted_client(forwarded_for: list[bytes], hops: int) -> str | None:
    """Envoy's trusted client address with ``use_remote_address`` and ``xff_num_trusted_hops``
    = ``hops`` (> 0): the ``hops``-th address from the right of the ``x-forwarded-for`` the
    client sent (before the proxy appends its peer), when that entry is an IP address; else
    None (the peer is the client)."""
    entries = b",".join(forwarded_for).split(b",")
    if len(entries) < hops:
        return None
    text = entries[-hops].strip().decode("latin-1")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None

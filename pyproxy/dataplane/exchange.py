"""One request and its answer on a downstream connection: the record both sides update and
the access log reads. Its two states (``req``, ``resp``) move only through the tables of
``states.py``; the connection that drives exchanges lives in ``server.py``, forwarding in
``forward.py``."""
from __future__ import annotations

import os
import random
import time
from typing import TYPE_CHECKING

from ..observe import format_time
from .framing import RequestHead
from .states import RESPONSE, Ev, InvalidTransition, Req, Resp

if TYPE_CHECKING:
    from ..errors import ProxyError
    from .compile import CompiledBackend, CompiledRoute
    from .filters import HeaderOps
    from .forward import Forwarder

_ids = random.Random(os.urandom(32))
_VERSION_MASK = ~(0xF << 76) & ~(0xC << 60)  # a version 4, variant 1 UUID: these bits are fixed
_VERSION_4 = (0x4 << 76) | (0x8 << 60)


def request_id() -> str:
    """A random (version 4) UUID for ``x-request-id``. Not ``uuid.uuid4()``: that reads the
    OS entropy source on every call (a syscall per request); a request id needs uniqueness,
    not secrecy, so a generator seeded once from it is enough."""
    h = (_ids.getrandbits(128) & _VERSION_MASK | _VERSION_4).to_bytes(16, "big").hex()  # ("%032x" %: 0.6 us slower)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_NO_HEAD = RequestHead()  # what a protocol error before any head is logged with
_NO_HEAD.method = "-"
_NO_HEAD.version = "1.1"


class Exchange:
    __slots__ = (
        "head", "req", "resp", "start", "start_mono", "route", "backend", "forwarder", "status", "flags", "details",
        "bytes_received", "bytes_sent", "upstream_addr", "request_id", "chunked_out", "body", "body_size",
        "cors_headers", "response_filters", "client_address",
    )

    def __init__(self, head: RequestHead | None) -> None:
        self.head = head if head is not None else _NO_HEAD
        self.req = Req.HEAD
        self.resp = Resp.QUEUED
        self.start = time.time()
        self.start_mono = time.monotonic()
        self.route: CompiledRoute | None = None
        self.backend: CompiledBackend | None = None
        self.forwarder: Forwarder | None = None
        self.status = 0
        self.flags = "-"
        self.details = ""
        self.bytes_received = 0
        self.bytes_sent = 0
        self.upstream_addr: str | None = None
        self.request_id = ""
        self.chunked_out = False
        self.body: list[bytes] = []  # request body received before forwarding took it
        self.body_size = 0
        self.cors_headers: list[tuple[bytes, bytes]] | None = None  # set by the CORS filter
        self.response_filters: tuple[HeaderOps, ...] = ()
        # the trusted client address when x-forwarded-for named it (the listener's
        # xff_trusted_hops), else None: the peer is the client
        self.client_address: str | None = None

    def advance(self, event: Ev) -> None:
        """Move the response side (the request side is moved by the connection alone)."""
        try:
            self.resp = RESPONSE[self.resp][event]
        except KeyError:
            raise InvalidTransition(f"{event.name} in state {self.resp.name}") from None

    def lost(self) -> None:
        """The client went away before the response ended (Envoy's ``DC`` when nothing of
        the response had left yet)."""
        if not self.response_started:
            self.flags = "DC"
            self.details = "downstream_remote_disconnect"
        self.advance(Ev.LOST)

    def cut(self, error: ProxyError) -> None:
        """``error`` ended the exchange after its response began: the response is cut short
        (a reset, not an answer), and logged with the error's flags and details."""
        self.flags = error.flags
        self.details = error.details or self.details
        self.advance(Ev.RESET)

    @property
    def response_started(self) -> bool:
        return self.resp is Resp.SENDING

    def __repr__(self) -> str:
        return f"<Exchange {self.head.method} {self.head.path!r} req={self.req.name} resp={self.resp.name}>"


def _with_port_0(address: str) -> str:
    return f"[{address}]:0" if ":" in address else address + ":0"


def access_entry(ex: Exchange, local: str, peer: str, duration_ms: float) -> dict:
    """The access log line of a finished exchange (Envoy Gateway's default field names, and
    Envoy's ``response_code_details``). Only the request head is read: trailers never
    reach it. ``downstream_remote_address`` is the trusted client address, as Envoy's
    ``%DOWNSTREAM_REMOTE_ADDRESS%`` (with port 0 when it came from ``x-forwarded-for``)."""
    head = ex.head
    route = ex.route
    dest = ex.backend.destination if ex.backend is not None else None
    user_agent = forwarded = None
    for name, value in head.headers:
        if name == b"user-agent":
            if user_agent is None:
                user_agent = value.decode("latin-1")
        elif name == b"x-forwarded-for":
            forwarded = value.decode("latin-1") if forwarded is None else forwarded + ", " + value.decode("latin-1")
    return {
        "start_time": format_time(ex.start),
        "method": head.method,
        "x-envoy-origin-path": head.target.decode("latin-1") or None,
        "protocol": "HTTP/" + head.version,
        "response_code": ex.status,
        "response_flags": ex.flags,
        "response_code_details": ex.details or None,
        "bytes_received": ex.bytes_received,
        "bytes_sent": ex.bytes_sent,
        "duration": int(duration_ms),
        "x-forwarded-for": forwarded,
        "user-agent": user_agent,
        "x-request-id": ex.request_id or None,
        ":authority": head.host_header.decode("latin-1") or None,
        "upstream_host": ex.upstream_addr,
        "upstream_cluster": dest.name if dest is not None else None,
        "downstream_local_address": local,
        "downstream_remote_address": peer if ex.client_address is None else _with_port_0(ex.client_address),
        "route_name": route.name if route is not None else None,
    }

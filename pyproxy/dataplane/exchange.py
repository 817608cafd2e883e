"""One request and its response on a downstream connection, and the pure steps around it:
validating the request (framing, target, Host) and writing the request head sent upstream.
The connection that drives exchanges lives in ``server.py``."""
from __future__ import annotations

import asyncio
import os
import random
import time
from typing import TYPE_CHECKING

from .. import errors
from ..errors import BadRequest, ProxyError
from ..observe import format_time
from . import http
from .compile import CompiledBackend, CompiledRoute
from .filters import rewrite_path
from .router import normalize_host
from .upstream import UpstreamConnection

if TYPE_CHECKING:
    from .server import HttpProtocol


REPLAY_LIMIT = 64 * 1024  # request body kept for retries and mirrors (Envoy buffers 32-64 KiB)

_ids = random.Random(os.urandom(32))


def request_id() -> str:
    """A random (version 4) UUID for ``x-request-id``. Not ``uuid.uuid4()``: that reads the
    OS entropy source on every call (a syscall per request); a request id needs uniqueness,
    not secrecy, so a generator seeded once from it is enough."""
    bits = _ids.getrandbits(128) & ~(0xF << 76) & ~(0xC << 60) | (0x4 << 76) | (0x8 << 60)
    h = "%032x" % bits
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Exchange:
    """One request and its response; the ``ResponseSink`` of its upstream connection."""

    __slots__ = (
        "proto", "method", "target", "path", "query", "version", "keep_alive", "headers", "host", "host_header",
        "chunked_in", "has_body", "expect_continue", "start", "start_mono", "request_complete", "started",
        "response_started", "finished", "body", "body_size", "body_seen", "conn", "reused", "route", "backend",
        "status", "flags", "bytes_received", "bytes_sent", "chunked_out", "close_after", "timer", "task",
        "upstream_head", "upstream_addr", "request_id", "retried", "response_filters", "head_request",
        "retries_left", "replay", "replay_size", "try_timer", "discarding", "mirrors", "extra_response_headers",
    )

    def __init__(self, proto: "HttpProtocol") -> None:
        self.proto = proto
        self.headers: list[tuple[bytes, bytes]] = []
        self.start = time.time()
        self.start_mono = time.monotonic()
        self.method = ""
        self.target = b""
        self.path = ""
        self.query = ""
        self.version = "1.1"
        self.keep_alive = True
        self.host = ""
        self.host_header = b""
        self.chunked_in = False
        self.has_body = False  # the request has body bytes to read (chunked, or Content-Length > 0)
        self.expect_continue = False
        self.request_complete = False
        self.started = False
        self.response_started = False
        self.finished = False
        self.body: list[bytes] = []  # body bytes received before the upstream connection is ready
        self.body_size = 0
        self.body_seen = False
        self.conn: UpstreamConnection | None = None
        self.reused = False
        self.route: CompiledRoute | None = None
        self.backend: CompiledBackend | None = None
        self.status = 0
        self.flags = "-"
        self.bytes_received = 0
        self.bytes_sent = 0
        self.chunked_out = False
        self.close_after = False
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task | None = None
        self.upstream_head = b""
        self.upstream_addr: str | None = None
        self.request_id = ""
        self.retried = False
        self.response_filters: tuple = ()
        self.head_request = False
        self.retries_left = 0  # retries the route's policy still allows
        self.replay: list[bytes] | None = None  # the whole body so far, kept for retries and mirrors
        self.replay_size = 0
        self.try_timer: asyncio.TimerHandle | None = None  # per-attempt deadline, or the retry backoff
        self.discarding = False  # the current upstream answer is dropped (it is being retried)
        self.mirrors: list | None = None  # mirror destinations this request is copied to
        self.extra_response_headers: list[tuple[bytes, bytes]] | None = None  # set by the proxy (CORS)

    # ------------------------------------------------------------------ body kept for replay

    def start_replay(self) -> None:
        self.replay = list(self.body)
        self.replay_size = self.body_size
        if self.replay_size > REPLAY_LIMIT:
            self.replay = None

    def keep_for_replay(self, chunk: bytes) -> None:
        self.replay_size += len(chunk)
        if self.replay_size > REPLAY_LIMIT:
            self.replay = None  # too large to keep: no retry, no mirror
        else:
            self.replay.append(chunk)

    def framed_replay(self) -> list[bytes] | None:
        """The kept body framed as sent upstream (re-chunked when the request is chunked)."""
        if self.replay is None:
            return None
        if not self.chunked_in:
            return list(self.replay)
        return [b"%x\r\n%s\r\n" % (len(c), c) for c in self.replay] + [b"0\r\n\r\n"]

    # ------------------------------------------------------------------ ResponseSink

    def response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.proto.write_response_head(self, status, reason, headers)

    def response_body(self, data: bytes) -> None:
        self.proto.write_response_body(self, data)

    def response_end(self, reusable: bool) -> None:
        self.proto.end_response(self, reusable)

    def upstream_failed(self, error: ProxyError) -> None:
        self.proto.upstream_failed(self, error)

    def flush(self) -> None:
        self.proto.flush()

    def upstream_pause(self) -> None:
        self.proto.upstream_write_paused(True)

    def upstream_resume(self) -> None:
        self.proto.upstream_write_paused(False)


def validate(ex: Exchange, url: bytes) -> None:
    """Strict framing and target rules (hardening.md §2): anything ambiguous raises (a 400
    unless the error says otherwise) and the connection closes. Fills in the exchange's
    host, path, query and framing."""
    if ex.version not in ("1.1", "1.0"):
        raise BadRequest("unsupported HTTP version")
    if ex.method == "CONNECT":
        raise BadRequest("CONNECT is not supported")
    hosts = []
    content_lengths = []
    transfer_encodings = []
    for name, value in ex.headers:
        if name == b"host":
            hosts.append(value)
        elif name == b"content-length":
            content_lengths.append(value)
        elif name == b"transfer-encoding":
            transfer_encodings.append(value)
        elif name == b"expect":
            if value.strip().lower() == b"100-continue":
                ex.expect_continue = ex.version == "1.1"
        if b"_" in name:
            raise BadRequest("header name with underscore")
    if transfer_encodings:
        if content_lengths or ex.version != "1.1" or len(transfer_encodings) > 1:
            raise BadRequest("ambiguous framing")
        if transfer_encodings[0].strip().lower() != b"chunked":
            raise errors.NotImplementedCoding("unsupported transfer-encoding")
        ex.chunked_in = ex.has_body = True
    elif content_lengths:
        first = content_lengths[0]
        if not first.isdigit() or any(v != first for v in content_lengths):
            raise BadRequest("invalid content-length")
        ex.has_body = first.strip(b"0") != b""
    target = url
    if target[:1] != b"/":
        lowered = target[:8].lower()
        if lowered.startswith(b"http://") or lowered.startswith(b"https://"):
            authority, target = http.parse_absolute(target)
            if hosts and hosts[0].lower() != authority.lower():
                raise BadRequest("absolute-form authority differs from Host")
            hosts = hosts or [authority]
        elif not (target == b"*" and ex.method == "OPTIONS"):
            raise BadRequest("invalid request-target")
    if len(hosts) > 1:
        raise BadRequest("duplicate Host")
    if hosts:
        if not hosts[0] or not http.valid_host(hosts[0]):
            raise BadRequest("invalid Host")
        ex.host_header = hosts[0]
        ex.host = normalize_host(hosts[0])
    elif ex.version == "1.1":
        raise BadRequest("missing Host")
    ex.target = target
    path, ex.query = http.split_target(target)
    ex.path = http.normalize_path(path) if path.startswith("/") else path


def upstream_head(ex: Exchange, route: CompiledRoute, backend: CompiledBackend, peer: bytes, scheme: bytes) -> bytes:
    """The request head sent upstream: hop-by-hop, framing and proxy-owned headers dropped
    (also every header the client named in ``Connection``), proxy headers added after that so
    a client cannot nominate them away, then the route's and the backend's filters, then our
    own framing."""
    tokens = http.connection_tokens(ex.headers)
    owned = http.REQUEST_OWNED
    headers = [h for h in ex.headers if h[0] not in owned and h[0] not in tokens]
    host = ex.host_header
    path = ex.path
    rewrite = route.url_rewrite
    if rewrite is not None:
        if rewrite.hostname is not None:
            _append(headers, b"x-forwarded-host", host)
            host = rewrite.hostname.encode("latin-1")
        if rewrite.path is not None:
            path = rewrite_path(path, rewrite.path)
    _append(headers, b"x-forwarded-for", peer)
    headers.append((b"x-forwarded-proto", scheme))
    ex.request_id = request_id()
    headers.append((b"x-request-id", ex.request_id.encode()))
    if route.request_headers is not None:
        headers = route.request_headers.apply(headers)
    if backend.request_headers is not None:
        headers = backend.request_headers.apply(headers)
    if ex.chunked_in:
        headers.append((b"transfer-encoding", b"chunked"))
    else:
        for name, value in ex.headers:
            if name == b"content-length":
                headers.append((name, value))
                break
    target = path + "?" + ex.query if ex.query else path
    lines = [b"%s %s HTTP/1.1\r\nhost: %s" % (ex.method.encode(), target.encode("latin-1"), host)]
    lines.extend(map(b": ".join, headers))
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


def response_head(ex: Exchange, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The response head sent downstream: the upstream's hop-by-hop and framing headers
    dropped (and any it named in ``Connection``), the response filters applied, then our own
    framing: its Content-Length, else chunked for HTTP/1.1 or close-delimited for 1.0."""
    tokens = http.connection_tokens(headers)
    content_length = None
    out = []
    for h in headers:
        name = h[0]
        if name == b"content-length":
            content_length = h[1]
        elif name not in http.HOP_BY_HOP and name not in tokens:
            out.append(h)
    for ops in ex.response_filters:
        out = ops.apply(out)
    if ex.extra_response_headers:
        out = replace_headers(out, ex.extra_response_headers)
    if content_length is not None:
        if status != 204:
            out.append((b"content-length", content_length))
    elif not (ex.head_request or status in (204, 304)):
        if ex.version == "1.1":
            ex.chunked_out = True
            out.append((b"transfer-encoding", b"chunked"))
        else:
            ex.close_after = True
    if not ex.request_complete and ex.has_body:
        ex.close_after = True  # the rest of the request body will not be read
    if ex.close_after or not ex.keep_alive:
        out.append((b"connection", b"close"))
    elif ex.version == "1.0":
        out.append((b"connection", b"keep-alive"))
    lines = [b"HTTP/1.1 %d %s" % (status, reason or http.REASONS.get(status, b""))]
    lines.extend(map(b": ".join, out))
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


def access_entry(ex: Exchange, local: str, peer: str) -> dict:
    """The access log line of a finished exchange (Envoy Gateway's default field names)."""
    route = ex.route
    dest = ex.backend.destination if ex.backend is not None else None
    user_agent = forwarded = None
    for name, value in ex.headers:
        if name == b"user-agent":
            user_agent = value.decode("latin-1")
        elif name == b"x-forwarded-for":
            forwarded = value.decode("latin-1")
    return {
        "start_time": format_time(ex.start),
        "method": ex.method,
        "x-envoy-origin-path": ex.target.decode("latin-1"),
        "protocol": "HTTP/" + ex.version,
        "response_code": ex.status,
        "response_flags": ex.flags,
        "bytes_received": ex.bytes_received,
        "bytes_sent": ex.bytes_sent,
        "duration": int((time.monotonic() - ex.start_mono) * 1000),
        "x-forwarded-for": forwarded,
        "user-agent": user_agent,
        "x-request-id": ex.request_id or None,
        ":authority": ex.host_header.decode("latin-1") or None,
        "upstream_host": ex.upstream_addr,
        "upstream_cluster": dest.name if dest is not None else None,
        "downstream_local_address": local,
        "downstream_remote_address": peer,
        "route_name": route.name if route is not None else None,
    }


def replace_headers(headers: list[tuple[bytes, bytes]], new: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` with every header named in ``new`` replaced by ``new``'s values (CORS
    headers are the proxy's: an upstream's own ``access-control-*`` values would conflict)."""
    names = {name for name, _ in new}
    return [h for h in headers if h[0] not in names] + new


def _append(headers: list[tuple[bytes, bytes]], name: bytes, value: bytes) -> None:
    """Append ``value`` to the first header ``name`` (comma-joined), or add it."""
    for i, (hname, hvalue) in enumerate(headers):
        if hname == name:
            headers[i] = (hname, hvalue + b", " + value)
            return
    headers.append((name, value))

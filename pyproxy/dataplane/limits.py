"""Every limit and timeout of the data plane, in one immutable value passed down from the
runtime (``runtime.Settings.limits``) to the connections, the pool and the mirrors.

Defaults follow Envoy Gateway where it sets one, nginx where it does not (each field says
which). Tests shorten them by passing their own ``Limits``; nothing reads a module constant.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    # ---- downstream deadlines (seconds)
    header_timeout: float = 10.0
    """A request head must arrive whole within this, counted from its first byte or, for a
    new connection, from the accept: ClientTrafficPolicy's ``requestHeadersReceivedTimeout``,
    whose default the traffic-policy issue sets at 10 s (Envoy Gateway sets none; nginx
    ``client_header_timeout`` is 60 s)."""
    idle_timeout: float = 60.0
    """A keep-alive connection with no request in progress is closed after this."""
    body_timeout: float = 60.0
    """Longest silence of the client while a request body is being received (nginx
    ``client_body_timeout``); 408, or a reset once the response started. Time the proxy
    itself paused reading (backpressure) does not count."""
    stream_idle_timeout: float = 300.0
    """Longest time an exchange may make no progress in either direction (no byte read from
    or written to the client or the upstream): Envoy's ``stream_idle_timeout``. 408 before
    the response started, else the connection is reset."""
    linger_timeout: float = 2.0
    """After the last response of a closing connection, how long unread client input is
    still read and discarded so the close does not become a reset (nginx lingering close)."""

    # ---- downstream sizes
    max_headers: int = 100
    """Header lines in a request head (Envoy ``max_headers_count``) → 431."""
    max_header_bytes: int = 60 * 1024
    """Request line plus header section (Envoy ``max_request_headers_kb``) → 431 (414 for a
    request-target alone over it)."""
    max_chunk_extension: int = 4096
    """Bytes of chunk extensions (``;name=value`` after a chunk size) in one chunk → 400."""
    max_pipelined: int = 16
    """Requests parsed ahead of the one being answered (pipelining); past it the connection
    stops reading until the queue drains."""
    buffer_limit: int = 64 * 1024
    """Request body bytes held per connection while no upstream connection can take them
    (before it is attached, or for a pipelined request); reading pauses above it."""
    replay_limit: int = 64 * 1024
    """Request body kept for retries and mirrors; a larger request is sent once and not
    mirrored (Envoy buffers retries up to its 64 KiB-ish per-request buffer)."""
    coalesce_limit: int = 64 * 1024
    """Response body pieces up to this size leave in the same send as the response head."""

    # ---- upstream
    pool_idle_timeout: float = 60.0
    """Idle upstream keep-alive connections are closed after this."""
    pool_max_per_key: int = 1024
    """Connections (busy, idle and being opened) to one upstream address with one TLS
    setting: Envoy's default circuit breaker ``max_connections``."""
    pool_max_pending: int = 1024
    """Requests waiting for a connection to a key that is at ``pool_max_per_key``, each for
    at most its destination's connect timeout; over it 503 with flag ``UO`` (Envoy's
    ``max_pending_requests``)."""
    upstream_max_streams: int = 100
    """Requests carried at once by one HTTP/2 upstream connection (fewer when the server's
    MAX_CONCURRENT_STREAMS says so); past it another connection is opened, within
    ``pool_max_per_key``."""
    max_mirrors: int = 1024
    """Mirrored requests in flight at once; a mirror over it is dropped (the primary request
    never is), as is one whose upstream is at ``pool_max_per_key``."""
    mirror_timeout: float = 15.0
    """A mirrored request whose response has not ended within this (connect included) is
    abandoned and its connection aborted."""
    upstream_read_buffer: int = 120 * 1024
    """Bytes read from an upstream connection at a time (one reused buffer per connection)."""
    max_response_headers: int = 100
    max_response_header_bytes: int = 60 * 1024
    """An upstream response head over either limit is a protocol error (502)."""


DEFAULT = Limits()

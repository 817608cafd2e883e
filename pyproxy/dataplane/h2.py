"""The downstream HTTP/2 connection (h2 for framing, HPACK and flow control).

Each stream is an exchange: its head is validated as an HTTP/1.1 head would be (the
pseudo-headers become the request line and Host), routed by ``decide`` and forwarded by a
``Forwarder`` talking to the stream through the ``Downstream`` methods of ``Stream``, so
forwarding does not know which protocol the client spoke. Upstream connections speak what the
destination does (HTTP/1.1 unless it is HTTP/2), whichever protocol the client spoke.

Flow control both ways:
- request bodies: the bytes of a DATA frame are acknowledged (the window reopened) once the
  forwarder has taken them; while it holds the request back (``pause_request``) they are not,
  so a client cannot make the proxy buffer more than the stream window;
- response bodies: what does not fit the client's windows waits in the stream, and once that
  passes ``buffer_limit`` the forwarder stops reading the upstream until the client opens
  its window again.

Limits (Envoy's defaults where it has them): 100 concurrent streams per connection (a stream
beyond them is refused alone, RST_STREAM REFUSED_STREAM, as nghttp2 does in Envoy; the rest
of the connection goes on), the header list size of ``max_header_bytes``, and the
rapid-reset budget: a connection on which clients reset streams before their response
ended, or opened streams that were refused, at least ``RESET_BUDGET`` times and for more than
half of its streams, is closed with GOAWAY ENHANCE_YOUR_CALM (CVE-2023-44487).

Floods, with Envoy's limits (``Http2ProtocolOptions``), each closing the connection with
GOAWAY ENHANCE_YOUR_CALM: more than ``MAX_OUTBOUND_CONTROL_FRAMES`` PING and SETTINGS acks and
refusals owed to a client whose socket does not take them (a client that reads its acks may
ping as it likes; one that does not read is not read either, so what the proxy owes it stays
bounded); PRIORITY frames beyond ``MAX_PRIORITY_PER_STREAM`` per stream opened; WINDOW_UPDATE
frames beyond ``5 + 2 * (streams + MAX_WINDOW_UPDATES_PER_DATA * DATA frames sent)``; more than
``MAX_EMPTY_FRAMES`` DATA frames in a row with neither bytes nor END_STREAM. A CONTINUATION
flood ends in h2 (64 frames at most per header block) and at the header list size. A drain
sends GOAWAY, lets the open streams finish and closes.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame

from .. import errors
from ..errors import ProxyError
from . import grpc
from .client import ClientPolicy
from .context import Context
from .decide import decide
from .encode import identify, upstream_request
from .exchange import Exchange, access_entry
from .forward import Forwarder
from .framing import validate
from .h2flow import SparingConnection, send_within_window
from .h2head import request_head
from .h2stream import Stream
from .states import Ev, Req, Resp

if TYPE_CHECKING:
    from ..stats import ListenerStats

log = logging.getLogger("pyproxy.h2")

MAX_CONCURRENT_STREAMS = 100
RESET_BUDGET = 100
MAX_FRAME = 16384
MAX_OUTBOUND_CONTROL_FRAMES = 1000  # Envoy's max_outbound_control_frames
MAX_PRIORITY_PER_STREAM = 100  # max_inbound_priority_frames_per_stream
MAX_WINDOW_UPDATES_PER_DATA = 10  # max_inbound_window_update_frames_per_data_frame_sent
MAX_EMPTY_FRAMES = 1  # max_consecutive_inbound_frames_with_empty_payload
# what h2 itself enforces: it treats a stream over its limit as a connection error, so its
# limit sits above the advertised one and the proxy refuses the stream over 100 itself
_H2_STREAM_CEILING = 2**31 - 1


class H2Protocol(asyncio.Protocol):
    """One downstream HTTP/2 connection; ``connection_made`` is called by the HTTP/1.1
    protocol that found it (ALPN ``h2``, or the cleartext preface)."""

    transport: asyncio.Transport

    def __init__(self, ctx: Context, group_key: tuple[str, int], scheme: str, sni: str | None, peer: str,
                 peer_b: bytes, local: str, stats: ListenerStats, policy: ClientPolicy,
                 admission: tuple[tuple[str, int], str] | None = None) -> None:
        self.ctx = ctx
        self.policy = policy  # the listener's client settings, as the HTTP/1.1 side took them
        self.limits = policy.limits
        self.admission = admission  # the connection_limit count this connection holds
        self.loop = ctx.loop
        self.group_key = group_key
        self.scheme = scheme
        self.scheme_b = scheme.encode()
        self.sni = sni
        self.peer, self.peer_b, self.local_addr = peer, peer_b, local
        self.stats = stats
        config = h2.config.H2Configuration(client_side=False, header_encoding=None, validate_inbound_headers=True)
        self.conn = SparingConnection(config=config)
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: self.limits.max_header_bytes,
        })
        # what the settings offer is not what h2's HPACK decoder enforces unless told: a
        # header list over it closes the connection (GOAWAY ENHANCE_YOUR_CALM)
        self.conn.decoder.max_header_list_size = self.limits.max_header_bytes
        self.streams: dict[int, Stream] = {}
        self.closed = False
        self.draining = False
        self.goaway_last: int | None = None  # the last stream id of the GOAWAY a drain sent
        self.write_paused = False
        self.tunnel = None  # (an HTTP/2 connection is never a tunnel)
        self.started = 0  # streams opened
        self.resets = 0  # streams the client reset before their response ended
        self.control_owed = 0  # acks and refusals written since the socket last took all
        self.priorities = 0  # PRIORITY frames received
        self.window_updates = 0  # WINDOW_UPDATE frames received
        self.data_frames_sent = 0
        self.empty_frames = 0  # DATA frames in a row with no bytes and no END_STREAM
        self.deadline = 0.0
        self.deadline_cb: Callable[[], None] | None = None
        self.progress = 0
        self.flush_due = False  # a write_out is scheduled for the end of this loop iteration

    def __repr__(self) -> str:
        return f"<H2Protocol {self.peer} streams={sorted(self.streams)} resets={self.resets}/{self.started}>"

    @property
    def queue(self) -> list[Exchange]:
        """The exchanges not answered yet (what the metrics count as active requests)."""
        return [stream.ex for stream in self.streams.values()]

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        self.ctx.connections.add(self)
        self.conn.initiate_connection()  # advertises MAX_CONCURRENT_STREAMS
        settings = self.conn.local_settings
        settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = _H2_STREAM_CEILING
        settings.acknowledge()  # in force at once and never sent: h2's own ceiling only
        self.write_out()
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.progress += 1
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.debug("%s: HTTP/2 protocol error: %s", self.peer, exc)
            self._close_with(getattr(exc, "error_code", h2.errors.ErrorCodes.PROTOCOL_ERROR))
            return
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                if event.flow_controlled_length or event.stream_ended is not None:
                    self.empty_frames = 0
                else:
                    self.empty_frames += 1
                self._data(event.stream_id, event.data, event.flow_controlled_length)
            else:
                self.empty_frames = 0
                if isinstance(event, h2.events.RequestReceived):
                    self._request(event.stream_id, event.headers, event.stream_ended is not None)
                elif isinstance(event, h2.events.StreamEnded):
                    self._request_end(event.stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    self._reset_by_client(event.stream_id)
                elif isinstance(event, h2.events.WindowUpdated):
                    self.window_updates += 1
                    self._window_opened(event.stream_id)
                elif isinstance(event, (h2.events.PingReceived, h2.events.RemoteSettingsChanged)):
                    self.control_owed += 1  # h2 writes the ack
                elif isinstance(event, h2.events.PriorityUpdated):
                    self.priorities += 1
                elif isinstance(event, h2.events.ConnectionTerminated):
                    self.draining = True
            if self.closed:
                return
        self.write_out()  # the flood check needs what the socket took of it
        flood = self._flood()
        if flood:
            log.warning("%s: HTTP/2 flood (%s): closing the connection", self.peer, flood)
            self._close_with(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
            return
        self._maybe_close()

    def _flood(self) -> str | None:
        """What the client floods the connection with, if it passed Envoy's limits."""
        if self.transport.get_write_buffer_size() == 0:
            self.control_owed = 0  # the socket took every ack written so far
        elif self.control_owed > MAX_OUTBOUND_CONTROL_FRAMES:
            return f"{self.control_owed} PING/SETTINGS acks and refusals not read"
        if self.priorities > MAX_PRIORITY_PER_STREAM * (1 + self.started):
            return f"{self.priorities} PRIORITY frames for {self.started} streams"
        if self.window_updates > 5 + 2 * (self.started + MAX_WINDOW_UPDATES_PER_DATA * self.data_frames_sent):
            return f"{self.window_updates} WINDOW_UPDATE frames for {self.data_frames_sent} DATA frames sent"
        if self.empty_frames > MAX_EMPTY_FRAMES:
            return f"{self.empty_frames} empty DATA frames in a row"
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.ctx.forget(self)
        if self.admission is not None:
            self.ctx.release(self.admission)
            self.admission = None
        self.deadline_cb = None
        for stream in list(self.streams.values()):
            ex = stream.ex
            if ex.forwarder is not None:
                ex.forwarder.cancel()
            if ex.resp is not Resp.DONE:
                ex.lost()
            self._log(ex)
        self.streams.clear()

    def pause_writing(self) -> None:
        # a client that does not read what we send (PING and SETTINGS acks included: the
        # PING flood) is not read either, so what we owe it cannot grow without bound
        self.write_paused = True
        self.transport.pause_reading()
        for stream in self.streams.values():
            if stream.ex.forwarder is not None:
                stream.ex.forwarder.pause_reading(True)

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.closed:
            self.transport.resume_reading()
        for stream in self.streams.values():
            if stream.ex.forwarder is not None and not stream.write_paused:
                stream.ex.forwarder.pause_reading(False)

    # ------------------------------------------------------------------ requests

    def _request(self, stream_id: int, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        self.started += 1
        self.deadline_cb = None
        if self.goaway_last is not None and stream_id > self.goaway_last:
            self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)  # sent after our GOAWAY
            return
        if len(self.streams) >= MAX_CONCURRENT_STREAMS:
            self._refuse(stream_id)
            return
        rules = self.policy.rules
        head, path, underscored = request_head(headers, rules.underscores)
        ex = Exchange(head)
        stream = self.streams[stream_id] = Stream(self, stream_id, ex)
        if underscored:
            # Envoy's headers_with_underscores_action REJECT_REQUEST on HTTP/2: the stream is
            # reset (nghttp2: INTERNAL_ERROR), no response
            head.version = "2"
            ex.req = Req.DONE
            ex.flags, ex.details = "DPE", "http2.unexpected_underscore"
            self.reset(stream, h2.errors.ErrorCodes.INTERNAL_ERROR)
            return
        try:
            if head.method == "CONNECT":
                raise errors.BadRequest("CONNECT is not supported")
            validate(head, path, rules)
        except ProxyError as error:
            head.version = "2"
            ex.req = Req.DONE
            ex.advance(Ev.START)
            self.local(stream, error.status, error.body.encode(), flags=error.flags, details=error.details)
            return
        head.version = "2"
        if not ended and head.content_length is None:
            head.chunked = True  # a body of unknown length goes upstream chunked
        ex.req = Req.DONE if ended else Req.BODY
        ex.advance(Ev.START)
        try:
            local = decide(self.ctx.snapshot, self.group_key, self.sni, self.scheme, ex)
        except ProxyError as error:
            self.local(stream, error.status, error.body.encode(), flags=error.flags, details=error.details)
            return
        if local is not None:
            self.local(stream, local.status, local.body, local.headers, details=local.details)
            return
        route, backend = ex.route, ex.backend
        assert route is not None and backend is not None
        request = upstream_request(ex, route, backend, self.peer_b, self.scheme_b, self.policy)
        ex.advance(Ev.FORWARD)
        forwarder = ex.forwarder = Forwarder(stream, ex, route, backend, request)
        forwarder.start(ended)

    def _refuse(self, stream_id: int) -> None:
        """A stream over the concurrency limit: refused unprocessed (the client may send it
        again), and counted with the client's resets, as it cost the proxy the same."""
        self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
        self.control_owed += 1
        self.resets += 1
        self._check_reset_budget()

    def _data(self, stream_id: int, data: bytes, flow_controlled: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            self.conn.acknowledge_received_data(flow_controlled, stream_id)
            return
        ex = stream.ex
        ex.bytes_received += len(data)
        stream.progress += 1
        stream.acks += flow_controlled
        if ex.resp is Resp.DONE:
            self.acknowledge(stream)
            return
        if ex.forwarder is not None:
            ex.forwarder.body_received(data)
        else:
            ex.body.append(data)
            ex.body_size += len(data)
        if not stream.request_paused:
            self.acknowledge(stream)

    def acknowledge(self, stream: Stream) -> None:
        """Reopen the windows for what the stream has taken."""
        acks, stream.acks = stream.acks, 0
        if acks and not self.closed:
            try:
                self.conn.acknowledge_received_data(acks, stream.id)
            except h2.exceptions.StreamClosedError:
                return
            self.flush()

    def _request_end(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        ex = stream.ex
        if ex.req is Req.BODY:
            ex.req = Req.DONE
            if ex.forwarder is not None and ex.resp is not Resp.DONE:
                ex.forwarder.end_request()

    def _reset_by_client(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        ex = stream.ex
        if ex.forwarder is not None:
            ex.forwarder.cancel()
        if ex.resp is not Resp.DONE:
            self.resets += 1
            if not ex.response_started:
                ex.flags = "DR"
                ex.details = "http2.remote_reset"
            ex.advance(Ev.LOST)
            self._log(ex)
        self._check_reset_budget()

    def _check_reset_budget(self) -> None:
        if self.resets >= RESET_BUDGET and self.resets * 2 > self.started:
            log.warning("%s: %d of %d HTTP/2 streams reset by the client or refused: closing the connection"
                        " (rapid reset)", self.peer, self.resets, self.started)
            self._close_with(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)

    # ------------------------------------------------------------------ responses

    def send_headers(self, stream_id: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        if self.closed:
            return
        try:
            self.conn.send_headers(stream_id, headers, end_stream=end)
        except h2.exceptions.StreamClosedError:
            return
        except h2.exceptions.ProtocolError as exc:
            # a header HTTP/2 cannot carry (h2 validates what we send): the stream is reset
            log.warning("%s: response head refused by HTTP/2 on stream %d: %s", self.peer, stream_id, exc)
            stream = self.streams.get(stream_id)
            if stream is not None:
                stream.ex.flags = "UPE"
                stream.ex.details = "http2.invalid_response_head"
                if stream.ex.resp is Resp.SENDING:
                    stream.ex.advance(Ev.RESET)
                if stream.ex.forwarder is not None:
                    stream.ex.forwarder.cancel()
                self.reset(stream, h2.errors.ErrorCodes.INTERNAL_ERROR)

    def pump(self, stream: Stream) -> None:
        """Send the stream's response head, what the windows take of its body, and end it
        (with its trailers) when all is out."""
        if self.closed:
            return
        conn = self.conn
        sid = stream.id
        head = stream.head
        if head is not None:
            stream.head = None
            alone = stream.ending and not stream.out and stream.trailers is None
            self.send_headers(sid, head, end=alone)
            if alone or sid not in self.streams:
                self._finish(stream)
                return
        try:
            sent = send_within_window(conn, sid, stream.out)
            stream.out_size -= sent
            self.data_frames_sent += -(-sent // conn.max_outbound_frame_size)
            if stream.ending and not stream.out:
                if stream.trailers is not None:
                    self.send_headers(sid, stream.trailers, end=True)
                else:
                    conn.end_stream(sid)
        except h2.exceptions.StreamClosedError:
            stream.out.clear()
            stream.out_size = 0
        full = stream.out_size > self.limits.buffer_limit
        if full != stream.write_paused:
            stream.write_paused = full
            if stream.ex.forwarder is not None and not self.write_paused:
                stream.ex.forwarder.pause_reading(full)
        if stream.ending and not stream.out:
            self._finish(stream)

    def _window_opened(self, stream_id: int) -> None:
        targets = list(self.streams.values()) if stream_id == 0 else [s for s in [self.streams.get(stream_id)] if s]
        for stream in targets:
            if stream.out:
                self.pump(stream)

    def local(self, stream: Stream, status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None,
              *, flags: str = "-", details: str = "") -> None:
        """The proxy's own answer on a stream (the one local-reply path of HTTP/2); to a gRPC
        call, a gRPC status in one HEADERS frame (``grpc.py``)."""
        ex = stream.ex
        ex.advance(Ev.LOCAL)
        identify(ex, self.policy)
        if grpc.is_grpc(ex.head.headers):
            out = [(b":status", b"200"), *grpc.status_headers(status, body)]
            status, body = 200, b""
        else:
            out = [(b":status", b"%d" % status), (b"content-length", b"%d" % len(body))]
            if body:
                out.append((b"content-type", b"text/plain"))
        ex.status = status
        ex.flags = flags
        ex.details = details
        if headers:
            out.extend(headers)
        if ex.cors_headers:
            out.extend(ex.cors_headers)
        if ex.head.method == "HEAD":
            body = b""
        ex.bytes_sent += len(body)
        self.send_headers(stream.id, out, end=not body)
        if body:
            stream.out.append(body)
            stream.out_size += len(body)
            stream.ending = True
            self.pump(stream)
        else:
            self._finish(stream)

    def reset(self, stream: Stream, code: h2.errors.ErrorCodes) -> None:
        if not self.closed:
            try:
                self.conn.reset_stream(stream.id, code)
            except h2.exceptions.StreamClosedError:
                pass
        self._finish(stream)

    def _finish(self, stream: Stream) -> None:
        if self.streams.pop(stream.id, None) is None:
            return
        ex = stream.ex
        if ex.resp is Resp.SENDING:
            ex.advance(Ev.END)
        self.flush()
        self._log(ex)
        if ex.req is not Req.DONE and not self.closed:
            # answered before the whole body came: the rest is not wanted (as Envoy, RST NO_ERROR)
            try:
                self.conn.reset_stream(stream.id, h2.errors.ErrorCodes.NO_ERROR)
            except h2.exceptions.StreamClosedError:
                pass
        self._maybe_close()

    def flush(self) -> None:
        """Write what h2 has queued, once the loop has handled every event of this poll: the
        responses that upstream reads of one iteration finish leave in one write, not one
        each (the h2 bench, 10 streams per connection: 2.0 -> 1.1 write calls and -8 % CPU
        per request)."""
        if not self.flush_due and not self.closed:
            self.flush_due = True
            self.loop.call_soon(self.write_out)

    def write_out(self) -> None:
        """Write what h2 has queued now (before a close, a GOAWAY or the flood check)."""
        self.flush_due = False
        if not self.closed:
            data = self.conn.data_to_send()
            if data:
                self.transport.write(data)

    def _log(self, ex: Exchange) -> None:
        ms = (time.monotonic() - ex.start_mono) * 1000
        stats = self.stats
        stats.rq_xx[ex.status // 100] += 1
        stats.rq_time.record(ms)
        access_log = self.ctx.access_log
        if access_log.enabled:
            access_log.write(access_entry(ex, self.local_addr, self.peer, ms))

    # ------------------------------------------------------------------ ending

    def drain(self) -> None:
        """GOAWAY: no new stream; the open ones finish, then the connection closes."""
        if self.closed or self.draining:
            return
        self.draining = True
        self.goaway_last = self.conn.highest_inbound_stream_id
        self.write_out()
        # h2 sends nothing more, not even on the streams in flight, once it has sent a GOAWAY
        # itself (its connection state machine is CLOSED then): the frame is written beside it
        self.transport.write(GoAwayFrame(0, last_stream_id=self.goaway_last).serialize())
        self._maybe_close()

    def _maybe_close(self) -> None:
        if self.closed:
            return
        if self.streams:
            self.deadline_cb = None
            return
        if self.draining:
            self.write_out()
            self.closed = True
            self.transport.close()
        else:
            self._arm_idle()

    def _close_with(self, code: h2.errors.ErrorCodes) -> None:
        if self.closed:
            return
        try:
            self.conn.close_connection(error_code=code)
            self.write_out()
        except h2.exceptions.ProtocolError:
            pass
        self.closed = True
        for stream in list(self.streams.values()):
            if stream.ex.forwarder is not None:
                stream.ex.forwarder.cancel()
        if self.transport.get_write_buffer_size():
            # a client that is not reading would hold a flushing close open for ever
            self.transport.abort()
        else:
            self.transport.close()

    def _arm_idle(self) -> None:
        self.deadline = self.loop.time() + self.limits.idle_timeout
        self.deadline_cb = self._idle
        self.ctx.watch_deadlines()

    def _idle(self) -> None:
        if not self.streams:
            self.drain()

    def stream_idle(self, now: float) -> None:
        """Called by the sweeper: cut each stream on which nothing moved for too long, and
        answer 408 to one whose request is not whole at its ``request_timeout`` (until its
        response begins)."""
        for stream in list(self.streams.values()):
            ex = stream.ex
            if stream.request_deadline <= now and ex.req is not Req.DONE and not ex.response_started:
                stream.request_deadline = math.inf
                stream.fail(ex, errors.RequestOverallTimeout("request not received in time"))
                continue
            if stream.progress != stream.progress_seen:
                stream.progress_seen = stream.progress
                stream.progress_at = now
            elif now - stream.progress_at >= self.limits.stream_idle_timeout:
                stream.progress_at = now
                stream.fail(stream.ex, errors.StreamIdleTimeout())


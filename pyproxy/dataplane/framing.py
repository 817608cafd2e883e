"""HTTP/1.1 framing without I/O: the client's byte stream split into requests, each head
parsed and validated, and the heads written each way.

``RequestReader`` finds every boundary itself and feeds httptools (llhttp) one request at a
time. llhttp is strict — CRLF only, so a head ends at the first CRLFCRLF and a chunk-size
line at the first CRLF — which makes the boundaries exact and cheap to find, and so:

- pipelined requests are taken one at a time: after each request the handler may ``hold``
  the reader, and the bytes not yet parsed are returned to the caller to keep (the
  connection stops reading until it resumes), instead of the parser racing through every
  request of a read;
- a head that stays incomplete is bounded across reads; a request line that ends without a
  version (HTTP/0.9) is refused as soon as its CRLF arrives; a chunk-size line (with its
  extensions) is bounded; trailers follow the header-name rules and are never merged into
  the head;
- after a request that ends the connection (``Connection: close``, HTTP/1.0, an upgrade),
  or after ``stop``, nothing more is parsed at all.

Nothing here touches a socket or a clock: the tests feed bytes whole, byte by byte and with
trailing data, and look at what the handler saw.
"""
from __future__ import annotations

import re
from typing import Protocol

import httptools

from .. import errors
from ..errors import BadRequest, HeadersTooLarge, ProxyError
from . import http
from .client import KEEP, REDIRECT, REJECT, REJECT_PATH, HeadRules
from .limits import Limits
from .router import normalize_host

DEFAULT_RULES = HeadRules()

_HEAD, _BODY, _CHUNK_LINE, _CHUNK_DATA, _TRAILERS, _STOPPED = range(6)
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;|\r\n)")


class RequestHead:
    """A validated request head. ``path`` is normalised (what routes match and the upstream
    receives); ``redirect`` is set when the path held an escaped slash or backslash and the
    listener's action is UnescapeAndRedirect (Envoy Gateway's default: the answer is a redirect
    to the unescaped, normalised path), ``path_rejected`` when it is RejectRequest (400).
    ``upgrade`` is the protocol a bodiless ``Connection: upgrade`` request asks to switch to
    (its ``Upgrade`` token, lowercased), or b"" (no upgrade; ``h2c`` counts as none)."""

    __slots__ = ("method", "version", "target", "path", "query", "host", "host_header", "headers", "keep_alive",
                 "upgrade", "chunked", "content_length", "expect_continue", "redirect", "path_rejected")

    def __init__(self) -> None:
        self.method = ""
        self.version = "1.1"
        self.target = b""
        self.path = ""
        self.query = ""
        self.host = ""
        self.host_header = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = True
        self.upgrade = b""
        self.chunked = False
        self.content_length: int | None = None
        self.expect_continue = False
        self.redirect: str | None = None
        self.path_rejected = False


class RequestHandler(Protocol):
    """What a ``RequestReader`` reports to (the downstream connection)."""

    def request_head(self, head: RequestHead) -> None: ...

    def request_body(self, data: bytes) -> None: ...

    def request_end(self) -> None: ...


class _HeadParser:
    """httptools callbacks for one request: the head, then (chunked requests only) the body
    and trailers. Callbacks only collect; exceptions raised here surface from ``feed_data``
    as their ``__context__``."""

    __slots__ = ("parser", "url", "headers", "count", "limits", "underscores", "in_trailers", "trailer_bytes",
                 "handler", "complete", "line_done")

    def __init__(self, limits: Limits, handler: RequestHandler, underscores: int) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.count = 0
        self.limits = limits
        self.underscores = underscores
        self.in_trailers = False
        self.trailer_bytes = 0
        self.handler = handler
        self.complete = False
        self.line_done = False  # the request line has ended

    def reset(self) -> None:
        """Ready for the next request on the same llhttp parser (it completed a message)."""
        self.url = b""
        self.headers = []
        self.count = 0
        self.in_trailers = False
        self.trailer_bytes = 0
        self.complete = False
        self.line_done = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if b"_" in name and self.underscores:
            if self.underscores == REJECT:
                raise BadRequest("trailer name with underscore" if self.in_trailers else "header name with underscore")
            return  # DROP: as if never sent (Envoy does not count it either)
        self.count += 1
        if self.count > self.limits.max_headers:
            raise HeadersTooLarge("too many headers")
        if self.in_trailers:
            self.trailer_bytes += len(name) + len(value) + 4
            if self.trailer_bytes > self.limits.max_header_bytes:
                raise HeadersTooLarge("trailers too large")
            return  # trailers are not forwarded (the body is re-chunked) nor logged
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_trailers = True

    def on_body(self, body: bytes) -> None:
        self.handler.request_body(body)

    def on_message_complete(self) -> None:
        self.complete = True


class RequestReader:
    """Splits the client's bytes into requests and reports them to ``handler``.

    ``feed`` returns the bytes it did not parse because the handler called ``hold`` (the
    caller keeps them and feeds them again later), else ``b""``. A malformed request raises a
    ``ProxyError``; the reader then parses nothing more."""

    __slots__ = ("handler", "limits", "rules", "state", "buf", "remaining", "line", "parser", "spare", "held", "last")

    def __init__(self, handler: RequestHandler, limits: Limits, rules: HeadRules = DEFAULT_RULES) -> None:
        self.handler = handler
        self.limits = limits
        self.rules = rules  # underscores and path normalisation (the listener's ClientSettings)
        self.state = _HEAD
        self.buf = bytearray()  # the head's last bytes so far, or the current chunk-size line
        self.remaining = 0  # body bytes (or chunk bytes with their CRLF) still to come
        self.line = 0  # bytes of the head so far, or of the current trailer line
        self.parser: _HeadParser | None = None  # the current request's parser
        self.spare: _HeadParser | None = None  # a parser at a message start, for the next request
        self.held = False
        self.last = False  # the current request ends the connection (not keep-alive)

    @property
    def in_head(self) -> bool:
        """Part of a request head has arrived, not all of it."""
        return self.state == _HEAD and self.parser is not None

    def hold(self) -> None:
        """Stop at the next boundary; ``feed`` returns what is left."""
        self.held = True

    def release(self) -> None:
        self.held = False

    def stop(self) -> None:
        """Parse nothing more: whatever still arrives is ignored."""
        self.state = _STOPPED
        self.buf = bytearray()
        self.parser = self.spare = None

    def feed(self, data: bytes) -> bytes:
        try:
            return self._feed(data)
        except ProxyError:
            self.stop()
            raise

    def _feed(self, data: bytes) -> bytes:
        pos = 0
        end = len(data)
        while pos < end:
            if self.held:
                return data[pos:]
            state = self.state
            if state == _HEAD:
                pos = self._head(data, pos)
            elif state == _BODY:
                take = min(self.remaining, end - pos)
                self.remaining -= take
                self.handler.request_body(data if pos == 0 and take == end else data[pos:pos + take])
                pos += take
                if not self.remaining:
                    self._end()
            elif state == _STOPPED:
                return b""
            else:
                pos = self._chunked(data, pos)
        return b""

    # ------------------------------------------------------------------ heads

    def _head(self, data: bytes, pos: int) -> int:
        """Feed head bytes to this request's parser (llhttp rejects a malformed head as soon
        as the offending byte arrives) up to the CRLFCRLF that ends it."""
        hp = self.parser
        if hp is None:
            end = len(data)
            while pos < end and data[pos] in b"\r\n":  # RFC 9112 §2.2: empty lines before a request
                pos += 1
            if pos == end:
                return pos
            hp = self.spare
            if hp is None:
                hp = _HeadParser(self.limits, self.handler, self.rules.underscores)
            else:
                self.spare = None
            self.parser = hp
            self.line = 0
            found = data.find(b"\r\n\r\n", pos)
            if found >= 0 and found - pos < self.limits.max_header_bytes - 4:
                # the common case: the whole head in this read
                stop = found + 4
                chunk = data if pos == 0 and stop == end else data[pos:stop]
                upgrade = False
                try:
                    hp.parser.feed_data(chunk)
                except httptools.HttpParserUpgrade:
                    upgrade = True
                except httptools.HttpParserError as exc:
                    raise _cause(exc) from None
                self._complete_head(hp, upgrade)
                return stop
        tail = bytes(self.buf)  # the head's last bytes so far: a CRLFCRLF may straddle reads
        stop = -1
        if tail:
            found = (tail + data[pos:pos + 3]).find(b"\r\n\r\n")
            if found >= 0:
                stop = pos + found + 4 - len(tail)
        if stop < 0:
            found = data.find(b"\r\n\r\n", pos)
            stop = found + 4 if found >= 0 else len(data)
        complete = found >= 0
        chunk = data if pos == 0 and stop == len(data) else data[pos:stop]
        line_ended_here = False
        limit = self.limits.max_header_bytes
        if not hp.line_done:
            eol = chunk.find(b"\n")
            if self.line + (eol if eol >= 0 else len(chunk)) > limit:
                raise errors.UriTooLong("request line too long")
            if eol >= 0:
                hp.line_done = line_ended_here = True
        size = self.line + stop - pos
        if size > limit:
            raise HeadersTooLarge("header section too large")
        self.line = size
        upgrade = False
        try:
            hp.parser.feed_data(chunk)
        except httptools.HttpParserUpgrade:
            upgrade = True
        except httptools.HttpParserError as exc:
            raise _cause(exc) from None
        if not complete:
            self.buf = bytearray((tail + chunk)[-3:])
            if line_ended_here and hp.parser.get_http_version() == "0.0":
                # "GET /\r\n": llhttp would take it as HTTP/0.9 only on the next byte
                raise BadRequest("HTTP/0.9")
            return stop
        self.buf = bytearray()
        self._complete_head(hp, upgrade)
        return stop

    def _complete_head(self, hp: _HeadParser, upgrade: bool) -> None:
        parser = hp.parser
        head = RequestHead()
        head.method = parser.get_method().decode("latin-1")
        head.version = parser.get_http_version()
        head.headers = hp.headers
        validate(head, hp.url, self.rules)
        if upgrade and not head.chunked and not head.content_length:
            head.upgrade = upgrade_token(head.headers)
        if head.upgrade:
            # what follows the head belongs to the other protocol if the upstream switches, or
            # is the next request if it does not: nothing is parsed until the answer says which
            self.held = True
        self.last = not head.keep_alive
        self.handler.request_head(head)
        if self.state == _STOPPED:
            return
        if head.chunked:
            self.state = _CHUNK_LINE
            self.line = 0
        elif head.content_length:
            self.parser = None
            self.state = _BODY
            self.remaining = head.content_length
        else:
            self._end()

    def _end(self) -> None:
        hp = self.parser
        last = self.last
        if hp is not None and hp.complete and not last:
            # llhttp is back at a message start: the next request reuses it
            hp.reset()
            self.spare = hp
        self.state = _HEAD
        self.parser = None
        self.handler.request_end()
        if last:
            self.stop()  # a request that ends the connection: nothing after it is parsed

    # ------------------------------------------------------------------ chunked bodies

    def _chunked(self, data: bytes, pos: int) -> int:
        """Find how far this read goes in the chunked body (at most to its end), then let
        llhttp parse exactly that span: it validates the framing and delivers the data."""
        end = len(data)
        start = pos
        done = False
        while pos < end and not done:
            state = self.state
            if state == _CHUNK_DATA:
                take = min(self.remaining, end - pos)
                self.remaining -= take
                pos += take
                if not self.remaining:
                    self.state = _CHUNK_LINE
                    self.line = 0
                continue
            eol = data.find(b"\n", pos)
            stop = end if eol < 0 else eol + 1
            if state == _CHUNK_LINE:
                self.buf += data[pos:stop]
                if len(self.buf) > self.limits.max_chunk_extension + 20:
                    raise BadRequest("chunk extension too long")
                if eol >= 0:
                    match = _CHUNK_SIZE.match(self.buf)
                    if match is None:
                        raise BadRequest("invalid chunk size")
                    size = int(match.group(1), 16)
                    self.buf = bytearray()
                    if size:
                        self.state = _CHUNK_DATA
                        self.remaining = size + 2
                    else:
                        self.state = _TRAILERS
                        self.line = 0
            else:  # trailers: lines until an empty one
                self.line += stop - pos
                if self.line > self.limits.max_header_bytes:
                    raise HeadersTooLarge("trailers too large")
                if eol >= 0:
                    done = self.line <= 2
                    self.line = 0
            pos = stop
        hp = self.parser
        assert hp is not None
        try:
            hp.parser.feed_data(data[start:pos] if start or pos != end else data)
        except httptools.HttpParserError as exc:
            raise _cause(exc) from None
        if done:
            if not hp.complete:
                raise BadRequest("invalid chunked framing")
            self._end()
        return pos


def _cause(exc: httptools.HttpParserError) -> ProxyError:
    """The error to answer for a parser failure: a ``ProxyError`` raised by a callback, else
    400 (an unexpected exception in a callback is a bug: re-raised)."""
    cause = exc.__context__
    if isinstance(cause, ProxyError):
        return cause
    if cause is not None:
        raise cause
    if "invalid `Transfer-Encoding`" in str(exc):
        return errors.NotImplementedCoding(str(exc))  # Envoy and nginx: 501 for a coding they lack
    return BadRequest(str(exc))


def upgrade_token(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The protocol an upgrade request asks for (its first ``Upgrade`` token, lowercased);
    b"" for ``h2c``, which is ignored (served as HTTP/1.1, as Envoy does)."""
    for name, value in headers:
        if name == b"upgrade":
            token = value.split(b",")[0].strip().lower()
            return b"" if token == b"h2c" else token
    return b""


_HOSTS: dict[bytes, str] = {}  # Host values seen valid -> as matched (a bounded cache)
_HOSTS_MAX = 1024


def matched_host(value: bytes) -> str | None:
    """The Host value as routes match it, or None when it is not a valid Host. Cached: a
    proxy sees few distinct Hosts, and the check plus normalisation cost 2 us a request."""
    host = _HOSTS.get(value)
    if host is None:
        if not value or not http.valid_host(value):
            return None
        if len(_HOSTS) >= _HOSTS_MAX:
            _HOSTS.clear()
        host = _HOSTS[value] = normalize_host(value)
    return host


def validate(head: RequestHead, url: bytes, rules: HeadRules = DEFAULT_RULES) -> None:
    """Strict framing and target rules (hardening.md §2): anything ambiguous raises (a 400
    unless the error says otherwise) and the connection closes. Fills in the head's host,
    path, query and framing; the path is normalised as ``rules`` say (an escaped slash is
    not an error of framing: the answer, a redirect or a 400, is routing's)."""
    version = head.version
    if version != "1.1" and version != "1.0":
        raise BadRequest("unsupported HTTP version")
    if head.method == "CONNECT":
        raise BadRequest("CONNECT is not supported")
    host: bytes | None = None
    hosts = 0
    content_lengths: list[bytes] | None = None
    transfer_encodings: list[bytes] | None = None
    connection = b""
    for name, value in head.headers:
        if name == b"host":
            host = host if hosts else value
            hosts += 1
        elif name == b"connection":
            connection += b"," + value.lower()
        elif name == b"content-length":
            if content_lengths is None:
                content_lengths = [value]
            else:
                content_lengths.append(value)
        elif name == b"transfer-encoding":
            if transfer_encodings is None:
                transfer_encodings = [value]
            else:
                transfer_encodings.append(value)
        elif name == b"expect":
            if value.strip().lower() == b"100-continue":
                head.expect_continue = version == "1.1"
    if connection:
        tokens = {t.strip() for t in connection.split(b",")}
        head.keep_alive = b"close" not in tokens if version == "1.1" else b"keep-alive" in tokens
    else:
        head.keep_alive = version == "1.1"
    if transfer_encodings is not None:
        if content_lengths is not None or version != "1.1" or len(transfer_encodings) > 1:
            raise BadRequest("ambiguous framing")
        if transfer_encodings[0].strip().lower() != b"chunked":
            raise errors.NotImplementedCoding("unsupported transfer-encoding")
        head.chunked = True
    elif content_lengths is not None:
        first = content_lengths[0]
        if not first.isdigit() or len(first) > 18 or any(v != first for v in content_lengths):
            raise BadRequest("invalid content-length")
        head.content_length = int(first)
    target = url
    if target[:1] != b"/":
        lowered = target[:8].lower()
        if lowered.startswith(b"http://") or lowered.startswith(b"https://"):
            authority, target = http.parse_absolute(target)
            if hosts and host is not None and host.lower() != authority.lower():
                raise BadRequest("absolute-form authority differs from Host")
            if not hosts:
                host, hosts = authority, 1
        elif not (target == b"*" and head.method == "OPTIONS"):
            raise BadRequest("invalid request-target")
    if hosts > 1:
        raise BadRequest("duplicate Host")
    if host is not None:
        matched = matched_host(host)
        if matched is None:
            raise BadRequest("invalid Host")
        head.host_header = host
        head.host = matched
    elif version == "1.1":
        raise BadRequest("missing Host")
    head.target = target
    path, head.query = http.split_target(target)
    if path.startswith("/"):
        action = rules.escaped_slashes
        head.path, escaped = http.normalize_path(path, action != KEEP, rules.merge_slashes)
        if escaped:
            if action == REDIRECT:
                head.redirect = head.path + "?" + head.query if head.query else head.path
            elif action == REJECT_PATH:
                head.path_rejected = True
    else:
        head.path = path

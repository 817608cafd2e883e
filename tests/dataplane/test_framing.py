"""The I/O-free framing layer (``framing.RequestReader``) fed in memory, as h11's ``tr()``
does: every input whole, one byte at a time, and followed by trailing data (the start of
another request), and each must give the same events."""
from __future__ import annotations

import pytest

from pyproxy import errors
from pyproxy.dataplane.client import HeadRules
from pyproxy.dataplane.framing import DEFAULT_RULES, RequestHead, RequestReader
from pyproxy.dataplane.limits import DEFAULT, Limits


class Recorder:
    """A RequestHandler that writes down what it is told (body pieces joined)."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.reader: RequestReader | None = None
        self.hold_after_end = False

    def request_head(self, head: RequestHead) -> None:
        self.events.append(("head", head.method, head.path, head.query, head.version, head.keep_alive,
                            head.chunked, head.content_length, tuple(head.headers), head.redirect))

    def request_body(self, data: bytes) -> None:
        if self.events and self.events[-1][0] == "body":
            self.events[-1] = ("body", self.events[-1][1] + data)
        else:
            self.events.append(("body", bytes(data)))

    def request_end(self) -> None:
        self.events.append(("end",))
        if self.hold_after_end:
            assert self.reader is not None
            self.reader.hold()


def feed(data: bytes, split: bool, limits: Limits = DEFAULT, rules: HeadRules = DEFAULT_RULES) -> list[tuple]:
    rec = Recorder()
    reader = RequestReader(rec, limits, rules)
    pieces = [data[i:i + 1] for i in range(len(data))] if split else [data]
    for piece in pieces:
        assert reader.feed(piece) == b""
    return rec.events


def tr(data: bytes, expected: list[tuple], limits: Limits = DEFAULT, rules: HeadRules = DEFAULT_RULES) -> None:
    assert feed(data, False, limits, rules) == expected
    assert feed(data, True, limits, rules) == expected
    # trailing data: the start of another request changes nothing about this one
    assert feed(data + b"GET /next HTTP/1.1\r\nHo", False, limits, rules) == expected
    assert feed(data + b"GET /next HTTP/1.1\r\nHo", True, limits, rules) == expected


def tr_error(data: bytes, error: type[errors.ProxyError], limits: Limits = DEFAULT,
             rules: HeadRules = DEFAULT_RULES) -> None:
    """Whole and byte by byte, ``data`` ends in ``error``; afterwards nothing more is parsed."""
    for split in (False, True):
        rec = Recorder()
        reader = RequestReader(rec, limits, rules)
        pieces = [data[i:i + 1] for i in range(len(data))] if split else [data]
        with pytest.raises(error):
            for piece in pieces:
                reader.feed(piece)
        before = list(rec.events)
        assert reader.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") == b""
        assert rec.events == before


def head(method="GET", path="/", query="", version="1.1", keep_alive=True, chunked=False, length=None,
         headers=((b"host", b"a"),), redirect=None) -> tuple:
    return ("head", method, path, query, version, keep_alive, chunked, length, tuple(headers), redirect)


END = ("end",)


def test_get():
    tr(b"GET /a?b=1 HTTP/1.1\r\nHost: a\r\n\r\n", [head(path="/a", query="b=1"), END])


def test_empty_lines_before_a_request_are_ignored():
    tr(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", [head(), END])


def test_content_length_body():
    data = b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world"
    tr(data, [head("POST", "/p", length=11, headers=((b"host", b"a"), (b"content-length", b"11"))),
              ("body", b"hello world"), END])


def test_chunked_body_with_extensions_and_trailers():
    data = (b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n6;a=\"b\"\r\n world\r\n0\r\nX-Trailer: t\r\nUser-Agent: evil\r\n\r\n")
    tr(data, [head("POST", "/c", chunked=True, headers=((b"host", b"a"), (b"transfer-encoding", b"chunked"))),
              ("body", b"hello world"), END])  # trailers are checked, never merged into the head


def test_keep_alive_is_read_from_connection_and_version():
    tr(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
       [head(keep_alive=False, headers=((b"host", b"a"), (b"connection", b"close"))), END])
    tr(b"GET / HTTP/1.0\r\n\r\n", [head(version="1.0", keep_alive=False, headers=()), END])
    tr(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
       [head(version="1.0", headers=((b"connection", b"Keep-Alive"),)), END])


def test_escaped_slash_asks_for_a_redirect():
    tr(b"GET /public/..%2Fadmin?x=1 HTTP/1.1\r\nHost: a\r\n\r\n",
       [head(path="/admin", query="x=1", redirect="/admin?x=1"), END])


def test_pipelined_requests_one_at_a_time_when_held():
    first = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
    second = b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok"
    rec = Recorder()
    reader = rec.reader = RequestReader(rec, DEFAULT)
    rec.hold_after_end = True
    rest = reader.feed(first + second)
    assert rest == second and rec.events == [head(path="/1"), END]
    reader.release()
    assert reader.feed(rest) == b""
    assert rec.events[2:] == [head("POST", "/2", length=2, headers=((b"host", b"a"), (b"content-length", b"2"))),
                              ("body", b"ok"), END]


def test_nothing_is_parsed_after_stop():
    rec = Recorder()
    reader = RequestReader(rec, DEFAULT)
    reader.stop()
    assert reader.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") == b""
    assert rec.events == []


@pytest.mark.parametrize("data, error", [
    (b"GET /\r\n", errors.BadRequest),  # HTTP/0.9: refused at the request line's CRLF
    (b"GET / HTTP/1.1\nHost: a\n\n", errors.BadRequest),  # bare LF
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", errors.BadRequest),  # obs-fold
    (b"GET / HTTP/1.1\r\nX_Y: 1\r\nHost: a\r\n\r\n", errors.BadRequest),  # underscore
    (b"GET / HTTP/1.1\r\n\r\n", errors.BadRequest),  # no Host
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", errors.BadRequest),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", errors.NotImplementedCoding),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\nok\r\n0\r\n\r\n", errors.BadRequest),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n", errors.BadRequest),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad_name: x\r\n\r\n", errors.BadRequest),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;" + b"e" * 5000 + b"\r\nhello\r\n0\r\n\r\n",
     errors.BadRequest),  # a chunk extension over max_chunk_extension
    (b"GET /" + b"a" * (61 * 1024) + b" HTTP/1.1\r\n", errors.UriTooLong),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * (61 * 1024) + b"\r\n\r\n", errors.HeadersTooLarge),
    (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(100)) + b"\r\n",
     errors.HeadersTooLarge),
], ids=["http09", "bare-lf", "obs-fold", "underscore", "no-host", "cl-te", "te-gzip", "chunk-0x", "chunk-no-crlf",
        "trailer-underscore", "chunk-ext-huge", "uri-too-long", "header-too-large", "too-many-headers"])
def test_malformed(data, error):
    tr_error(data, error)


def test_the_limits_come_from_limits():
    data = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;" + b"e" * 100 + b"\r\nhello\r\n0\r\n\r\n"
    assert feed(data, False)[-1] == END
    tr_error(data, errors.BadRequest, Limits(max_chunk_extension=64))
    tr_error(b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n", errors.HeadersTooLarge, Limits(max_headers=2))

"""Regression tests for the defects of the downstream-connection review (issue 6).

Each test states the expected, Envoy-like behaviour; each failed against the code before the
rebuild of the downstream connection (except where a comment says it already passed). A
defect still open is marked ``xfail(strict=True)`` with what it shows, so it turns red
(XPASS) the moment it is fixed and the marker must be removed.
"""
from __future__ import annotations

import asyncio
import gzip
import json
import logging
import random
import socket
import threading
from contextlib import asynccontextmanager

import pytest

from pyproxy import ir
from pyproxy.dataplane.limits import DEFAULT, Limits
from pyproxy.runtime import Runtime, Settings
from pyproxy.translate.status import Result
from tests.conftest import destination, forward, listener
from tests.helpers.http import Upstream
from tests.helpers.proxy import proxy_routes, proxy_to
from tests.helpers.scripted import Reply, ok
from tests.helpers.wire import Truncated, Wire

MiB = 1 << 20


def prefix_route(port: int, prefix: str, name: str = "prefix") -> ir.Route:
    return forward(f"httproute/default/{name}/rule/0/match/0", destination(port),
                   match=ir.Match(ir.PathMatch("PathPrefix", prefix)))


@asynccontextmanager
async def raw_upstream(serve):
    """A raw asyncio upstream running ``serve(reader, writer)`` per connection; yields its port.
    Connections still open at the end are closed (their handlers cancelled)."""
    tasks: set[asyncio.Task] = set()
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader, writer):
        writers.append(writer)
        tasks.add(asyncio.current_task())
        try:
            await serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.wait_for(server.wait_closed(), 5)


async def read_all_responses(wire: Wire, limit: int = 10) -> list:
    """Responses until the connection ends (at most ``limit``)."""
    out = []
    for _ in range(limit):
        try:
            out.append(await wire.read_response())
        except Truncated as exc:
            assert not exc.partial, f"connection ended inside a response: {exc.partial[:200]!r}"
            break
    return out


# ---------------------------------------------------------------------------------------------
# defect 1: encoded slashes and backslashes bypass routes (Envoy Gateway: UNESCAPE_AND_REDIRECT)

ENCODED_SLASHES = [
    ("/public/..%2Fadmin", "/admin"),
    ("/public/%2e%2e%2Fadmin", "/admin"),
    ("/public/..%2fadmin", "/admin"),
    ("/public/..%5Cadmin", "/admin"),
    ("/public/..%5cadmin", "/admin"),
    ("/public/..%2Fadmin?x=1", "/admin?x=1"),
    ("/public/a%2Fb", "/public/a/b"),
]


@pytest.mark.parametrize("target, location", ENCODED_SLASHES, ids=[t for t, _ in ENCODED_SLASHES])
async def test_encoded_slash_is_redirected_to_the_normalised_path(upstream: Upstream, target, location):
    async with proxy_routes(prefix_route(upstream.port, "/public")) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % target.encode())
        resp = await wire.read_response()
        assert (resp.status, resp.header("location")) == (307, location), resp.raw[:300]
        await wire.close()
    assert upstream.seen == []


async def test_raw_backslash_path_does_not_reach_a_prefix_route(upstream: Upstream):
    """``/public\\..\\admin`` normalises to ``/admin``: no route for it, nothing forwarded."""
    async with proxy_routes(prefix_route(upstream.port, "/public")) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(b"GET /public\\..\\admin HTTP/1.1\r\nHost: a\r\n\r\n")
        resp = await wire.read_response()
        assert resp.status == 404
        await wire.close()
    assert upstream.seen == []


async def test_raw_backslash_path_is_normalised_before_forwarding(upstream: Upstream):
    async with proxy_to(upstream.port) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(b"GET /public\\..\\admin HTTP/1.1\r\nHost: a\r\n\r\n")
        resp = await wire.read_response()
        assert resp.status == 200
        await wire.close()
    assert [s.path for s in upstream.seen] == ["/admin"]


# ---------------------------------------------------------------------------------------------
# defect 2: X-Forwarded-For / X-Forwarded-Host split over several lines


def values(headers: list[tuple[str, str]], name: str) -> list[list[str]]:
    """Each line of header ``name`` as its comma-separated elements."""
    return [[p.strip() for p in v.split(",")] for k, v in headers if k == name]


async def test_duplicate_x_forwarded_for_lines_become_one(upstream: Upstream):
    async with proxy_to(upstream.port) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1\r\n"
                        b"X-Forwarded-For: 2.2.2.2\r\n\r\n")
        assert (await wire.read_response()).status == 200
        await wire.close()
    assert values(upstream.seen[0].headers, "x-forwarded-for") == [["1.1.1.1", "2.2.2.2", "127.0.0.1"]]


async def test_duplicate_x_forwarded_host_lines_become_one(upstream: Upstream):
    rewrite = ir.URLRewrite(hostname="backend.test")
    async with proxy_to(upstream.port, url_rewrite=rewrite) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(b"GET / HTTP/1.1\r\nHost: front.example\r\nX-Forwarded-Host: h1.example\r\n"
                        b"X-Forwarded-Host: h2.example\r\n\r\n")
        assert (await wire.read_response()).status == 200
        await wire.close()
    headers = upstream.seen[0].headers
    assert dict(headers)["host"] == "backend.test"
    assert values(headers, "x-forwarded-host") == [["h1.example", "h2.example", "front.example"]]


# ---------------------------------------------------------------------------------------------
# defect 3: a pipelining flood answered locally is buffered without bound


async def open_slow_reader(port: int, timeout: float = 5) -> Wire:
    """A client with a small receive buffer that (for now) does not read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), timeout)
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
    return Wire(reader, writer, timeout)


def buffered(rt) -> int:
    return sum(proto.transport.get_write_buffer_size() for proto in rt.context.connections)


async def test_pipelining_flood_answered_locally_is_bounded(upstream: Upstream):
    n = 30000
    request = b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n"  # no route: 404
    async with proxy_routes(prefix_route(upstream.port, "/api")) as (rt, port):
        flooder = await open_slow_reader(port)
        for _ in range(500):
            if rt.context.connections:
                break
            await asyncio.sleep(0.01)
        (proto,) = rt.context.connections
        # Loopback autotunes the proxy's send buffer to 4 MiB, which would swallow the whole
        # flood; a small one (a slow path to the client) makes the proxy's own buffering show.
        proto.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        flooder.writer.write(request * n)
        try:  # once the proxy stops reading, this drain cannot finish; either way is fine
            await asyncio.wait_for(flooder.writer.drain(), 1)
        except TimeoutError:
            pass
        # another client is served promptly meanwhile
        other = await Wire.open(port, timeout=2)
        for i in range(3):
            await other.send(b"GET /api/%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
            resp = await other.read_response()
            assert (resp.status, resp.json()["path"]) == (200, "/api/%d" % i)
        await other.close()
        # the flood has been processed as far as the proxy goes once the buffered total is stable
        peak, last, stable = 0, -1, 0
        for _ in range(200):
            size = buffered(rt)
            peak = max(peak, size)
            stable = stable + 1 if size == last else 0
            last = size
            if stable >= 10:
                break
            await asyncio.sleep(0.05)
        assert peak < 1 * MiB, f"{peak} bytes of responses buffered for a client that does not read"
        # the flooding client now reads: every request answered, in order, no corruption
        statuses = []
        async with asyncio.timeout(30):
            for _ in range(n):
                resp = await flooder.read_response()
                assert resp.raw.startswith(b"HTTP/1.1 404 ") and resp.body == b""
                statuses.append(resp.status)
        assert statuses == [404] * n
        await flooder.close()
    assert [s.path for s in upstream.seen] == ["/api/0", "/api/1", "/api/2"]


# ---------------------------------------------------------------------------------------------
# defect 6: an upstream's extra bytes become the answer to the next pipelined request

EVIL = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nEVIL"
POISONED = {
    "content-length": (b"GET", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok" + EVIL),
    "head-with-body": (b"HEAD", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n" + EVIL),
    "after-chunked": (b"GET", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n" + EVIL),
}


@pytest.mark.parametrize("variant", list(POISONED))
async def test_extra_upstream_bytes_never_answer_the_next_pipelined_request(scripted, variant):
    method, poisoned = POISONED[variant]

    def script(req):
        path = req.request_line.split(b" ")[1]
        if req.conn == 0 and path == b"/1":
            return poisoned
        return ok(b"real " + path)

    up = await scripted(script)
    async with proxy_to(up.port) as (rt, port):
        wire = await Wire.open(port, timeout=3)
        await wire.send(method + b" /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
        first = await wire.read_response(head=method == b"HEAD")
        assert (first.status, first.body) == (200, b"" if method == b"HEAD" else b"ok")
        second = await wire.read_response()
        assert b"EVIL" not in second.raw
        assert second.status == 502 or (second.status, second.body) == (200, b"real /2"), second.raw[:300]
        await wire.send(b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n")
        third = await wire.read_response()
        assert (third.status, third.body) == (200, b"real /3")
        await wire.close()
    # nothing after /1 was ever sent on the poisoned connection
    assert [r.request_line for r in up.requests if r.conn == 0] == [method + b" /1 HTTP/1.1"]
    assert up.connections == 2


# ---------------------------------------------------------------------------------------------
# defect 7: client-supplied x-envoy-* and x-forwarded-client-cert reach the upstream

ENVOY_HEADERS = ["x-envoy-retry-on", "x-envoy-upstream-rq-timeout-ms", "x-envoy-internal",
                 "x-envoy-original-path", "x-forwarded-client-cert"]


@pytest.mark.parametrize("name", ENVOY_HEADERS)
async def test_proxy_owned_headers_from_the_client_are_dropped(upstream: Upstream, name):
    async with proxy_to(upstream.port) as (rt, port):
        wire = await Wire.open(port)
        await wire.send(b"GET / HTTP/1.1\r\nHost: a\r\n%s: 1\r\nX-Keep: yes\r\n\r\n" % name.encode())
        assert (await wire.read_response()).status == 200
        await wire.close()
    headers = dict(upstream.seen[0].headers)
    assert headers["x-keep"] == "yes"
    assert name not in headers


# ---------------------------------------------------------------------------------------------
# defect 8: a pipelined partial request never times out


async def test_pipelined_partial_request_meets_the_header_deadline(upstream: Upstream):
    async with proxy_to(upstream.port, limits=Limits(header_timeout=0.3, idle_timeout=30)) as (rt, port):
        wire = await Wire.open(port, timeout=3)
        await wire.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nG")
        assert (await wire.read_response()).status == 200
        resp = await wire.read_response()
        assert resp.status == 408 and resp.header("connection") == "close"
        assert await wire.closed()
        await wire.close()
    assert len(upstream.seen) == 1


# ---------------------------------------------------------------------------------------------
# defect 11: stream idle timeout

NO_ROUTE_TIMEOUT = ir.Timeouts(request=None)


async def test_request_body_stalled_behind_upstream_gets_408():
    head_seen = asyncio.Event()
    release = asyncio.Event()

    async def serve(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        head_seen.set()
        await release.wait()  # never reads again, never answers

    size = 16 * MiB
    async with raw_upstream(serve) as up_port:
        limits = Limits(stream_idle_timeout=0.5)
        async with proxy_to(up_port, limits=limits, timeouts=NO_ROUTE_TIMEOUT) as (rt, port):
            wire = await Wire.open(port, timeout=3)
            wire.writer.write(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size)

            async def push():
                chunk = b"b" * (64 * 1024)
                for _ in range(size // len(chunk)):  # blocks once backpressure reaches the client
                    wire.writer.write(chunk)
                    await wire.writer.drain()

            pushing = asyncio.create_task(push())
            try:
                resp = await wire.read_response()
                assert resp.status == 408 and resp.header("connection") == "close"
                assert head_seen.is_set()
            finally:
                pushing.cancel()
                await asyncio.gather(pushing, return_exceptions=True)
            assert await wire.closed()
            await wire.close()
        release.set()


@pytest.mark.parametrize("partial", [
    b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n12345",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\n12345\r\n",
], ids=["content-length", "chunked"])
async def test_response_stalled_mid_body_is_cut(scripted, partial):
    up = await scripted(lambda req: Reply(partial, hang=True))
    limits = Limits(stream_idle_timeout=0.5)
    async with proxy_to(up.port, limits=limits, timeouts=NO_ROUTE_TIMEOUT) as (rt, port):
        wire = await Wire.open(port, timeout=3)
        await wire.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        with pytest.raises(Truncated) as info:
            await wire.read_response()
        assert info.value.partial.startswith(b"HTTP/1.1 200 OK\r\n")
        assert info.value.partial.endswith(b"12345") or info.value.partial.endswith(b"12345\r\n")
        await wire.close()


# ---------------------------------------------------------------------------------------------
# defect 12: requests after a closing response are still parsed and forwarded

NOPE_THEN_DELETE = {
    "body-in-same-write": [b"POST /nope HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"
                           b"helloDELETE /api/x HTTP/1.1\r\nHost: a\r\n\r\n"],
    "body-not-sent-yet": [b"POST /nope HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
                          b"helloDELETE /api/x HTTP/1.1\r\nHost: a\r\n\r\n"],
    "connection-close": [b"GET /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
                         b"DELETE /api/x HTTP/1.1\r\nHost: a\r\n\r\n"],
    "connection-close-with-body": [b"POST /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 5\r\n"
                                   b"\r\nhelloDELETE /api/x HTTP/1.1\r\nHost: a\r\n\r\n"],
}


@pytest.mark.parametrize("variant", list(NOPE_THEN_DELETE))
async def test_nothing_is_parsed_after_a_closing_response(upstream: Upstream, caplog, variant):
    caplog.set_level(logging.ERROR)
    async with proxy_routes(prefix_route(upstream.port, "/api")) as (rt, port):
        wire = await Wire.open(port, timeout=3)
        writes = NOPE_THEN_DELETE[variant]
        await wire.send(writes[0])
        resp = await wire.read_response()
        assert resp.status == 404 and resp.header("connection") == "close"
        for data in writes[1:]:
            try:
                await wire.send(data)
            except ConnectionError:
                pass
        assert await read_all_responses(wire) == []  # then EOF, nothing else
        await wire.close()
        # give the proxy a bounded moment to (not) forward anything
        for _ in range(20):
            if upstream.seen:
                break
            await asyncio.sleep(0.01)
    assert upstream.seen == []
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


# ---------------------------------------------------------------------------------------------
# defect 13: Transfer-Encoding: gzip, chunked from the upstream


GZIPPED = random.Random(13).randbytes(20000) * 5


def chunked(data: bytes, size: int = 8192) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + size]), data[i:i + size])
                    for i in range(0, len(data), size)) + b"0\r\n\r\n"


@pytest.mark.parametrize("te", [b"transfer-encoding: gzip, chunked\r\n",
                                b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"],
                         ids=["one-line", "two-lines"])
async def test_gzip_chunked_response_is_relayed_whole_or_502(scripted, te):
    """Accepted outcomes: the whole body with the gzip coding kept (the proxy redoes the
    chunked framing), or a 502. Never a truncated stream (``Truncated`` fails the test)."""
    response = b"HTTP/1.1 200 OK\r\n" + te + b"\r\n" + chunked(gzip.compress(GZIPPED))
    up = await scripted(lambda req: response)
    async with proxy_to(up.port) as (rt, port):
        wire = await Wire.open(port, timeout=5)
        await wire.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        resp = await wire.read_response()
        if resp.status != 502:
            assert resp.status == 200, resp.raw[:300]
            codings = [c.strip().lower() for v in resp.headers_named("transfer-encoding") for c in v.split(",")]
            assert codings == ["gzip", "chunked"], resp.raw[:300]
            assert gzip.decompress(resp.body) == GZIPPED
        await wire.close()


async def read_to_eof(wire: Wire, timeout: float = 5) -> bytes:
    out = bytearray(wire.buf)
    async with asyncio.timeout(timeout):
        while True:
            try:
                data = await wire.reader.read(1 << 16)
            except ConnectionError:
                break
            if not data:
                break
            out += data
    return bytes(out)


async def test_response_with_chunked_not_last_is_relayed_whole_or_502(scripted):
    """``Transfer-Encoding: chunked, gzip`` on a response: its body runs until the upstream
    closes (RFC 9112 §6.3). Accepted: the body relayed whole the same way (codings kept, ended
    by the close; chunked may not be applied twice), or a 502. Never a cut-short stream."""
    body = gzip.compress(chunked(GZIPPED))
    up = await scripted(lambda req: Reply(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n" + body,
                                          close=True))
    async with proxy_to(up.port) as (rt, port):
        wire = await Wire.open(port, timeout=5)
        await wire.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        while b"\r\n\r\n" not in wire.buf and await wire._fill():
            pass
        if not wire.buf.startswith(b"HTTP/1.1 502 "):  # a 502 may keep the connection open
            raw = await read_to_eof(wire)
            head, _, rest = raw.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 "), raw[:300]
            te = [line.split(b":", 1)[1].strip().lower() for line in head.split(b"\r\n")[1:]
                  if line.lower().startswith(b"transfer-encoding:")]
            assert te == [b"chunked, gzip"], head
            assert rest == body
        else:
            assert (await wire.read_response()).status == 502
        await wire.close()


# ---------------------------------------------------------------------------------------------
# defect 14: request trailers overwrite logged fields; trailer names are not checked


@asynccontextmanager
async def serve_logged(config: ir.Config, access_log: str, limits: Limits = DEFAULT):
    """Like ``serve_ir``, with the access log written to ``access_log``."""
    runtime = Runtime(Settings(config_paths=(), access_log=access_log, limits=limits))
    try:
        await runtime.serve(Result(config, ()))
        yield runtime
    finally:
        await runtime.stop()


async def test_request_trailers_do_not_change_the_access_log(tmp_path, upstream: Upstream):
    log_path = tmp_path / "access.log"
    route = forward("httproute/default/test/rule/0/match/0", destination(upstream.port))
    async with serve_logged(ir.Config((listener(route),)), str(log_path)) as rt:
        wire = await Wire.open(rt.ports[("127.0.0.1", 0)])
        await wire.send(b"POST /t HTTP/1.1\r\nHost: a\r\nUser-Agent: good-agent\r\nX-Forwarded-For: 10.1.1.1\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
                        b"User-Agent: evil\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n")
        resp = await wire.read_response()
        assert resp.status == 200 and resp.json()["body"] == "hello"
        await wire.close()
    (line,) = log_path.read_text().splitlines()
    entry = json.loads(line)
    assert entry["user-agent"] == "good-agent"
    assert "10.1.1.1" in entry["x-forwarded-for"]
    assert "6.6.6.6" not in line and "evil" not in line
    headers = dict(upstream.seen[0].headers)
    assert headers["user-agent"] == "good-agent" and "6.6.6.6" not in headers["x-forwarded-for"]


async def test_trailer_name_with_underscore_is_400(upstream: Upstream):
    async with proxy_to(upstream.port) as (rt, port):
        wire = await Wire.open(port, timeout=3)
        await wire.send(b"POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"5\r\nhello\r\n0\r\nbad_name: x\r\n\r\n")
        resp = await wire.read_response()
        assert resp.status == 400 and resp.header("connection") == "close"
        assert await wire.closed()
        await wire.close()
    assert upstream.seen == []


# ---------------------------------------------------------------------------------------------
# defect 17: an upstream's early answer becomes a 503


class EarlyAnswerUpstream:
    """An upstream in its own thread (so it runs truly concurrently with the proxy, as a real
    server does): reads a request head and the first ``read_first`` bytes of its body, answers
    413 with ``connection: close`` and closes without reading the rest (the kernel then resets
    the connection: unread data)."""

    ANSWER = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"

    def __init__(self, read_first: int = 0) -> None:
        self.read_first = read_first
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="early-answer-upstream", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.settimeout(5)
                got = b""
                try:
                    while b"\r\n\r\n" not in got and len(got) < 65536:
                        data = conn.recv(65536)
                        if not data:
                            break
                        got += data
                    body = len(got) - got.find(b"\r\n\r\n") - 4
                    while body < self.read_first:
                        data = conn.recv(min(65536, self.read_first - body))
                        if not data:
                            break
                        body += len(data)
                    conn.sendall(self.ANSWER)
                except OSError:
                    pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.mark.parametrize("size, read_first, attempts", [
    (64 * 1024, 0, 5),
    (4 * MiB, 256 * 1024, 30),
], ids=["64KiB", "4MiB"])
async def test_early_upstream_answer_is_relayed_not_503(size, read_first, attempts):
    """The client must get the upstream's 413 (as nginx relays it), never a 503. Whether the
    proxy reads the answer or first fails writing the body onto the reset connection is a race,
    so the exchange is repeated: every attempt must get the 413."""
    up = EarlyAnswerUpstream(read_first)
    try:
        async with proxy_to(up.port) as (rt, port):
            for attempt in range(attempts):
                wire = await Wire.open(port, timeout=5)
                wire.writer.write(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size)

                async def push(writer: asyncio.StreamWriter) -> None:
                    chunk = b"u" * (64 * 1024)
                    for _ in range(size // len(chunk)):
                        writer.write(chunk)
                        await writer.drain()

                pushing = asyncio.create_task(push(wire.writer))
                try:
                    resp = await wire.read_response()
                    assert resp.status == 413, (attempt, resp.raw[:300])
                finally:
                    pushing.cancel()
                    await asyncio.gather(pushing, return_exceptions=True)
                    await wire.close()
    finally:
        up.stop()


# ---------------------------------------------------------------------------------------------
# defect 18: HTTP/0.9, chunk extensions, the first header deadline


async def test_http09_request_line_is_400_at_once(upstream: Upstream):
    async with proxy_to(upstream.port, limits=Limits(header_timeout=10)) as (rt, port):
        wire = await Wire.open(port, timeout=2)
        await wire.send(b"GET /\r\n")
        resp = await wire.read_response()
        assert resp.status == 400 and resp.header("connection") == "close"
        assert await wire.closed()
        await wire.close()
    assert upstream.seen == []


async def test_chunk_extension_over_the_limit_is_400(upstream: Upstream):
    async with proxy_to(upstream.port) as (rt, port):
        wire = await Wire.open(port, timeout=3)
        await wire.send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"5;" + b"a" * 5000 + b"\r\nhello\r\n0\r\n\r\n")
        resp = await wire.read_response()
        assert resp.status == 400 and resp.header("connection") == "close"
        assert await wire.closed()
        await wire.close()
    assert upstream.seen == []


async def test_small_chunk_extension_is_accepted(upstream: Upstream):
    async with proxy_to(upstream.port) as (rt, port):
        wire = await Wire.open(port, timeout=3)
        await wire.send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"5;" + b"a" * 100 + b"\r\nhello\r\n0\r\n\r\n")
        resp = await wire.read_response()
        assert resp.status == 200 and resp.json()["body"] == "hello"
        await wire.close()
    assert [s.body for s in upstream.seen] == [b"hello"]


async def test_silent_new_connection_meets_the_header_deadline(upstream: Upstream):
    async with proxy_to(upstream.port, limits=Limits(header_timeout=0.3, idle_timeout=30)) as (rt, port):
        wire = await Wire.open(port, timeout=3)
        assert await wire.closed()
        await wire.close()

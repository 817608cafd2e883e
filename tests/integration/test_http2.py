"""HTTP/2 from clients, with real clients: curl (--http2 over TLS with ALPN,
--http2-prior-knowledge in clear), h2load, and an attacker written with the h2 library."""
from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import hpack
import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    WindowUpdateFrame,
)

from tests.conftest import serve_ir
from tests.dataplane.test_misdirected import FIRST, SECOND, listener_group
from tests.helpers.h2client import H2Client as AsyncH2Client
from tests.helpers.h2client import parse_frames
from tests.helpers.proxy import proxy_to

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args], capture_output=True, text=True, timeout=30)


async def test_prior_knowledge_in_clear_get_post_and_a_large_body(upstream):
    async with proxy_to(upstream.port) as (_, port):
        url = f"http://127.0.0.1:{port}"
        got = await asyncio.to_thread(curl, "--http2-prior-knowledge", "-i", f"{url}/hello?x=1")
        assert got.stdout.startswith("HTTP/2 200"), got.stdout + got.stderr
        assert "x-upstream: yes" in got.stdout
        posted = await asyncio.to_thread(curl, "--http2-prior-knowledge", "-d", "name=value", f"{url}/form")
        assert '"body": "name=value"' in posted.stdout, posted.stderr
        big = await asyncio.to_thread(curl, "--http2-prior-knowledge", "-o", "/dev/null", "-w",
                                      "%{http_version} %{http_code} %{size_download}", f"{url}/bytes/3000000")
        assert big.stdout == "2 200 3000000", big.stderr
        missing = await asyncio.to_thread(curl, "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}",
                                          f"{url}/status/404")
        assert missing.stdout == "404"
    seen = {s.path: s for s in upstream.seen}
    assert dict(seen["/hello?x=1"].headers)["x-forwarded-proto"] == "http"
    assert dict(seen["/form"].headers)["content-length"] == "10"


async def test_a_request_body_larger_than_every_window_arrives_whole(upstream, tmp_path):
    body = tmp_path / "body"
    body.write_bytes(b"b" * (5 << 20))
    async with proxy_to(upstream.port) as (_, port):
        sent = await asyncio.to_thread(curl, "--http2-prior-knowledge", "-H", "Content-Type: application/octet-stream",
                                       "--data-binary", f"@{body}", f"http://127.0.0.1:{port}/sink")
    assert sent.stdout == '{"received": 5242880}', sent.stderr
    assert upstream.sunk == 5 << 20


async def test_alpn_h2_on_an_https_listener_and_421_per_stream(ca, upstream, tmp_path):
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem.bytes())
    async with serve_ir(listener_group(ca, upstream.port)) as rt:
        port = rt.ports[("127.0.0.1", 0)]
        resolve = f"{FIRST}:{port}:127.0.0.1"
        url = f"https://{FIRST}:{port}/detect-misdirected-requests"
        ok = await asyncio.to_thread(curl, "--http2", "--cacert", str(ca_file), "--resolve", resolve, "-o", "/dev/null",
                                     "-w", "%{http_version} %{http_code}", url)
        misdirected = await asyncio.to_thread(curl, "--http2", "--cacert", str(ca_file), "--resolve", resolve,
                                              "-H", f"Host: {SECOND}", "-o", "/dev/null", "-w",
                                              "%{http_version} %{http_code}", url)
        http1 = await asyncio.to_thread(curl, "--http1.1", "--cacert", str(ca_file), "--resolve", resolve, "-o",
                                        "/dev/null", "-w", "%{http_version} %{http_code}", url)
    assert ok.stdout == "2 200", ok.stderr
    assert misdirected.stdout == "2 421", misdirected.stderr
    assert http1.stdout == "1.1 200", http1.stderr


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) is not installed")
async def test_h2load_10000_requests_on_10_connections_of_10_streams(upstream):
    async with proxy_to(upstream.port) as (_, port):
        run = await asyncio.to_thread(subprocess.run, ["h2load", "-n", "10000", "-c", "10", "-m", "10",
                                                       f"http://127.0.0.1:{port}/bytes/128"],
                                      capture_output=True, text=True, timeout=240)
    summary = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                        r"(\d+) errored, (\d+) timeout", run.stdout)
    assert summary is not None, run.stdout + run.stderr
    assert summary.groups() == ("10000", "10000", "10000", "0", "0", "0")
    assert "status codes: 10000 2xx" in run.stdout


def rapid_reset(port: int, streams: int) -> tuple[int, str]:
    """Open streams and reset each at once (CVE-2023-44487); returns how many were sent and
    how the connection ended: "calm" (the proxy's GOAWAY ENHANCE_YOUR_CALM was read), "reset"
    (the proxy closed it with frames of ours still unread, so the kernel reset it, and the
    GOAWAY may be lost with it), "closed" (an end without that GOAWAY) or "open" (still
    open 5 s after the last frame was sent)."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(conn.data_to_send())
        try:
            for _ in range(streams):
                sid = conn.get_next_available_stream_id()
                conn.send_headers(sid, [(":method", "GET"), (":path", "/"), (":scheme", "http"),
                                        (":authority", "a")])
                conn.reset_stream(sid)
                sock.sendall(conn.data_to_send())
                sent += 1
            while data := sock.recv(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ConnectionTerminated):
                        if event.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM:
                            return sent, "calm"
                sock.sendall(conn.data_to_send())
        except TimeoutError:
            return sent, "open"
        except (ConnectionError, h2.exceptions.ProtocolError):
            return sent, "reset"
    return sent, "closed"


async def test_a_rapid_reset_attack_is_cut_off_and_other_clients_are_served(upstream, caplog):
    async with proxy_to(upstream.port) as (_, port):
        attack = asyncio.create_task(asyncio.to_thread(rapid_reset, port, 2000))
        served = await asyncio.to_thread(curl, "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}",
                                         f"http://127.0.0.1:{port}/during")
        sent, ended = await asyncio.wait_for(attack, 60)
        after = await asyncio.to_thread(curl, "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}",
                                        f"http://127.0.0.1:{port}/after")
    # cut off after its first 100 resets: an attacker still sending is reset; one that sent
    # everything before the close reads the GOAWAY, or is reset with it unread
    assert ended in ("calm", "reset"), (sent, ended)
    cut = [r.getMessage() for r in caplog.records if "(rapid reset)" in r.getMessage()]
    assert len(cut) == 1 and "100 of 100 HTTP/2 streams reset by the client" in cut[0], cut
    assert (served.stdout, after.stdout) == ("200", "200")


class H2Client:
    """A blocking HTTP/2 client on one connection (the h2 library over a socket)."""

    def __init__(self, port: int) -> None:
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())

    def request(self, headers: list[tuple[str, str]]) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "a"),
                                     *headers], end_stream=True)
        self.sock.sendall(self.conn.data_to_send())
        return sid

    def events(self) -> list[h2.events.Event]:
        """Everything until the stream ends or the connection closes."""
        seen: list[h2.events.Event] = []
        while True:
            data = self.sock.recv(65536)
            if not data:
                return seen
            for event in self.conn.receive_data(data):
                seen.append(event)
                if isinstance(event, (h2.events.StreamEnded, h2.events.ConnectionTerminated)):
                    self.sock.sendall(self.conn.data_to_send())
                    return seen
            self.sock.sendall(self.conn.data_to_send())

    def close(self) -> None:
        self.sock.close()


async def test_cookie_crumbs_reach_an_http1_upstream_as_one_header(upstream):
    async with proxy_to(upstream.port) as (_, port):
        client = await asyncio.to_thread(H2Client, port)
        await asyncio.to_thread(client.request, [("cookie", "a=1"), ("cookie", "b=2")])
        events = await asyncio.to_thread(client.events)
        client.close()
    assert any(isinstance(e, h2.events.ResponseReceived) for e in events)
    assert [v for k, v in upstream.seen[0].headers if k == "cookie"] == ["a=1; b=2"]


async def test_a_drain_says_goaway_and_closes_an_idle_connection(upstream):
    async with proxy_to(upstream.port) as (rt, port):
        client = await asyncio.to_thread(H2Client, port)
        await asyncio.to_thread(client.request, [])
        await asyncio.to_thread(client.events)
        assert rt.context is not None
        cut = await rt.context.drain(5)
        events = await asyncio.to_thread(client.events)
        closed = await asyncio.to_thread(client.sock.recv, 10)
        client.close()
    assert cut == 0
    assert [type(e) for e in events] == [h2.events.ConnectionTerminated]
    assert closed == b""


async def test_a_stream_over_the_concurrency_limit_is_refused_alone(upstream):
    """100 streams at once are served; the 101st, sent before the client has read the
    proxy's SETTINGS, is refused alone (REFUSED_STREAM), and the connection goes on."""
    async with proxy_to(upstream.port) as (_, port):
        client = await AsyncH2Client.connect(port)
        try:
            sids = [await client.start("/delay/0.5") for _ in range(101)]
            responses = [await client.response(sid) for sid in sids]
            later = await client.request("/after")
        finally:
            await client.close()
    assert [r.reset for r in responses[:100]] == [None] * 100
    assert {r.status for r in responses[:100]} == {200}
    assert responses[100].reset == h2.errors.ErrorCodes.REFUSED_STREAM
    assert (later.reset, later.status) == (None, 200)
    assert len(upstream.seen) == 101  # the refused stream never went upstream


def frames_attack(port: int, runs: list[bytes], rcvbuf: int | None = None) -> tuple[bool, int | None]:
    """Send the client preface, then ``runs`` of serialized frames (one after another, as fast
    as the proxy reads them), never reading the proxy's answers until the end; returns whether
    the proxy closed the connection and the error code of the GOAWAY it sent, if one was read."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    with socket.socket() as sock:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        try:
            sock.sendall(client.data_to_send())
            for run in runs:
                sock.sendall(run)
        except (BrokenPipeError, ConnectionResetError):
            return True, None
        except TimeoutError:
            return False, None  # the proxy stopped reading and kept the connection
        code = None
        try:
            while data := sock.recv(65536):
                for frame in parse_frames(data):
                    if isinstance(frame, GoAwayFrame):
                        code = frame.error_code
        except ConnectionResetError:
            pass
        except TimeoutError:
            return False, code
    return True, code


def serialized(frames: list[Frame]) -> list[bytes]:
    """``frames`` as one run (sent at once, before the proxy can answer any of them)."""
    return [b"".join(f.serialize() for f in frames)]


def _headers(stream_id: int, end_stream: bool, end_headers: bool = True) -> HeadersFrame:
    encoder = hpack.Encoder()
    frame = HeadersFrame(stream_id, encoder.encode([(":method", "POST"), (":path", "/"), (":scheme", "http"),
                                                    (":authority", "a")]))
    for flag, wanted in (("END_STREAM", end_stream), ("END_HEADERS", end_headers)):
        if wanted:
            frame.flags.add(flag)
    return frame


@pytest.mark.parametrize(("flood", "frames"), [
    ("empty DATA frames", lambda: [_headers(1, end_stream=False), DataFrame(1), DataFrame(1), DataFrame(1)]),
    ("PRIORITY frames", lambda: [PriorityFrame(2 * i + 1, depends_on=0) for i in range(200)]),
    ("WINDOW_UPDATE frames", lambda: [WindowUpdateFrame(0, window_increment=1) for _ in range(100)]),
])
async def test_a_frame_flood_closes_the_connection_with_enhance_your_calm(upstream, flood, frames):
    async with proxy_to(upstream.port) as (_, port):
        closed, code = await asyncio.to_thread(frames_attack, port, serialized(frames()))
        served = await asyncio.to_thread(curl, "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}",
                                         f"http://127.0.0.1:{port}/after")
    assert closed, flood
    assert code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, flood
    assert served.stdout == "200"


async def test_a_continuation_flood_ends_at_64_frames(upstream):
    flood = [_headers(1, end_stream=True, end_headers=False)]
    flood += [ContinuationFrame(1, data=b"\x40\x01a\x01b") for _ in range(1000)]  # literal "a: b" each
    async with proxy_to(upstream.port) as (_, port):
        closed, code = await asyncio.to_thread(frames_attack, port, serialized(flood))
    assert closed
    assert code == h2.errors.ErrorCodes.PROTOCOL_ERROR
    assert upstream.seen == []


async def test_a_ping_flood_that_is_not_read_closes_the_connection(upstream):
    """The attacker never reads the PING acks (and keeps its receive buffer small): once the
    kernel holds what it will of them (4 MiB here) and more than 1000 wait in the proxy, the
    connection is closed; another client is served."""
    pings = [PingFrame(0, opaque_data=b"12345678").serialize() * 1000] * 600  # 10 MiB
    async with proxy_to(upstream.port) as (_, port):
        closed, _ = await asyncio.to_thread(frames_attack, port, pings, 4096)
        served = await asyncio.to_thread(curl, "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}",
                                         f"http://127.0.0.1:{port}/after")
    assert closed
    assert served.stdout == "200"


async def test_a_client_goaway_lets_its_streams_in_flight_finish(upstream):
    """A client that says GOAWAY (as a browser closing a tab's connection does) still gets the
    answers to the streams it opened before; then the proxy closes the connection."""
    async with proxy_to(upstream.port) as (_, port):
        client = await AsyncH2Client.connect(port)
        sid = await client.start("/delay/0.3")
        client.conn.close_connection()
        await client._flush()
        received = b""
        async with asyncio.timeout(10):
            while data := await client.reader.read(65536):
                received += data  # raw: h2 refuses to take frames once it has sent GOAWAY itself
        await client.close()
    frames = list(parse_frames(received))
    statuses = [hpack.Decoder().decode(f.data)[0] for f in frames if isinstance(f, HeadersFrame)]
    ended = [f.stream_id for f in frames if isinstance(f, DataFrame) and "END_STREAM" in f.flags]
    assert (statuses, ended) == ([(":status", "200")], [sid])

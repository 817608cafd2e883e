"""A listener's ClientSettings end to end on real sockets, HTTP/1.1 and HTTP/2 clients, real
upstreams: what the upstream receives (underscored headers, x-request-id, x-forwarded-for
and x-envoy-external-address, the normalised path), what the client gets (400, 307, 408, a
reset stream) and what the access log says."""
from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager

import h2.errors
import pytest

from pyproxy import ir
from tests.conftest import destination, forward, listener, serve_ir
from tests.helpers.h2client import H2Client
from tests.helpers.http import Client, Upstream
from tests.helpers.recorder import Held, response
from tests.helpers.wire import Wire

pytest_plugins = ["tests.helpers.recorder_fixture"]  # the ``recorder`` fixture


@asynccontextmanager
async def serve(upstream_port: int, log=None, **settings):
    """One HTTP listener with these client settings forwarding everything to the upstream;
    yields the port. ``log``: a path for the access log (read it after the block)."""
    async with serve_runtime(upstream_port, log, **settings) as rt:
        yield rt.ports[("127.0.0.1", 0)]


@asynccontextmanager
async def serve_runtime(upstream_port: int, log=None, **settings):
    """``serve``, yielding the runtime."""
    route = forward("httproute/default/test/rule/0/match/0", destination(upstream_port))
    config = ir.Config((listener(route, client=ir.ClientSettings(**settings)),))
    async with serve_ir(config, **({"access_log": str(log)} if log else {})) as rt:
        yield rt


def seen(resp) -> dict[str, str]:
    """The request headers the echoing upstream saw."""
    return dict(resp.json()["headers"])


def log_entries(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------ headers with underscores


async def test_underscores_reject_request_by_default(upstream: Upstream):
    async with serve(upstream.port) as port:
        wire = await Wire.open(port)
        await wire.send(b"GET / HTTP/1.1\r\nHost: a\r\nX_Token: 1\r\n\r\n")
        assert (await wire.read_response()).status == 400
        assert await wire.closed()
    assert upstream.seen == []


@pytest.mark.parametrize("action, forwarded", [("DropHeader", False), ("Allow", True)])
async def test_underscores_drop_or_allow(upstream: Upstream, action, forwarded):
    async with serve(upstream.port, headers_with_underscores=action) as port:
        client = await Client.connect(port)
        resp = await client.request("GET", "/", {"X_Token": "1", "X-Other": "2"})
        await client.close()
    assert resp.status == 200
    headers = seen(resp)
    assert ("x_token" in headers) is forwarded
    assert headers["x-other"] == "2"


async def test_underscores_on_http2(upstream: Upstream):
    """RejectRequest resets the stream (Envoy: RST_STREAM, no response) and the connection
    goes on; DropHeader leaves the header out; Allow forwards it."""
    async with serve(upstream.port) as port:
        client = await H2Client.connect(port)
        rejected = await client.request("/", headers=[(b"x_token", b"1")])
        fine = await client.request("/after")
        await client.close()
    assert rejected.reset == h2.errors.ErrorCodes.INTERNAL_ERROR and rejected.headers == []
    assert fine.status == 200
    assert [s.path for s in upstream.seen] == ["/after"]
    for action, forwarded in (("DropHeader", False), ("Allow", True)):
        async with serve(upstream.port, headers_with_underscores=action) as port:
            client = await H2Client.connect(port)
            resp = await client.request("/", headers=[(b"x_token", b"1")])
            await client.close()
        assert resp.status == 200
        assert ("x_token" in dict(json.loads(resp.body)["headers"])) is forwarded


async def test_max_request_header_bytes_on_http2(upstream: Upstream):
    """The listener's limit is what HTTP/2 enforces too: a header list over it closes the
    connection (h2's HPACK decoder; the default, 60 KiB, takes the same request)."""
    big = [(b"x-big", b"v" * 2000)]
    async with serve(upstream.port, max_request_header_bytes=1024) as port:
        client = await H2Client.connect(port)
        assert (await client.request("/small")).status == 200
        with pytest.raises(ConnectionError):
            await client.request("/big", headers=big)
        await client.close()
    async with serve(upstream.port) as port:
        client = await H2Client.connect(port)
        assert (await client.request("/big", headers=big)).status == 200
        await client.close()
    assert [s.path for s in upstream.seen] == ["/small", "/big"]


async def test_idle_timeout_on_http2(upstream: Upstream):
    """An HTTP/2 connection without a stream for the listener's idle timeout gets GOAWAY and
    is closed (the runtime's 60 s would keep it)."""
    async with serve(upstream.port, idle_timeout=0.3) as port:
        client = await H2Client.connect(port)
        assert (await client.request("/")).status == 200
        async with asyncio.timeout(5):
            while await client.reader.read(65536):
                pass
        await client.close()


# ------------------------------------------------------------------ x-request-id


CLIENT_ID = "client-chosen-id"


@pytest.mark.parametrize("mode, with_id, without_id", [
    ("Generate", "new", "new"),
    ("PreserveOrGenerate", CLIENT_ID, "new"),
    ("Preserve", CLIENT_ID, None),
    ("Disable", CLIENT_ID, None),
])
async def test_request_id(upstream: Upstream, tmp_path, mode, with_id, without_id):
    """Envoy's generate_request_id / preserve_external_request_id as Envoy Gateway sets them
    for each mode. Without generation Envoy leaves the header alone: the client's passes
    (Disable included) and none is added. The access log's x-request-id is what went upstream."""
    log = tmp_path / "access.log"
    async with serve(upstream.port, log=log, request_id=mode) as port:
        client = await Client.connect(port)
        given = seen(await client.request("GET", "/given", {"X-Request-Id": CLIENT_ID}))
        absent = seen(await client.request("GET", "/absent"))
        await client.close()
    for headers, expected in ((given, with_id), (absent, without_id)):
        value = headers.get("x-request-id")
        if expected == "new":
            assert value is not None and value != CLIENT_ID and len(value) == 36
        else:
            assert value == expected
    entries = {e["x-envoy-origin-path"]: e for e in log_entries(log)}
    assert entries["/given"]["x-request-id"] == given.get("x-request-id")
    assert entries["/absent"]["x-request-id"] == absent.get("x-request-id")


@pytest.mark.parametrize("mode, logged", [("Generate", "new"), ("PreserveOrGenerate", CLIENT_ID), ("Disable", CLIENT_ID)])
async def test_the_proxys_own_answers_log_the_request_id_and_trusted_client(upstream: Upstream, tmp_path, mode,
                                                                             logged):
    """A request answered by the proxy itself (here 403: an upgrade other than websocket) is
    logged with the request id and the trusted client address a forwarded one would carry."""
    log = tmp_path / "access.log"
    async with serve(upstream.port, log=log, request_id=mode, xff_trusted_hops=1) as port:
        client = await Client.connect(port)
        resp = await client.request("GET", "/local", {"X-Request-Id": CLIENT_ID, "X-Forwarded-For": "198.51.100.7",
                                                      "Connection": "Upgrade", "Upgrade": "foo"})
        await client.close()
    assert resp.status == 403 and upstream.seen == []
    (entry,) = log_entries(log)
    if logged == "new":
        assert entry["x-request-id"] != CLIENT_ID and len(entry["x-request-id"]) == 36
    else:
        assert entry["x-request-id"] == logged
    assert entry["downstream_remote_address"] == "198.51.100.7:0"


async def test_request_id_on_http2(upstream: Upstream):
    async with serve(upstream.port, request_id="PreserveOrGenerate") as port:
        client = await H2Client.connect(port)
        resp = await client.request("/", headers=[(b"x-request-id", CLIENT_ID.encode())])
        await client.close()
    assert dict(json.loads(resp.body)["headers"])["x-request-id"] == CLIENT_ID


# ------------------------------------------------------------------ x-forwarded-for, trusted hops

XFF = "203.0.113.128, 203.0.113.10, 203.0.113.1"


@pytest.mark.parametrize("hops, xff, trusted", [
    (0, XFF, None),  # today's behaviour: the peer is the client
    (1, XFF, "203.0.113.1"),
    (2, XFF, "203.0.113.10"),  # Envoy's docs, example 3
    (3, XFF, "203.0.113.128"),
    (4, XFF, None),  # fewer addresses than hops: the peer
    (2, "203.0.113.128, not-an-ip, 203.0.113.1", None),  # not an IP address: the peer
    (1, None, None),  # no x-forwarded-for at all
], ids=["0", "1", "2", "3", "4-too-few", "2-invalid", "1-absent"])
async def test_xff_trusted_hops(upstream: Upstream, tmp_path, hops, xff, trusted):
    """Envoy with use_remote_address and xff_num_trusted_hops N: the trusted client address
    is the Nth address from the right of the client's x-forwarded-for; the peer is appended
    all the same; x-envoy-external-address and the access log's downstream address are the
    trusted client address."""
    log = tmp_path / "access.log"
    async with serve(upstream.port, log=log, xff_trusted_hops=hops) as port:
        client = await Client.connect(port)
        resp = await client.request("GET", "/", {"X-Forwarded-For": xff} if xff else {})
        await client.close()
    headers = seen(resp)
    assert headers["x-forwarded-for"] == (xff + ", 127.0.0.1" if xff else "127.0.0.1")
    assert headers["x-envoy-external-address"] == (trusted or "127.0.0.1")
    (entry,) = log_entries(log)
    if trusted:
        assert entry["downstream_remote_address"] == trusted + ":0"
    else:
        assert entry["downstream_remote_address"].startswith("127.0.0.1:")


async def test_trusted_hops_trust_the_clients_forwarded_proto(upstream: Upstream):
    """With trusted hops, the x-forwarded-proto a trusted proxy set is kept (Envoy); with none
    it is replaced by the listener's scheme."""
    for hops, expected in ((0, "http"), (1, "https")):
        async with serve(upstream.port, xff_trusted_hops=hops) as port:
            client = await Client.connect(port)
            resp = await client.request("GET", "/", {"X-Forwarded-For": "198.51.100.7", "X-Forwarded-Proto": "https"})
            await client.close()
        assert seen(resp)["x-forwarded-proto"] == expected


async def test_trusted_hops_on_http2(upstream: Upstream):
    async with serve(upstream.port, xff_trusted_hops=1) as port:
        client = await H2Client.connect(port)
        resp = await client.request("/", headers=[(b"x-forwarded-for", b"198.51.100.7")])
        await client.close()
    headers = dict(json.loads(resp.body)["headers"])
    assert headers["x-envoy-external-address"] == "198.51.100.7"
    assert headers["x-forwarded-for"] == "198.51.100.7, 127.0.0.1"


# ------------------------------------------------------------------ path normalisation

@pytest.mark.parametrize("action, status, upstream_path", [
    ("UnescapeAndRedirect", 307, None),
    ("UnescapeAndForward", 200, "/admin?x=1"),
    ("RejectRequest", 400, None),
    ("KeepUnchanged", 200, "/public/..%2Fadmin?x=1"),
])
async def test_escaped_slashes(upstream: Upstream, action, status, upstream_path):
    async with serve(upstream.port, escaped_slashes=action) as port:
        client = await Client.connect(port)
        resp = await client.request("GET", "/public/..%2fadmin?x=1")
        after = await client.request("GET", "/next")  # a 400 or 307 of these does not close
        await client.close()
    assert resp.status == status
    if status == 307:
        assert resp.header("location") == "/admin?x=1"
    if status == 400:
        assert resp.body == b""
    assert after.status == 200
    assert [s.path for s in upstream.seen] == ([upstream_path] if upstream_path else []) + ["/next"]


async def test_merge_slashes_off_keeps_double_slashes(upstream: Upstream):
    async with serve(upstream.port, merge_slashes=False) as port:
        client = await Client.connect(port)
        kept = await client.request("GET", "/a//b/./c")
        await client.close()
    async with serve(upstream.port) as port:
        client = await Client.connect(port)
        merged = await client.request("GET", "/a//b/./c")
        await client.close()
    assert kept.json()["path"] == "/a//b/c"
    assert merged.json()["path"] == "/a/b/c"


async def test_escaped_slashes_on_http2(upstream: Upstream):
    async with serve(upstream.port, escaped_slashes="RejectRequest") as port:
        client = await H2Client.connect(port)
        resp = await client.request("/a%2Fb")
        await client.close()
    assert resp.status == 400 and upstream.seen == []


# ------------------------------------------------------------------ request timeout, buffer limit


async def test_request_timeout_cuts_a_body_that_keeps_trickling(recorder):
    """requestReceivedTimeout covers the body: a client that sends a byte now and then (so
    the body timeout never fires) gets 408 when the whole request is not in by then."""
    up = await recorder(response(200, b"ok"))
    async with serve(up.port, request_timeout=0.5) as port:
        wire = await Wire.open(port)
        await wire.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n")

        async def trickle() -> None:
            for _ in range(100):
                await wire.send(b"x")
                await asyncio.sleep(0.05)

        trickling = asyncio.create_task(trickle())
        try:
            resp = await wire.read_response()
        finally:
            trickling.cancel()
            await asyncio.gather(trickling, return_exceptions=True)
        assert resp.status == 408 and resp.body == b"request timeout"
        await wire.close()
    assert up.requests == []  # never complete upstream


async def test_request_timeout_on_http2(recorder):
    up = await recorder(response(200, b"ok"))
    async with serve(up.port, request_timeout=0.5) as port:
        client = await H2Client.connect(port)
        sid = await client.start("/", method="POST", end=False)
        await client.send(sid, b"part")
        resp = await client.response(sid)
        await client.close()
    assert resp.status == 408 and resp.body == b"request timeout"


async def test_request_timeout_stops_once_the_request_is_whole(recorder):
    gate = asyncio.get_running_loop().create_future()
    up = await recorder(Held(gate, response(200, b"late")))
    async with serve(up.port, request_timeout=0.2) as port:
        client = await Client.connect(port)
        task = asyncio.create_task(client.request("POST", "/", body=b"whole"))
        await up.wait_requests(1)
        await asyncio.sleep(0.5)  # well past the request timeout: the request was whole
        gate.set_result(None)
        resp = await asyncio.wait_for(task, 5)
        await client.close()
    assert resp.status == 200 and resp.body == b"late"


async def test_buffer_limit_pauses_a_waiting_request_body(recorder):
    """A pipelined request's body waits while the request before it is answered; the proxy
    stops reading once it holds more than the listener's buffer_limit (4 KiB here, the
    runtime's is 64 KiB). The body is sent a KiB at a time, each once the last was read."""
    gate = asyncio.get_running_loop().create_future()
    up = await recorder(Held(gate, response(200, b"first")), response(200, b"second"))
    route = forward("httproute/default/test/rule/0/match/0", destination(up.port))
    config = ir.Config((listener(route, client=ir.ClientSettings(buffer_limit=4096)),))
    async with serve_ir(config) as rt:
        wire = await Wire.open(rt.ports[("127.0.0.1", 0)])
        await wire.send(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n"
                        b"POST /second HTTP/1.1\r\nHost: a\r\nContent-Length: 16384\r\n\r\n")
        await up.wait_heads(1)
        (proto,) = rt.context.connections
        await until(lambda: len(proto.queue) == 2)
        waiting = proto.queue[1]
        sent = 0
        while not proto.reader.held:
            await wire.send(b"b" * 1024)
            sent += 1024
            await until(lambda done=sent: waiting.body_size == done or proto.reader.held)
        assert waiting.body_size == 5 * 1024  # the first read past 4 KiB
        await wire.send(b"b" * (16384 - sent))
        gate.set_result(None)
        assert (await wire.read_response()).body == b"first"
        assert (await wire.read_response()).body == b"second"
        await wire.close()
    assert up.requests[1].body == b"b" * 16384


async def until(predicate, timeout: float = 5) -> None:
    """Poll (bounded) until ``predicate()``."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


# ------------------------------------------------------------------ connection limit


async def refused(client: Client) -> bool:
    """The proxy closed the connection without answering (over the connection limit): the
    client's request gets no response, only the end of the connection."""
    try:
        await client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    except ConnectionError:
        return True
    return await client.closed()


async def test_connection_limit_closes_connections_over_it(upstream: Upstream):
    """N connections are served at once; one more is closed at once, as Envoy's connection
    limit filter does; those served are unharmed; once one closes, a new one is served."""
    async with serve_runtime(upstream.port, connection_limit=2) as rt:
        port = rt.ports[("127.0.0.1", 0)]
        served = [await Client.connect(port) for _ in range(2)]
        for client in served:
            assert (await client.request("GET", "/")).status == 200
        extra = [await Client.connect(port) for _ in range(2)]
        for client in extra:
            assert await refused(client)
            await client.close()
        assert sum(s.cx_limited for s in rt.stats.listeners.values()) == 2  # envoy_connection_limit_limited_connections
        for client in served:  # unharmed, and still keep-alive
            assert (await client.request("GET", "/again")).status == 200
        await served.pop().close()
        later = await until_served(port)
        assert (await later.request("GET", "/later")).status == 200
        for client in (*served, later):
            await client.close()


async def until_served(port: int, timeout: float = 5) -> Client:
    """A new connection that is served (bounded: the proxy learns of a closed connection a
    moment after the client closed it)."""
    async with asyncio.timeout(timeout):
        while True:
            client = await Client.connect(port)
            try:
                resp = await client.request("GET", "/")
            except ConnectionError:
                await client.close()
                await asyncio.sleep(0.01)
                continue
            assert resp.status == 200
            return client


async def test_connection_limit_counts_http2_connections(upstream: Upstream):
    async with serve(upstream.port, connection_limit=1) as port:
        h2client = await H2Client.connect(port)
        assert (await h2client.request("/")).status == 200
        other = await Client.connect(port)
        assert await refused(other)
        await other.close()
        await h2client.close()
        later = await until_served(port)
        await later.close()

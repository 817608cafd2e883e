"""The data plane end to end on hand-built IR: real sockets, real upstreams."""
from __future__ import annotations

from pyproxy import ir
from tests.conftest import destination, forward, listener, serve_ir
from tests.helpers.http import Client


async def test_forwards_get_and_keeps_connection(upstream):
    config = ir.Config((listener(forward("r", destination(upstream.port))),))
    async with serve_ir(config) as rt:
        port = rt.ports[("127.0.0.1", 0)]
        client = await Client.connect(port)
        for i in range(3):
            resp = await client.request("GET", f"/get?i={i}", {"X-Test": "v"})
            assert resp.status == 200
            seen = dict((k, v) for k, v in resp.json()["headers"])
            assert seen["host"] == "example.com"
            assert seen["x-test"] == "v"
            assert seen["x-forwarded-for"] == "127.0.0.1"
            assert seen["x-forwarded-proto"] == "http"
            assert len(seen["x-request-id"]) == 36
            assert resp.json()["path"] == f"/get?i={i}"
        await client.close()
        assert rt.pool.connects == 1

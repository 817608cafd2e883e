"""The floor: the least Python per request a proxy built like pyproxy can do, to compare
with pyproxy and nginx on the bench's small workload.

The same parts as pyproxy's forwarding path (uvloop, an ``asyncio.Protocol`` per side,
httptools parsing the request and the response, TLS to the upstream through the loop, one
keep-alive upstream connection per client connection) and nothing else: no routing, no
header rules, no limits, no deadlines, no stats, a fixed request head upstream and a fixed
response head downstream. It is not a proxy anyone should run; it answers "how fast could
pyproxy be if its own work cost nothing".

    ./dev bench --hold --targets nginx          # prints the upstream's port and the temp dir
    .venv/bin/python bench/floor.py --upstream 127.0.0.2:PORT \\
        --ca /tmp/pyproxy-bench-XXXX/nginx-upstream/ca.crt --listen 18300 &
    wrk -t2 -c50 -d10s -H 'Host: bench.example' http://127.0.0.1:18300/small

and read its CPU time per request from /proc/PID/stat as run.py does (utime + stime over
the requests). On 2026-12-03 (2 cores): 66 us/request and 15,050 req/s, against nginx's
35.5 us and 27,700 req/s (0.54x) and pyproxy's 250 us before issue 11's work.
"""
from __future__ import annotations

import argparse
import asyncio
import ssl

import httptools
import uvloop

UPSTREAM_NAME = "upstream.bench"


class Upstream(asyncio.Protocol):
    def __init__(self, down: Downstream) -> None:
        self.down = down
        self.parser = httptools.HttpResponseParser(self)
        self.body = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body = body

    def on_message_complete(self) -> None:
        self.down.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\ncontent-type: text/plain\r\n\r\n%s"
                                  % (len(self.body), self.body))


class Downstream(asyncio.Protocol):
    def __init__(self, address: tuple[str, int], context: ssl.SSLContext) -> None:
        self.address = address
        self.context = context
        self.upstream: Upstream | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_message_complete(self) -> None:
        request = b"GET %s HTTP/1.1\r\nhost: %s\r\nx-forwarded-for: 127.0.0.1\r\n\r\n" % (self.url, UPSTREAM_NAME.encode())
        if self.upstream is None:
            asyncio.ensure_future(self.connect(request))
        else:
            self.upstream.transport.write(request)

    async def connect(self, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        _, self.upstream = await loop.create_connection(lambda: Upstream(self), *self.address, ssl=self.context,
                                                        server_hostname=UPSTREAM_NAME)
        self.upstream.transport.write(request)


async def main(args: argparse.Namespace) -> None:
    host, _, port = args.upstream.rpartition(":")
    context = ssl.create_default_context(cafile=args.ca)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Downstream((host, int(port)), context), "127.0.0.1", args.listen)
    await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="the bench upstream's HOST:PORT (127.0.0.2:PORT)")
    parser.add_argument("--ca", required=True, help="the bench upstream's CA (nginx-upstream/ca.crt)")
    parser.add_argument("--listen", type=int, required=True, help="port on 127.0.0.1")
    uvloop.run(main(parser.parse_args()))

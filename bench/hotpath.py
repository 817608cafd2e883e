"""pyproxy's own Python per request, without sockets, TLS or a kernel in the way.

The bench's configuration (run.py's ``pyproxy_config``: HTTPRoute with a Host rewrite to a
Backend behind a BackendTLSPolicy) is loaded by the real ``Runtime``; one downstream
``HttpProtocol`` gets a fake transport; the pool's dialler is replaced by one that hands out
an ``UpstreamConnection`` on a fake transport, which is then fed nginx's answer to the small
request. Every request goes through the real reader, routing, upstream head, pool, response
relay, access-log bookkeeping and deadlines, in one thread, with nothing else running.

    .venv/bin/python bench/hotpath.py                # best of 7 batches, us/request
    .venv/bin/python bench/hotpath.py --profile      # and cProfile's top functions
    .venv/bin/python bench/hotpath.py --access-log /dev/null   # with the access log's lines made
    PYTHONPATH=../other .venv/bin/python bench/hotpath.py   # another checkout, for an A/B

What the live benchmark adds on top of this number is the event loop, TLS and the kernel
(run.py's CPU us/request). Timings only: nothing is asserted.
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

import trustme
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import ROUTE_HOST, pyproxy_config  # noqa: E402

from pyproxy.dataplane import pool as pool_module  # noqa: E402
from pyproxy.dataplane.server import HttpProtocol  # noqa: E402
from pyproxy.dataplane.upstream import PoolKey, UpstreamConnection  # noqa: E402
from pyproxy.runtime import Runtime, Settings  # noqa: E402

REQUEST = b"GET /small HTTP/1.1\r\nHost: " + ROUTE_HOST.encode() + b"\r\n\r\n"  # what wrk sends
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Thu, 03 Dec 2026 08:00:00 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 128\r\nConnection: keep-alive\r\n\r\n" + b"x" * 128)
BATCHES = 7


class Transport:
    """What the connections use of a transport; writes are kept (and dropped per batch)."""

    def __init__(self, extra: dict) -> None:
        self.extra = extra
        self.out: list[bytes] = []
        self.closing = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.extra.get(name, default)

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def writelines(self, pieces: list[bytes]) -> None:
        self.out.extend(pieces)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close

    def pause_reading(self) -> None:
        pass

    resume_reading = pause_reading

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass


async def main(args: argparse.Namespace) -> None:
    upstreams: list[UpstreamConnection] = []

    async def dial(self: pool_module.Pool, key: PoolKey, dest: object) -> UpstreamConnection:
        conn = UpstreamConnection(key, self.limits)
        conn.connection_made(Transport({}))  # type: ignore[arg-type]
        upstreams.append(conn)
        return conn

    pool_module.Pool._dial = dial  # type: ignore[method-assign,assignment]
    with tempfile.TemporaryDirectory(prefix="pyproxy-hotpath-") as tmp:
        (Path(tmp) / "bench.yaml").write_text(pyproxy_config(443, trustme.CA().cert_pem.bytes().decode()))
        runtime = Runtime(Settings(config_paths=(tmp,), listen=("127.0.0.1", 0), access_log=args.access_log))
        await runtime.start()
    ctx = runtime.context
    assert ctx is not None
    key = next(iter(ctx.snapshot.groups))
    down = Transport({"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", key[1])})
    proto = HttpProtocol(ctx, key, "http")
    proto.connection_made(down)  # type: ignore[arg-type]
    proto.data_received(REQUEST)
    await asyncio.sleep(0.05)  # the first request dials (a task)
    upstream = upstreams[0]
    size = len(RESPONSE)
    upstream._view[:size] = RESPONSE
    upstream.buffer_updated(size)
    assert not proto.queue, proto.queue  # each request is answered before the next, as wrk's are

    def run(n: int) -> None:
        data_received, view, answered = proto.data_received, upstream._view, upstream.buffer_updated
        for _ in range(n):
            data_received(REQUEST)
            view[:size] = RESPONSE
            answered(size)
        down.out.clear()
        upstream.transport.out.clear()  # type: ignore[attr-defined]

    run(1000)
    proto.data_received(REQUEST)
    upstream._view[:size] = RESPONSE
    upstream.buffer_updated(size)
    assert not proto.queue, proto.queue
    print("upstream request:", upstream.transport.out[0])  # type: ignore[attr-defined]
    print("response:        ", down.out[0][:200])
    profile = cProfile.Profile() if args.profile else None
    if profile is not None:
        profile.enable()
    times = []
    for _ in range(BATCHES):
        start = time.process_time()
        run(args.requests)
        times.append((time.process_time() - start) * 1e6 / args.requests)
    if profile is not None:
        profile.disable()
    times.sort()
    print(f"{times[0]:.1f} us/request of pyproxy's Python (best of {BATCHES} batches of {args.requests:,}; "
          f"median {times[BATCHES // 2]:.1f}){' under cProfile' if profile else ''}")
    if profile is not None:
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)
    ctx.forget(proto)  # (not cut by stop: it was never a socket)
    await runtime.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000, help="requests per batch (default 5000)")
    parser.add_argument("--profile", action="store_true", help="run under cProfile and print its top functions")
    parser.add_argument("--top", type=int, default=15, help="functions shown with --profile (default 15)")
    parser.add_argument("--access-log", default="off", metavar="PATH|off",
                        help="where the access log goes (default off, as in run.py; /dev/null measures "
                             "its formatting; the writer thread never runs here, the loop does not turn)")
    uvloop.run(main(parser.parse_args()))

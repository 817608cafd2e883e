"""The downstream connection's deadlines with the default limits, driven in memory: bytes in
through ``data_received``, the fake clock moved by hand, the bytes written read back. No
sockets and no sleeps, so the real 10 s / 60 s defaults are what is tested. (The body
deadline needs a request being forwarded: tests/dataplane/test_connection.py.)"""
from __future__ import annotations

from pyproxy.dataplane.limits import Limits
from tests.helpers.fakes import connection

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\n"


async def test_a_connection_that_sends_nothing_is_closed_at_the_header_deadline():
    proto, transport, loop = await connection()
    loop.advance(9)
    assert not transport.eof and not transport.closed
    loop.advance(2)  # 10 s plus the sweeper's granularity (at most a quarter, at most 1 s)
    assert transport.eof or transport.closed
    assert transport.take() == b""  # nothing to answer: it never sent a byte


async def test_a_partial_head_gets_408_at_the_header_deadline_however_it_trickles():
    proto, transport, loop = await connection()
    proto.data_received(b"GET / HTTP/1.1\r\n")
    for _ in range(8):  # a byte a second does not extend the deadline (slowloris)
        loop.advance(1)
        proto.data_received(b"X")
    loop.advance(3)
    out = transport.take()
    assert out.startswith(b"HTTP/1.1 408 ") and b"connection: close" in out
    assert transport.eof


async def test_the_deadline_of_a_head_counts_from_its_first_byte_not_from_the_accept():
    proto, transport, loop = await connection()
    loop.advance(8)
    proto.data_received(GET)
    assert transport.take().startswith(OK)
    loop.advance(20)
    proto.data_received(b"GET / HT")  # the second head starts: its own 10 s
    loop.advance(8)
    assert transport.take() == b""
    loop.advance(3)
    assert transport.take().startswith(b"HTTP/1.1 408 ")


async def test_a_pipelined_partial_head_meets_the_header_deadline():
    proto, transport, loop = await connection()
    proto.data_received(GET + b"G")
    assert transport.take().startswith(OK)
    loop.advance(11)
    out = transport.take()
    assert out.startswith(b"HTTP/1.1 408 ") and transport.eof


async def test_an_idle_keepalive_connection_closes_after_the_idle_timeout():
    proto, transport, loop = await connection()
    proto.data_received(GET)
    assert transport.take().startswith(OK)
    loop.advance(59)
    assert not transport.eof
    loop.advance(2)
    assert transport.eof and transport.take() == b""


async def test_an_answer_before_the_body_closes_without_reading_it():
    """Like Envoy on HTTP/1: the proxy answers, then closes instead of reading (and waiting
    for) the rest of the body; the body deadline never gets to matter."""
    proto, transport, loop = await connection()
    proto.data_received(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
    out = transport.take()
    assert out.startswith(OK) and b"connection: close" in out and transport.eof
    proto.data_received(b"GET /more HTTP/1.1\r\nHost: a\r\n\r\n")  # lingering input is discarded
    assert transport.take() == b""


async def test_limits_are_per_instance():
    proto, transport, loop = await connection(Limits(header_timeout=5, idle_timeout=5))
    proto.data_received(b"GET / HTTP/1.1\r\n")
    loop.advance(7)
    assert transport.take().startswith(b"HTTP/1.1 408 ")

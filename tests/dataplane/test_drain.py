"""``HttpProtocol.drain`` driven in memory: what a connection does when the process drains or
a reload removes its listener, in each state it can be in."""
from __future__ import annotations

from tests.helpers.fakes import connection

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


async def test_an_idle_keepalive_connection_closes_at_once():
    proto, transport, _ = await connection()
    proto.data_received(GET)
    assert b"connection: close" not in transport.take()
    proto.drain()
    assert transport.eof and transport.take() == b""


async def test_a_connection_that_has_not_sent_its_first_request_gets_it_answered_with_close():
    """It was accepted just before the socket stopped accepting: its request is on the way."""
    proto, transport, _ = await connection()
    proto.drain()
    assert not transport.eof
    proto.data_received(GET)
    out = transport.take()
    assert out.startswith(b"HTTP/1.1 200 ") and b"connection: close" in out
    assert transport.eof


async def test_a_head_arriving_is_answered_with_close_and_nothing_after_it_is_read():
    proto, transport, _ = await connection()
    proto.data_received(GET)
    transport.take()
    proto.data_received(b"GET / HT")
    proto.drain()
    assert not transport.eof
    proto.data_received(b"TP/1.1\r\nHost: a\r\n\r\n" + GET)
    out = transport.take()
    assert out.count(b"HTTP/1.1 200 ") == 1 and b"connection: close" in out
    assert transport.eof


async def test_drain_twice_and_after_close_is_harmless():
    proto, transport, _ = await connection()
    proto.data_received(GET)
    proto.drain()
    proto.drain()
    proto.connection_lost(None)
    proto.drain()
    assert transport.eof

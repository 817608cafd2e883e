"""``Context.call_later``: a far deadline is only noted until the sweep finds it near, and
still fires when it is due; one cancelled before then never becomes a loop timer. Driven
by the fake clock (the route timeout end to end is in test_upstream_failures.py)."""
from __future__ import annotations

from tests.helpers.fakes import connection


async def test_a_far_deadline_fires_when_due_not_at_a_sweep():
    proto, _, loop = await connection()
    ctx = proto.ctx
    fired: list[float] = []
    created = loop.time()
    timer = ctx.call_later(15.0, lambda: fired.append(loop.time()))
    assert timer.handle is None and timer in ctx.lazy_timers  # no loop timer yet
    loop.advance(14.99)
    assert fired == []
    assert timer.handle is not None and not ctx.lazy_timers  # armed once near
    loop.advance(0.01)
    assert fired == [created + 15.0]


async def test_a_near_deadline_is_a_loop_timer_at_once():
    proto, _, loop = await connection()
    fired: list[float] = []
    timer = proto.ctx.call_later(0.5, lambda: fired.append(loop.time()))
    assert timer.handle is not None and not proto.ctx.lazy_timers
    loop.advance(0.5)
    assert fired == [loop.time()]


async def test_a_cancelled_deadline_never_fires_and_is_forgotten():
    proto, _, loop = await connection()
    ctx = proto.ctx
    fired: list[str] = []
    far = ctx.call_later(15.0, lambda: fired.append("far"))
    near = ctx.call_later(0.5, lambda: fired.append("near"))
    far.cancel()
    near.cancel()
    assert not ctx.lazy_timers
    loop.advance(30.0)
    assert fired == []


async def test_a_deadline_armed_then_cancelled_never_fires():
    proto, _, loop = await connection()
    ctx = proto.ctx
    fired: list[str] = []
    timer = ctx.call_later(15.0, lambda: fired.append("x"))
    loop.advance(14.0)
    assert timer.handle is not None  # near: a loop timer now
    timer.cancel()
    loop.advance(5.0)
    assert fired == []

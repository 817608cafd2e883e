"""The connection's state tables (``states.py``): named members, the transitions the tables
allow, and an ``InvalidTransition`` naming both sides for any other."""
from __future__ import annotations

import pytest

from pyproxy.dataplane.states import KEEP_ALIVE, REQUEST, RESPONSE, Conn, Ev, InvalidTransition, Req, Resp, step


def test_members_are_named_ints_in_declaration_order():
    assert [(int(m), m.name) for m in (Req.HEAD, Req.BODY, Req.DONE)] == [(0, "HEAD"), (1, "BODY"), (2, "DONE")]
    assert (Resp.QUEUED, Resp.DONE) == (0, 4) and Ev.CLOSE == 12 and Conn.CLOSING == 2
    assert repr(Resp.SENDING) == "<Resp.SENDING: 3>"
    assert type(Req.DONE) is Req and isinstance(Ev.HEAD, int)


def test_each_table_covers_every_state_of_its_machine_with_its_own_kind():
    for table, kind, states in ((REQUEST, Req, (Req.HEAD, Req.BODY, Req.DONE)),
                                (RESPONSE, Resp, (Resp.QUEUED, Resp.ROUTING, Resp.WAITING, Resp.SENDING, Resp.DONE)),
                                (KEEP_ALIVE, Conn, (Conn.OPEN, Conn.LAST, Conn.CLOSING))):
        assert set(table) == set(states)
        for moves in table.values():
            assert all(type(event) is Ev and type(after) is kind for event, after in moves.items())


def test_step_follows_the_tables():
    assert step(REQUEST, Req.HEAD, Ev.HEAD_BODY) is Req.BODY
    assert step(RESPONSE, Resp.WAITING, Ev.HEAD) is Resp.SENDING
    assert step(KEEP_ALIVE, Conn.OPEN, Ev.LAST) is Conn.LAST


def test_a_transition_no_table_lists_is_an_error_naming_event_and_state():
    with pytest.raises(InvalidTransition, match="^END in state QUEUED$"):
        step(RESPONSE, Resp.QUEUED, Ev.END)
    with pytest.raises(InvalidTransition, match="^BODY_END in state DONE$"):
        step(REQUEST, Req.DONE, Ev.BODY_END)

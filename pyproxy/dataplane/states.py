"""The states of a downstream HTTP/1.1 connection, written as tables (after h11's
``_state.py``).

Three small machines, each a table of ``state -> {event: next state}``:

``REQUEST`` — how much of an exchange's request the client has sent::

    HEAD --HEAD_DONE--> DONE              (no body)
    HEAD --HEAD_BODY--> BODY --BODY_END--> DONE

``RESPONSE`` — how far its answer has got::

    QUEUED --START--> ROUTING --FORWARD--> WAITING --HEAD--> SENDING --END--> DONE
    QUEUED --LOCAL--> DONE   (a protocol error before it was routed)
                      ROUTING --LOCAL--> DONE          WAITING --LOCAL--> DONE
                                                       WAITING --RETRY--> WAITING
                                                       SENDING --RESET--> DONE
    ROUTING/WAITING/SENDING --LOST--> DONE   (the client went away)

``KEEP_ALIVE`` — whether the connection takes further requests::

    OPEN --LAST--> LAST     (Connection: close, HTTP/1.0 without keep-alive, Upgrade)
    OPEN/LAST --CLOSE--> CLOSING   (an error, an unread request body, a close-delimited
                                    or reset response, a deadline)

An event a table does not list for the current state is a bug in the caller, not a client's
doing: ``step`` raises ``InvalidTransition`` (the connection answers 500 and closes), so a
wrong combination can never silently carry on the way the old combinations of flags could.

The questions the connection asks are answered from these states alone:

- read more bytes? — the active request is in ``HEAD``/``BODY``, or the connection is
  ``OPEN`` and may parse the next request (``Connection.may_parse``);
- write? — only the exchange at the head of the queue, while its response is not ``DONE``;
- start the next exchange? — the previous one is ``DONE`` on both sides and the connection
  is not ``CLOSING``;
- close? — after the last response when ``KEEP_ALIVE`` is not ``OPEN``.
"""
from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TypeVar


class InvalidTransition(Exception):
    """An event that the current state does not allow (a bug, reported as a 500)."""


# IntEnums: the tables are looked up per request, and a plain Enum hashes in Python code.


class Req(enum.IntEnum):
    HEAD = 0
    BODY = 1
    DONE = 2


class Resp(enum.IntEnum):
    QUEUED = 0
    ROUTING = 1
    WAITING = 2
    SENDING = 3
    DONE = 4


class Conn(enum.IntEnum):
    OPEN = 0
    LAST = 1
    CLOSING = 2


class Ev(enum.IntEnum):
    # request side
    HEAD_DONE = 0  # head complete, no body follows
    HEAD_BODY = 1  # head complete, a body follows
    BODY_END = 2
    # response side
    START = 3  # the exchange reached the head of the queue
    FORWARD = 4  # routed to a backend
    LOCAL = 5  # answered by the proxy itself
    RETRY = 6  # the attempt's answer is dropped and the request sent again
    HEAD = 7  # the response head left (or is held to leave with its body)
    END = 8  # the response is complete
    RESET = 9  # the response was cut short (the connection closes)
    LOST = 10  # the client went away
    # keep-alive
    LAST = 11  # the client will send no further request
    CLOSE = 12  # the connection closes after what is being answered


REQUEST: dict[Req, dict[Ev, Req]] = {
    Req.HEAD: {Ev.HEAD_DONE: Req.DONE, Ev.HEAD_BODY: Req.BODY},
    Req.BODY: {Ev.BODY_END: Req.DONE},
    Req.DONE: {},
}

RESPONSE: dict[Resp, dict[Ev, Resp]] = {
    Resp.QUEUED: {Ev.START: Resp.ROUTING, Ev.LOCAL: Resp.DONE},
    Resp.ROUTING: {Ev.FORWARD: Resp.WAITING, Ev.LOCAL: Resp.DONE, Ev.LOST: Resp.DONE},
    Resp.WAITING: {Ev.HEAD: Resp.SENDING, Ev.LOCAL: Resp.DONE, Ev.RETRY: Resp.WAITING, Ev.LOST: Resp.DONE},
    Resp.SENDING: {Ev.END: Resp.DONE, Ev.RESET: Resp.DONE, Ev.LOST: Resp.DONE},
    Resp.DONE: {},
}

KEEP_ALIVE: dict[Conn, dict[Ev, Conn]] = {
    Conn.OPEN: {Ev.LAST: Conn.LAST, Ev.CLOSE: Conn.CLOSING},
    Conn.LAST: {Ev.LAST: Conn.LAST, Ev.CLOSE: Conn.CLOSING},
    Conn.CLOSING: {Ev.LAST: Conn.CLOSING, Ev.CLOSE: Conn.CLOSING},
}


S = TypeVar("S", Req, Resp, Conn)


def step(table: Mapping[S, Mapping[Ev, S]], state: S, event: Ev) -> S:
    """The state after ``event``; raises ``InvalidTransition`` when the table has no entry."""
    try:
        return table[state][event]
    except KeyError:
        raise InvalidTransition(f"{event.name} in state {state.name}") from None

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

from collections.abc import Mapping
from typing import ClassVar, TypeVar

T = TypeVar("T", bound="State")


class InvalidTransition(Exception):
    """An event that the current state does not allow (a bug, reported as a 500)."""


class State(int):
    """A named member of one of the machines below: an ``int`` with a name, as an
    ``enum.IntEnum`` member would be, but without ``EnumType``. On Python 3.11 that metaclass
    has a ``__getattr__``, which makes every ``Resp.DONE`` a slow lookup (210 ns against 40 ns
    for a plain class attribute); a request reads about 30 of them (measured 6 us a request).
    Members are made once, by ``_members``, and compared by identity."""

    name: str

    def __repr__(self) -> str:
        return f"<{type(self).__name__}.{self.name}: {int(self)}>"

    __str__ = __repr__


def _members(cls: type[T]) -> type[T]:
    """Replace the class's declared member names (``HEAD: ClassVar[Req]``) by members numbered
    in declaration order."""
    for value, name in enumerate(cls.__annotations__):
        member = cls(value)
        member.name = name
        setattr(cls, name, member)
    return cls


@_members
class Req(State):
    HEAD: ClassVar[Req]
    BODY: ClassVar[Req]
    DONE: ClassVar[Req]


@_members
class Resp(State):
    QUEUED: ClassVar[Resp]
    ROUTING: ClassVar[Resp]
    WAITING: ClassVar[Resp]
    SENDING: ClassVar[Resp]
    DONE: ClassVar[Resp]


@_members
class Conn(State):
    OPEN: ClassVar[Conn]
    LAST: ClassVar[Conn]
    CLOSING: ClassVar[Conn]


@_members
class Ev(State):
    HEAD_DONE: ClassVar[Ev]  # head complete, no body follows
    HEAD_BODY: ClassVar[Ev]  # head complete, a body follows
    BODY_END: ClassVar[Ev]
    START: ClassVar[Ev]  # the exchange reached the head of the queue
    FORWARD: ClassVar[Ev]  # routed to a backend
    LOCAL: ClassVar[Ev]  # answered by the proxy itself
    RETRY: ClassVar[Ev]  # the attempt's answer is dropped and the request sent again
    HEAD: ClassVar[Ev]  # the response head left (or is held to leave with its body)
    END: ClassVar[Ev]  # the response is complete
    RESET: ClassVar[Ev]  # the response was cut short (the connection closes)
    LOST: ClassVar[Ev]  # the client went away
    LAST: ClassVar[Ev]  # the client will send no further request
    CLOSE: ClassVar[Ev]  # the connection closes after what is being answered


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

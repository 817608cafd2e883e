"""The one place ``explain`` drives the data plane, with the calls the HTTP/1.1 server makes
(``dataplane/server.py``): the request bytes through ``RequestReader`` (so the 400s, the Host
rules and path normalisation are the real ones), an ``Exchange`` through ``decide``, and the
request that would leave through ``upstream_request``. Nothing here binds a socket, asks DNS
or reads a clock that matters."""
from __future__ import annotations

from dataclasses import dataclass

from ..dataplane.client import ClientPolicy
from ..dataplane.compile import CompiledBackend, CompiledRoute, Snapshot
from ..dataplane.decide import Local, decide
from ..dataplane.encode import UpstreamRequest, upstream_request
from ..dataplane.exchange import Exchange
from ..dataplane.framing import RequestHead, RequestReader
from ..errors import ProxyError

REQUEST_ID = b"<generated>"  # serve makes a random one per request


class _Head:
    """A ``RequestHandler`` that keeps the head (the body, if any, is not needed)."""

    head: RequestHead | None = None

    def request_head(self, head: RequestHead) -> None:
        self.head = head

    def request_body(self, data: bytes) -> None:
        pass

    def request_end(self) -> None:
        pass


def read_head(data: bytes, policy: ClientPolicy) -> RequestHead:
    """The validated head of a complete request head, read under the connection's client
    settings (``PortGroup.listener_for``); raises the ``ProxyError`` the server answers a
    malformed one with."""
    handler = _Head()
    RequestReader(handler, policy.limits, policy.rules).feed(data)
    if handler.head is None:
        raise ValueError("incomplete request head")  # request_bytes always ends the head
    return handler.head


@dataclass(frozen=True, slots=True)
class Routed:
    """What ``decide`` made of the exchange: a local answer, an error to answer with, or
    neither (forward: ``exchange.route`` and ``exchange.backend`` are set). ``exchange.route``
    is also set when the error is about the backend picked (``InvalidBackend``)."""

    exchange: Exchange
    local: Local | None = None
    error: ProxyError | None = None


def route(snapshot: Snapshot, group_key: tuple[str, int], sni: str | None, scheme: str, head: RequestHead) -> Routed:
    ex = Exchange(head)
    if head.upgrade and head.upgrade != b"websocket":
        # server.py answers this before routing: Envoy's default upgrade_configs allow websocket only
        return Routed(ex, Local(403, details="upgrade_failed"))
    try:
        local = decide(snapshot, group_key, sni, scheme, ex)
    except ProxyError as exc:
        return Routed(ex, error=exc)
    return Routed(ex, local)


def leaving(ex: Exchange, compiled: CompiledRoute, backend: CompiledBackend, client_ip: str,
            scheme: str, policy: ClientPolicy) -> UpstreamRequest:
    """The request as it would leave for ``backend``, from a client at ``client_ip``; a
    request id the proxy would make up reads ``<generated>``."""
    sent = upstream_request(ex, compiled, backend, client_ip.encode(), scheme.encode(), policy)
    made_up = ex.request_id.encode("latin-1") if ex.request_id else None
    client_ids = [v for n, v in ex.head.headers if n == b"x-request-id"]
    if made_up is not None and not (policy.preserve_id and client_ids):
        sent.headers = [(n, REQUEST_ID if n == b"x-request-id" and v == made_up else v) for n, v in sent.headers]
    return sent

"""Choosing an endpoint of a destination: Envoy's load balancers over the hosts that are
healthy, with its panic threshold and slow start.

A ``Balancer`` keeps a ``View`` of the destination's current addresses: each with its
``HostStats`` (which outlive snapshots, ``stats.py``), the ``live`` ones requests go to, and
for ConsistentHash the ring. The view is rebuilt only when the addresses (a new DNS answer)
or the cluster's ``version`` (a host's health, a member joining) change, so a pick is a
couple of attribute reads and random numbers, and allocates nothing.

- ``live`` is the healthy hosts, or every host when fewer than ``panic_threshold`` percent
  are healthy (Envoy's panic mode: better to try them all than to overload the few left);
  with a threshold of 0 and no healthy host it is empty, and the request gets 503 ``no
  healthy upstream``.
- RoundRobin takes the live hosts in turn; Random one at random; LeastRequest the one with
  fewer active requests of two distinct hosts drawn at random (Envoy draws its two with
  replacement; two distinct ones never prefer the busier of two).
- ConsistentHash places each live host on a ring of hashes (Ketama's: 160 points per host,
  each hashing the host's address and its number, so the points of the others stay where they
  are when one leaves and only its keys move; Envoy Gateway's default is Maglev, whose table
  moves a few more). A request's key
  (client address, a header, or a cookie) goes to the first point at or after its hash; a
  request without one is balanced as by Random. A missing cookie with a ``cookie_ttl`` is
  made up as Envoy does (a hash of the client's and the listener's addresses) and set on
  the response.
- Slow start (RoundRobin and LeastRequest, as in Envoy): for ``slow_start_window`` seconds
  after a host joins (or passes its active health check again) its weight is
  ``max(0.1, elapsed / window)`` (Envoy's aggression 1.0 and 10 % minimum weight); weighted
  round robin is the smooth kind (nginx's), weighted least request picks at random by
  ``weight / (active requests + 1)``.
"""
from __future__ import annotations

import bisect
import itertools
import random
import time
from collections.abc import Callable
from typing import Protocol

from .. import ir
from ..stats import ClusterStats, HostStats, Target

Entry = tuple[Target, HostStats]
_random = random.random
POINTS_PER_HOST = 160  # Ketama's
SLOW_START_MIN_WEIGHT = 0.1  # Envoy's min_weight_percent, 10 %


def hash64(data: bytes) -> int:
    """A 64-bit hash that is the same in every process (``hash()`` is salted per process,
    and workers must agree on where a key goes)."""
    # imported here, by the first hashing balancer: hashlib's OpenSSL digest table is 0.6 MiB
    # of every serving process's RSS otherwise
    from hashlib import blake2b

    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")


class Client(Protocol):
    """What hashing needs of the client's side: its address (``peer_b`` without the port,
    ``peer`` with it) and the listener's (``local``)."""

    @property
    def peer(self) -> str: ...

    @property
    def peer_b(self) -> bytes: ...

    @property
    def local(self) -> str: ...


class View:
    """The addresses a balancer last saw, as of cluster ``version``."""

    __slots__ = ("addresses", "version", "entries", "live", "panic", "hashes", "owners", "slow_until", "current")

    def __init__(self, addresses: tuple[Target, ...], version: int, entries: tuple[Entry, ...],
                 live: tuple[Entry, ...], panic: bool) -> None:
        self.addresses = addresses
        self.version = version
        self.entries = entries
        self.live = live
        self.panic = panic
        self.hashes: list[int] = []  # the ring (ConsistentHash), sorted, and the host of each point
        self.owners: list[Entry] = []
        self.slow_until = 0.0  # until when a live host is in slow start (0: none is)
        self.current = [0.0] * len(live)  # smooth weighted round robin's running weights


def ring(live: tuple[Entry, ...]) -> tuple[list[int], list[Entry]]:
    """Points hashing ``host:port_i`` for each live host, sorted, and the host of each."""
    points = sorted((hash64(b"%s:%d_%d" % (entry[0][0].encode(), entry[0][1], i)), n)
                    for n, entry in enumerate(live) for i in range(POINTS_PER_HOST))
    return [point for point, _ in points], [live[n] for _, n in points]


class Balancer:
    """One destination's endpoint choice (see the module docstring)."""

    __slots__ = ("stats", "kind", "panic_threshold", "window", "hash_on", "header", "cookie_name", "cookie_ttl",
                 "cookie_path", "clock", "_view", "_rr", "_choose")

    def __init__(self, dest: ir.Destination, stats: ClusterStats,
                 clock: Callable[[], float] = time.monotonic) -> None:
        lb = dest.load_balancer
        self.stats = stats
        self.kind = lb.kind
        self.panic_threshold = dest.panic_threshold
        slow = lb.slow_start_window if lb.kind in ("RoundRobin", "LeastRequest") else None
        self.window = slow or 0.0
        chash = lb.consistent_hash if lb.kind == "ConsistentHash" else None
        self.hash_on = chash.on if chash is not None else None
        name = (chash.name or "") if chash is not None else ""
        self.header = name.lower().encode("latin-1")
        self.cookie_name = name.encode("latin-1")  # cookie names are case-sensitive
        self.cookie_ttl = chash.cookie_ttl if chash is not None else None
        self.cookie_path = chash.cookie_path if chash is not None else None
        self.clock = clock
        self._view: View | None = None
        self._rr = itertools.count()
        self._choose: Callable[[View, int | None], Entry] = {
            "RoundRobin": self._round_robin, "Random": self._random, "LeastRequest": self._least_request,
            "ConsistentHash": self._hashed}[lb.kind]

    # ------------------------------------------------------------------ picking

    def pick(self, addresses: tuple[Target, ...], key: int | None = None) -> Entry | None:
        """The endpoint for a request (``key``: its hash, for ConsistentHash), with its
        stats; None when no host may be used (every one unhealthy and no panic)."""
        view = self._view
        if view is None or view.addresses is not addresses or view.version != self.stats.version:
            view = self._view = self.view(addresses)
        live = view.live
        n = len(live)
        if n > 1 and not view.slow_until and not view.panic:
            return self._choose(view, key)
        if not n:
            return None
        if view.panic:
            self.stats.lb_healthy_panic += 1
        if n == 1:
            return live[0]
        if view.slow_until:
            now = self.clock()
            if now < view.slow_until:
                return self._slow(view, now)
            view.slow_until = 0.0
        return self._choose(view, key)

    def _round_robin(self, view: View, key: int | None) -> Entry:
        live = view.live
        return live[next(self._rr) % len(live)]

    def _random(self, view: View, key: int | None) -> Entry:
        live = view.live
        return live[int(_random() * len(live))]

    def _least_request(self, view: View, key: int | None) -> Entry:
        live = view.live
        n = len(live)
        r = _random() * n  # one random number for both draws: its fraction past the first is uniform too
        first = int(r)
        second = int((r - first) * (n - 1))
        if second >= first:
            second += 1
        a, b = live[first], live[second]
        return b if b[1].rq_active < a[1].rq_active else a

    def _hashed(self, view: View, key: int | None) -> Entry:
        if key is None:
            return self._random(view, key)
        at = bisect.bisect_left(view.hashes, key)
        return view.owners[at if at < len(view.owners) else 0]

    def _slow(self, view: View, now: float) -> Entry:
        """A pick weighted by slow start (see the module docstring)."""
        live = view.live
        window = self.window
        weights = [max(SLOW_START_MIN_WEIGHT, elapsed / window) if (elapsed := now - host.joined_at) < window
                   else 1.0 for _, host in live]
        if self.kind == "RoundRobin":
            current = view.current
            total = 0.0
            best = 0
            for i, weight in enumerate(weights):
                current[i] += weight
                total += weight
                if current[i] > current[best]:
                    best = i
            current[best] -= total
            return live[best]
        loads = [weight / (host.rq_active + 1) for weight, (_, host) in zip(weights, live, strict=True)]
        return random.choices(live, loads)[0]

    # ------------------------------------------------------------------ the view

    def view(self, addresses: tuple[Target, ...]) -> View:
        """The hosts of ``addresses`` as of now (members joining are recorded)."""
        stats = self.stats
        now = self.clock()
        stats.sync_members(addresses, now)
        entries = tuple((target, stats.host(target)) for target in addresses)
        healthy = tuple(entry for entry in entries if not entry[1].health)
        panic = len(healthy) * 100 < self.panic_threshold * len(entries)
        view = View(addresses, stats.version, entries, entries if panic else healthy, panic)
        if view.live and self.hash_on is not None:
            view.hashes, view.owners = ring(view.live)
        if self.window and view.live:
            view.slow_until = max(host.joined_at for _, host in view.live) + self.window
        return view

    # ------------------------------------------------------------------ ConsistentHash keys

    def request_key(self, headers: list[tuple[bytes, bytes]], client: Client,
                    trusted: str | None = None) -> tuple[int | None, bytes | None]:
        """A request's hash (None: it has none), and the ``Set-Cookie`` value to answer with
        when a cookie had to be made up. ``trusted``: the client address x-forwarded-for's
        trusted hops gave (None: the peer's)."""
        on = self.hash_on
        if on == "SourceIP":
            return hash64(trusted.encode() if trusted is not None else client.peer_b), None
        if on == "Header":
            values = sorted(value for name, value in headers if name == self.header)
            return (hash64(b"\0".join(values)), None) if values else (None, None)
        value = cookie(headers, self.cookie_name)
        if value is not None:
            return hash64(value), None
        if self.cookie_ttl is None or not self.cookie_name:
            return None, None
        # Envoy's made-up value: the same for every request of one client connection
        value = b"%016x" % hash64((client.peer + client.local).encode())
        return hash64(value), set_cookie(self.cookie_name, value, self.cookie_ttl, self.cookie_path)


def cookie(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The value of cookie ``name`` in the request's Cookie headers (quotes removed)."""
    for header, value in headers:
        if header != b"cookie":
            continue
        for pair in value.split(b";"):
            key, eq, found = pair.strip().partition(b"=")
            if eq and key == name:
                if len(found) >= 2 and found[0] == found[-1] == 0x22:  # "value"
                    found = found[1:-1]
                return found
    return None


def set_cookie(name: bytes, value: bytes, ttl: float, path: str | None) -> bytes:
    """Envoy's ``Set-Cookie`` for a made-up hash cookie: ``name="value"; Max-Age=N;
    Path=P; HttpOnly`` (no Max-Age for a ttl of 0: a session cookie)."""
    out = b'%s="%s"' % (name, value)
    if int(ttl):
        out += b"; Max-Age=%d" % int(ttl)
    if path:
        out += b"; Path=" + path.encode("latin-1")
    return out + b"; HttpOnly"

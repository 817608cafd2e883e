"""The load balancer as a table: which hosts are live (health, panic threshold), each
policy's choice, the ConsistentHash ring's stability, slow start weights on an injected
clock, and the hash keys and cookies of requests."""
from __future__ import annotations

import collections

import pytest

from pyproxy import ir
from pyproxy.dataplane.balance import Balancer, cookie, hash64, set_cookie
from pyproxy.stats import FAILED_ACTIVE_HC, FAILED_OUTLIER_CHECK, ClusterStats

ADDRESSES = tuple(("127.0.0.1", port, False) for port in (8001, 8002, 8003, 8004))
# a destination's addresses are one tuple until an answer changes: a new tuple is a new view
TWO, THREE = ADDRESSES[:2], ADDRESSES[:3]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def balancer(kind: str = "LeastRequest", panic: float = 50.0, clock: Clock | None = None,
             **lb) -> Balancer:
    dest = ir.Destination("backend/default/t", (), load_balancer=ir.LoadBalancer(kind, **lb), panic_threshold=panic)
    return Balancer(dest, ClusterStats(), clock or Clock())


def ports(picks) -> list[int]:
    return [target[1] for target, _ in picks]


def flag(bal: Balancer, port: int, health: int) -> None:
    bal.stats.host(("127.0.0.1", port, False)).health = health
    bal.stats.version += 1


@pytest.mark.parametrize("unhealthy, panic, live", [
    ((), 50, [8001, 8002, 8003, 8004]),
    ((8001,), 50, [8002, 8003, 8004]),
    ((8001, 8002), 50, [8003, 8004]),  # 50 % healthy is not below 50 %
    ((8001, 8002, 8003), 50, [8001, 8002, 8003, 8004]),  # 25 %: panic, every host
    ((8001, 8002, 8003), 0, [8004]),  # never panic
    ((8001, 8002, 8003, 8004), 50, [8001, 8002, 8003, 8004]),
    ((8001, 8002, 8003, 8004), 0, []),  # no healthy upstream
    ((8001, 8002, 8003), 80, [8001, 8002, 8003, 8004]),
], ids=["all-healthy", "one-out", "half-out", "panic", "panic-0", "all-out-panic", "all-out-no-panic", "panic-80"])
def test_live_hosts_follow_health_and_the_panic_threshold(unhealthy, panic, live):
    bal = balancer("RoundRobin", panic=panic)
    bal.pick(ADDRESSES)
    for port in unhealthy:
        flag(bal, port, FAILED_ACTIVE_HC if port % 2 else FAILED_OUTLIER_CHECK)
    picks = [bal.pick(ADDRESSES) for _ in range(8)]
    if not live:
        assert picks == [None] * 8
        return
    assert sorted(set(ports(picks))) == live
    assert bal.stats.lb_healthy_panic == (8 if len(live) == 4 and unhealthy else 0)


def test_membership_changes_only_when_the_addresses_do():
    """A host joins once (its health starts over then); the same addresses again, even
    repeated ones (two endpoints naming one address), change nothing."""
    stats = ClusterStats()
    stats.sync_members(ADDRESSES[:2] + ADDRESSES[:1], 5.0)
    version = stats.version
    stats.host(ADDRESSES[0]).health = FAILED_OUTLIER_CHECK
    stats.sync_members(ADDRESSES[:2] + ADDRESSES[:1], 6.0)
    assert stats.version == version and stats.host(ADDRESSES[0]).health == FAILED_OUTLIER_CHECK
    stats.sync_members(ADDRESSES[1:3], 7.0)  # the first leaves, the third joins
    stats.sync_members(ADDRESSES[:3], 8.0)  # the first comes back: it starts over
    assert stats.version == version + 2
    assert (stats.host(ADDRESSES[0]).health, stats.host(ADDRESSES[0]).joined_at) == (0, 8.0)
    assert stats.host(ADDRESSES[1]).joined_at == 5.0


def test_round_robin_order_and_a_host_coming_back():
    bal = balancer("RoundRobin")
    assert ports(bal.pick(ADDRESSES) for _ in range(8)) == [8001, 8002, 8003, 8004] * 2
    flag(bal, 8002, FAILED_ACTIVE_HC)
    turn = ports(bal.pick(ADDRESSES) for _ in range(6))
    assert sorted(turn[:3]) == [8001, 8003, 8004] and turn[3:] == turn[:3]
    flag(bal, 8002, 0)
    assert sorted(ports(bal.pick(ADDRESSES) for _ in range(4))) == [8001, 8002, 8003, 8004]


def test_least_request_never_takes_the_busier_of_the_two_it_draws():
    bal = balancer()
    bal.pick(ADDRESSES)
    for port, active in ((8001, 3), (8002, 1), (8003, 1), (8004, 0)):
        bal.stats.host(("127.0.0.1", port, False)).rq_active = active
    counts = collections.Counter(ports(bal.pick(ADDRESSES) for _ in range(3000)))
    # 8001 loses every draw; 8004 wins every draw it is in: half of them (3 of the 6 pairs)
    assert 8001 not in counts
    assert 1300 < counts[8004] < 1700


def test_random_spreads_over_every_host():
    bal = balancer("Random")
    counts = collections.Counter(ports(bal.pick(ADDRESSES) for _ in range(4000)))
    assert set(counts) == {8001, 8002, 8003, 8004}
    assert min(counts.values()) > 700  # 1000 each expected


def hashed() -> Balancer:
    return balancer("ConsistentHash", consistent_hash=ir.ConsistentHash("Header", name="x-user"))


def test_ring_moves_only_the_keys_of_a_host_that_leaves():
    """Each key keeps its host while the set is stable; when a host leaves (here: fails its
    health check) only its keys move, and they come back to it when it returns."""
    bal = hashed()
    keys = [hash64(b"user-%d" % i) for i in range(2000)]
    before = {key: bal.pick(ADDRESSES, key)[0][1] for key in keys}
    assert before == {key: bal.pick(ADDRESSES, key)[0][1] for key in keys}
    shares = collections.Counter(before.values())
    assert set(shares) == set(p for _, p, _ in ADDRESSES) and min(shares.values()) > 300  # ~500 each

    flag(bal, 8003, FAILED_ACTIVE_HC)
    during = {key: bal.pick(ADDRESSES, key)[0][1] for key in keys}
    moved = {key for key in keys if during[key] != before[key]}
    assert moved == {key for key in keys if before[key] == 8003}

    flag(bal, 8003, 0)
    assert {key: bal.pick(ADDRESSES, key)[0][1] for key in keys} == before


def test_a_key_less_request_is_balanced_at_random():
    bal = hashed()
    assert len(set(ports(bal.pick(ADDRESSES, None) for _ in range(200)))) == 4


def test_slow_start_weights_ramp_linearly_from_a_tenth():
    """Smooth weighted round robin over a and b (weight 1, past their window) and c, which
    joined at t: weight 0.1 (the minimum) until 10 % of the window has passed, then
    elapsed/window, then 1 once the window is over."""
    clock = Clock()
    bal = balancer("RoundRobin", clock=clock, slow_start_window=10.0)
    bal.pick(TWO)
    clock.now += 20  # a and b are past their window
    bal.pick(THREE)  # c joins now

    def shares(count: int) -> collections.Counter:
        return collections.Counter(ports(bal.pick(THREE) for _ in range(count)))

    assert shares(210)[8003] == 10  # 0.1 of 2.1
    clock.now += 5
    assert shares(250)[8003] == 50  # 0.5 of 2.5
    clock.now += 5
    assert shares(300) == {8001: 100, 8002: 100, 8003: 100}


def test_slow_start_is_ignored_by_random_and_consistent_hash():
    for kind in ("Random", "ConsistentHash"):
        assert balancer(kind, slow_start_window=10.0).window == 0.0
    assert balancer("LeastRequest", slow_start_window=10.0).window == 10.0


class Peer:
    peer = "127.0.0.9:5555"
    peer_b = b"127.0.0.9"
    local = "127.0.0.1:8080"


@pytest.mark.parametrize("headers, value", [
    ([(b"cookie", b"a=1; session=abc; b=2")], b"abc"),
    ([(b"cookie", b"a=1"), (b"cookie", b'session="quoted"')], b"quoted"),
    ([(b"cookie", b"Session=upper")], None),  # names are case-sensitive
    ([(b"cookie", b"sessionx=1; session")], None),
    ([(b"x-cookie", b"session=1")], None),
    ([], None),
])
def test_cookie_values(headers, value):
    assert cookie(headers, b"session") == value


def test_set_cookie_is_envoys():
    assert set_cookie(b"s", b"00ff", 3600.0, "/p") == b's="00ff"; Max-Age=3600; Path=/p; HttpOnly'
    assert set_cookie(b"s", b"00ff", 0.0, None) == b's="00ff"; HttpOnly'  # a session cookie


def test_request_keys():
    source = balancer("ConsistentHash", consistent_hash=ir.ConsistentHash("SourceIP"))
    assert source.request_key([], Peer()) == (hash64(b"127.0.0.9"), None)
    header = balancer("ConsistentHash", consistent_hash=ir.ConsistentHash("Header", name="X-User"))
    assert header.request_key([(b"x-user", b"u1")], Peer()) == (hash64(b"u1"), None)
    assert header.request_key([(b"x-other", b"u1")], Peer()) == (None, None)
    made_up = balancer("ConsistentHash", consistent_hash=ir.ConsistentHash("Cookie", name="s", cookie_ttl=60))
    key, set_value = made_up.request_key([], Peer())
    value = b"%016x" % hash64(b"127.0.0.9:5555127.0.0.1:8080")
    assert (key, set_value) == (hash64(value), b's="' + value + b'"; Max-Age=60; HttpOnly')
    assert made_up.request_key([(b"cookie", b"s=" + value)], Peer()) == (key, None)

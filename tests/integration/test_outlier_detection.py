"""Passive health checks (outlier detection) and the panic threshold over real endpoints:
consecutive 5xx, gateway errors and the proxy's own connect failures eject an endpoint, which
comes back when its ejection time is over; at most ``max_ejection_percent`` of the endpoints
are ejected; too few healthy endpoints spread requests over all of them (panic); none and no
panic is 503 ``no healthy upstream``."""
from __future__ import annotations

import pytest

from pyproxy import ir
from pyproxy.stats import FAILED_OUTLIER_CHECK
from pyproxy.translate.status import Result
from tests.conftest import forward, listener
from tests.helpers.http import Client
from tests.helpers.members import HEALTH_PATH, destination, proxy_with_admin, until
from tests.helpers.proxy import proxy_routes
from tests.helpers.recorder import free_port

pytest_plugins = ["tests.helpers.members_fixture"]  # the ``members`` fixture

ROUTE = "httproute/default/od/rule/0/match/0"
NAME = "backend/default/pool"
RR = ir.LoadBalancer("RoundRobin")


def detected(pool, endpoints: tuple[ir.Endpoint, ...] = (), panic_threshold: float = 50.0, **kw) -> ir.Route:
    """A round-robin destination over ``pool`` and ``endpoints`` with outlier detection."""
    settings = {"interval": 0.05, "base_ejection_time": 0.3, "max_ejection_percent": 100, **kw}
    return forward(ROUTE, ir.Destination(NAME, tuple(m.endpoint for m in pool) + endpoints, load_balancer=RR,
                                         passive_health_check=ir.PassiveHealthCheck(**settings),
                                         panic_threshold=panic_threshold))


def ejected(runtime, host: str, port: int) -> bool:
    return bool(runtime.stats.cluster(NAME).host((host, port, False)).health & FAILED_OUTLIER_CHECK)


async def answers(port: int, count: int) -> list[tuple[int, str]]:
    client = await Client.connect(port)
    try:
        replies = [await client.request("GET", "/") for _ in range(count)]
    finally:
        await client.close()
    return [(reply.status, reply.body.decode()) for reply in replies]


async def test_consecutive_5xx_eject_an_endpoint_until_its_time_is_over(members):
    a, b = await members(2)
    a.status = 500
    async with proxy_with_admin(detected((a, b), consecutive_5xx=3)) as (rt, port, admin):
        # round robin: a's third 500 is the fifth request; from then on only b answers
        assert await answers(port, 10) == [(500, "a"), (200, "b")] * 3 + [(200, "b")] * 4
        assert ejected(rt, a.host, a.port)
        assert f"{NAME}::127.0.0.1:{a.port}::health_flags::/failed_outlier_check" in await admin.text("/clusters")
        [status] = [h["health_status"] for h in (await admin.clusters())["cluster_statuses"][0]["host_statuses"]
                    if h["address"]["socket_address"]["address"] == "127.0.0.1"]
        assert status == {"eds_health_status": "HEALTHY", "failed_outlier_check": True}
        prometheus = await admin.text("/stats/prometheus")

        a.status = 200
        await until(lambda: not ejected(rt, a.host, a.port))
        assert {name for _, name in await answers(port, 4)} == {"a", "b"}
        counts = rt.stats.cluster(NAME).outlier
    assert counts["ejections_enforced_total"] == counts["ejections_enforced_consecutive_5xx"] == 1
    assert f'envoy_cluster_outlier_detection_ejections_active{{envoy_cluster_name="{NAME}"}} 1.0' in prometheus
    assert f'envoy_cluster_outlier_detection_ejections_enforced_total{{envoy_cluster_name="{NAME}"}} 1.0' in prometheus


async def test_an_endpoint_ejected_again_stays_out_longer(members):
    """Ejection time is base × the endpoint's backoff, one more per ejection."""
    a, b = await members(2)
    a.status = 500
    async with proxy_routes(detected((a, b), consecutive_5xx=1, base_ejection_time=0.2)) as (rt, port):
        state = rt.stats.cluster(NAME).host((a.host, a.port, False))
        await answers(port, 1)
        assert state.health & FAILED_OUTLIER_CHECK and state.backoff == 1
        await until(lambda: not state.health)
        back = state.unejected_at
        assert back is not None and back - state.ejected_at >= 0.2
        await answers(port, 2)  # b, then a: ejected again
        assert state.health & FAILED_OUTLIER_CHECK and state.backoff == 2
        await until(lambda: not state.health)
        assert state.unejected_at - state.ejected_at >= 0.4


@pytest.mark.parametrize("status, ejected_after", [(502, 2), (503, 2), (504, 2), (500, None)])
async def test_consecutive_gateway_errors(members, status, ejected_after):
    a, b = await members(2)
    a.status = status
    route = detected((a, b), consecutive_gateway_errors=2, consecutive_5xx=100)
    async with proxy_routes(route) as (rt, port):
        replies = await answers(port, 8)
        counts = rt.stats.cluster(NAME).outlier
    if ejected_after is None:
        assert replies == [(500, "a"), (200, "b")] * 4
        assert counts["ejections_detected_consecutive_gateway_failure"] == 0
    else:
        assert replies == [(status, "a"), (200, "b")] * 2 + [(200, "b")] * 4
        assert counts["ejections_enforced_consecutive_gateway_failure"] == 1


async def test_connect_failures_count_as_503s(members):
    """Envoy's default (no split of local-origin errors): a refused connection counts as a
    503 towards consecutive 5xx."""
    [b] = await members(1)
    dead = free_port()
    route = detected((b,), endpoints=(ir.Endpoint("ip", "127.0.0.1", dead),), consecutive_5xx=2)
    async with proxy_routes(route) as (rt, port):
        replies = await answers(port, 8)
        assert ejected(rt, "127.0.0.1", dead)
        counts = rt.stats.cluster(NAME).outlier
    assert [status for status, _ in replies] == [200, 503, 200, 503] + [200] * 4
    assert counts["ejections_enforced_consecutive_5xx"] == 1


async def test_split_local_origin_failures_count_apart(members):
    [b] = await members(1)
    dead = free_port()
    route = detected((b,), endpoints=(ir.Endpoint("ip", "127.0.0.1", dead),), consecutive_5xx=2,
                     split_external_local_origin_errors=True, consecutive_local_origin_failures=3)
    async with proxy_routes(route) as (rt, port):
        replies = await answers(port, 10)
        counts = rt.stats.cluster(NAME).outlier
    assert [status for status, _ in replies] == [200, 503] * 3 + [200] * 4
    assert counts["ejections_enforced_consecutive_local_origin_failure"] == 1
    assert counts["ejections_detected_consecutive_5xx"] == 0


@pytest.mark.parametrize("percent, always_one, out", [(34, False, 1), (67, False, 2), (10, False, 0),
                                                      (10, True, 1)])
async def test_max_ejection_percent(members, percent, always_one, out):
    """Every endpoint fails; an ejection that would take the ejected share past the limit is
    refused (Envoy's rule: with 3 endpoints, 10 % ejects none unless one is always allowed)."""
    pool = await members(3)
    for member in pool:
        member.status = 500
    route = detected(pool, consecutive_5xx=1, max_ejection_percent=percent, always_eject_one_endpoint=always_one,
                     base_ejection_time=60, panic_threshold=0)
    async with proxy_routes(route) as (rt, port):
        await answers(port, 9)
        stats = rt.stats.cluster(NAME)
        assert stats.ejected() == out
        assert stats.outlier["ejections_overflow"] > 0


async def test_panic_spreads_over_every_endpoint_and_no_panic_answers_no_healthy_upstream(members):
    """Two of three endpoints ejected: 33 % healthy is below the 50 % panic threshold, so every
    endpoint takes requests again; with a threshold of 0 only the healthy one does, and once
    it is ejected too the answer is 503 ``no healthy upstream``."""
    pool = await members(3)
    a, b, c = pool

    def config(panic: float) -> ir.Config:
        check = ir.PassiveHealthCheck(consecutive_5xx=1, base_ejection_time=60, max_ejection_percent=100)
        return ir.Config((listener(forward(ROUTE, destination(pool, load_balancer=RR, panic_threshold=panic,
                                                              passive_health_check=check))),))

    async with proxy_routes(forward(ROUTE, destination(()))) as (rt, port):
        await rt.serve(Result(config(50), ()))
        a.status = b.status = 500
        await answers(port, 3)  # a and b answer 500 once each: ejected
        stats = rt.stats.cluster(NAME)
        assert stats.ejected() == 2
        a.status = b.status = 200
        assert sorted(name for _, name in await answers(port, 6)) == ["a", "a", "b", "b", "c", "c"]
        assert stats.lb_healthy_panic == 6

        await rt.serve(Result(config(0), ()))  # the ejections are kept
        assert {name for _, name in await answers(port, 4)} == {"c"}
        c.status = 500
        await answers(port, 1)
        assert stats.ejected() == 3
        client = await Client.connect(port)
        reply = await client.request("GET", "/")
        await client.close()
    assert (reply.status, reply.body) == (503, b"no healthy upstream")
    assert stats.cx_none_healthy == 1


async def test_a_passing_active_check_brings_an_ejected_endpoint_back(members):
    a, b = await members(2)
    a.status = 500
    passive = ir.PassiveHealthCheck(consecutive_5xx=1, base_ejection_time=60, max_ejection_percent=100)
    active = ir.ActiveHealthCheck(http=ir.HttpHealthCheck(HEALTH_PATH), interval=0.05)
    dest = destination((a, b), load_balancer=RR, passive_health_check=passive, active_health_check=active)
    async with proxy_routes(forward(ROUTE, dest)) as (rt, port):
        state = rt.stats.cluster(NAME).host((a.host, a.port, False))
        await until(lambda: state.hc_checked and not state.health)
        await answers(port, 2)
        assert state.health == FAILED_OUTLIER_CHECK
        await until(lambda: not state.health)  # long before its 60 s ejection ends

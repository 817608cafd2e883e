"""Active health checks against real endpoints: HTTP and TCP probes take an endpoint out of
the rotation (a wrong status at once, network failures after the threshold) and bring it back;
expected statuses, the Host sent (configured, the FQDN, the address), the port override, TLS
with the destination's SNI and verification; /clusters, the metrics, and a reload keeping
the endpoints' health."""
from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyproxy import ir
from pyproxy.stats import FAILED_ACTIVE_HC
from pyproxy.translate.status import Result
from tests.conftest import forward, listener, serve_ir, server_context
from tests.helpers.dnsserver import DnsServer
from tests.helpers.http import Client, Upstream
from tests.helpers.members import HEALTH_PATH, Member, destination, proxy_with_admin, until
from tests.helpers.proxy import proxy_routes

pytest_plugins = ["tests.helpers.members_fixture"]  # the ``members`` fixture

ROUTE = "httproute/default/hc/rule/0/match/0"
NAME = "backend/default/pool"
RR = ir.LoadBalancer("RoundRobin")


def http_check(**kw) -> ir.ActiveHealthCheck:
    settings = {"interval": 0.05, "timeout": 1.0, "unhealthy_threshold": 3, "healthy_threshold": 2, **kw}
    http = settings.pop("http", ir.HttpHealthCheck(HEALTH_PATH))
    return ir.ActiveHealthCheck(http=http, **settings)


def checked(pool, check: ir.ActiveHealthCheck, **kw) -> ir.Route:
    return forward(ROUTE, destination(pool, load_balancer=RR, active_health_check=check, **kw))


def host(runtime, member: Member):
    return runtime.stats.cluster(NAME).host((member.host, member.port, False))


def passing(runtime, member: Member) -> bool:
    state = host(runtime, member)
    return state.hc_checked and not state.health


def failing(runtime, member: Member) -> bool:
    return bool(host(runtime, member).health & FAILED_ACTIVE_HC)


async def served_by(port: int, count: int) -> set[str]:
    client = await Client.connect(port)
    try:
        return {(await client.request("GET", "/")).body.decode() for _ in range(count)}
    finally:
        await client.close()


async def test_a_wrong_status_takes_an_endpoint_out_at_once_and_passes_bring_it_back(members):
    """Envoy: an HTTP answer with a status not expected fails the endpoint without waiting
    for the unhealthy threshold; ``healthy_threshold`` passes in a row bring it back."""
    a, b = await members(2)
    async with proxy_with_admin(checked((a, b), http_check())) as (rt, port, admin):
        await until(lambda: passing(rt, a) and passing(rt, b))
        assert await served_by(port, 6) == {"a", "b"}

        b.health = 503
        await until(lambda: failing(rt, b))
        assert host(rt, b).hc_failures == 0  # not a network failure: no count towards the threshold
        assert await served_by(port, 6) == {"a"}
        text = (await admin.text("/clusters")).splitlines()
        assert f"{NAME}::127.0.0.2:{b.port}::health_flags::/failed_active_hc" in text
        assert f"{NAME}::127.0.0.1:{a.port}::health_flags::healthy" in text
        statuses = {h["address"]["socket_address"]["address"]: h["health_status"]
                    for h in (await admin.clusters())["cluster_statuses"][0]["host_statuses"]}
        assert statuses == {"127.0.0.1": {"eds_health_status": "HEALTHY"},
                            "127.0.0.2": {"eds_health_status": "HEALTHY", "failed_active_health_check": True}}

        b.health = 200
        await until(lambda: passing(rt, b))
        assert host(rt, b).hc_successes == 0  # reset once it passed
        assert await served_by(port, 6) == {"a", "b"}

        samples = {(s.name, s.labels.get("envoy_cluster_name")): s.value
                   for family in text_string_to_metric_families(await admin.text("/stats/prometheus"))
                   for s in family.samples}
    assert samples["envoy_cluster_health_check_healthy", NAME] == 2
    assert samples["envoy_cluster_health_check_failure", NAME] >= 1
    assert samples["envoy_cluster_health_check_attempt", NAME] >= samples["envoy_cluster_health_check_success", NAME]


async def test_network_failures_count_to_the_unhealthy_threshold(members):
    a, b = await members(2)
    async with proxy_routes(checked((a, b), http_check())) as (rt, port):
        await until(lambda: passing(rt, a) and passing(rt, b))
        await b.stop()
        await until(lambda: failing(rt, b))
        assert host(rt, b).hc_failures == 3  # flagged on the third failure in a row
        assert rt.stats.cluster(NAME).health_check["network_failure"] >= 3
        assert await served_by(port, 6) == {"a"}

        await b.start()  # the same address and port
        await until(lambda: passing(rt, b))
        assert await served_by(port, 6) == {"a", "b"}


async def test_tcp_check_expects_what_it_is_sent_back(members):
    """A TCP probe writing an HTTP request and expecting `` 200 `` in the answer: a 503 from
    the endpoint never contains it, so the probe times out, a network failure."""
    a, b = await members(2)
    tcp = ir.TcpHealthCheck(send=b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", receive=b" 200 ")
    check = ir.ActiveHealthCheck(tcp=tcp, interval=0.05, timeout=0.2, unhealthy_threshold=2)
    async with proxy_routes(checked((a, b), check)) as (rt, port):
        await until(lambda: passing(rt, a) and passing(rt, b))
        b.health = 503
        await until(lambda: failing(rt, b))
        assert host(rt, b).hc_failures == 2
        assert await served_by(port, 4) == {"a"}
        b.health = 200
        await until(lambda: passing(rt, b))
        assert await served_by(port, 4) == {"a", "b"}


async def test_a_connect_only_tcp_check(members):
    a, b = await members(2)
    check = ir.ActiveHealthCheck(tcp=ir.TcpHealthCheck(), interval=0.05, unhealthy_threshold=1)
    async with proxy_routes(checked((a, b), check)) as (rt, port):
        await until(lambda: passing(rt, a) and passing(rt, b))
        await a.stop()
        await until(lambda: failing(rt, a))
        assert await served_by(port, 4) == {"b"}


async def test_expected_statuses(members):
    a, b = await members(2)
    a.health, b.health = 418, 204
    check = http_check(http=ir.HttpHealthCheck(HEALTH_PATH, expected_statuses=(200, 418)))
    async with proxy_routes(checked((a, b), check)) as (rt, port):
        await until(lambda: passing(rt, a) and failing(rt, b) and host(rt, b).hc_checked)
        assert await served_by(port, 4) == {"a"}


async def test_host_header_is_the_hostname_set_else_the_address(members):
    a, b = await members(2)
    configured = http_check(http=ir.HttpHealthCheck(HEALTH_PATH, method="HEAD", hostname="health.example"))
    async with proxy_routes(checked((a,), configured), checked((b,), http_check(), name="backend/default/b")):
        await until(lambda: a.probe_hosts and b.probe_hosts)
    assert set(a.probe_hosts) == {"health.example"}
    assert set(b.probe_hosts) == {"127.0.0.2"}


async def test_every_address_of_an_fqdn_is_probed_with_the_name_as_host():
    a = await Member("a", "127.0.0.2").start()
    b = Member("b", "127.0.0.3")
    b.port = a.port
    try:
        await b.start()
    except OSError:
        await a.stop()
        pytest.skip("port taken on 127.0.0.3")
    b.health = 500
    dest = ir.Destination(NAME, (ir.Endpoint("fqdn", "backend.test", a.port),), load_balancer=RR,
                          active_health_check=http_check())
    try:
        async with DnsServer() as dns:
            dns.set("backend.test", ["127.0.0.2", "127.0.0.3"])
            async with serve_ir(ir.Config((listener(forward(ROUTE, dest)),)), nameservers=(dns.address,)) as rt:
                await until(lambda: passing(rt, a) and failing(rt, b))
                assert await served_by(rt.ports[("127.0.0.1", 0)], 4) == {"a"}
    finally:
        await a.stop()
        await b.stop()
    assert set(a.probe_hosts) == set(b.probe_hosts) == {"backend.test"}


async def test_probes_go_to_the_port_override(members):
    """The endpoint serves on its port; its health is asked on another one."""
    [a] = await members(1)
    health = await Member("health", "127.0.0.1").start()
    try:
        check = http_check(port=health.port)
        async with proxy_routes(checked((a,), check, panic_threshold=0)) as (rt, port):
            await until(lambda: passing(rt, a))
            health.health = 503
            await until(lambda: failing(rt, a))
            reply = await (await Client.connect(port)).request("GET", "/")
    finally:
        await health.stop()
    assert (reply.status, reply.body) == (503, b"no healthy upstream")
    assert a.probe_hosts == [] and health.probe_hosts


async def test_tls_probes_use_the_destination_sni_and_verification(ca):
    """Probes over TLS with the destination's context: the upstream sees the SNI; a name the
    certificate does not carry fails the probe like any handshake failure."""
    up = await Upstream().start(ssl_context=server_context(ca, "backend.test"))
    wrong = await Upstream().start(ssl_context=server_context(ca, "other.test"))
    tls = ir.UpstreamTLS(sni="backend.test", ca=ca.cert_pem.bytes().decode())
    check = http_check(unhealthy_threshold=1)

    def route(upstream: Upstream, name: str) -> ir.Route:
        dest = ir.Destination(name, (ir.Endpoint("ip", "127.0.0.1", upstream.port),), tls=tls,
                              active_health_check=check, http2=name.endswith("h2"))
        return forward(f"{name}/route", dest, match=ir.Match(ir.PathMatch("PathPrefix", "/" + name.split("/")[-1])))

    try:
        async with proxy_routes(route(up, "backend/default/good"), route(up, "backend/default/h2"),
                                route(wrong, "backend/default/wrong")) as (rt, _):
            target = ("127.0.0.1", up.port, False)
            await until(lambda: all(rt.stats.cluster(name).host(target).hc_checked and
                                    not rt.stats.cluster(name).host(target).health
                                    for name in ("backend/default/good", "backend/default/h2")))
            await until(lambda: rt.stats.cluster("backend/default/wrong").host(
                ("127.0.0.1", wrong.port, False)).health & FAILED_ACTIVE_HC)
    finally:
        await up.stop()
        await wrong.stop()
    probes = [seen for seen in up.seen if seen.path == HEALTH_PATH]
    assert probes and {seen.sni for seen in probes} == {"backend.test"}
    assert {dict(seen.headers)["user-agent"] for seen in probes} == {"Envoy/HC"}
    assert not [seen for seen in wrong.seen if seen.path == HEALTH_PATH]


async def test_a_reload_keeps_health_and_one_without_the_check_clears_it(members):
    """Health lives with the destination's name: a reload serving the same destination keeps
    each endpoint's state at once (no endpoint starts over waiting for a first probe); a
    reload without the check serves every endpoint again."""
    a, b = await members(2)
    b.health = 503
    config = ir.Config((listener(checked((a, b), http_check(interval=0.2))),))
    async with serve_ir(config) as rt:
        await until(lambda: passing(rt, a) and failing(rt, b))
        await rt.serve(Result(config, ()))
        assert passing(rt, a) and failing(rt, b)
        await rt.serve(Result(ir.Config((listener(forward(ROUTE, destination((a, b), load_balancer=RR))),)), ()))
        assert not host(rt, a).health and not host(rt, b).health
        assert await served_by(rt.ports[("127.0.0.1", 0)], 4) == {"a", "b"}
        tasks = rt.health.tasks
    assert tasks == []


async def test_checks_start_unhealthy_and_the_first_pass_is_enough(members):
    """Until its first probe an endpoint counts as failing (Envoy's initial state under an
    active health check); the first probe that passes brings it in whatever the healthy
    threshold."""
    [a] = await members(1)
    check = http_check(healthy_threshold=5, interval=60)  # one probe within the test
    async with serve_ir(ir.Config((listener(checked((a,), check)),))) as rt:
        assert rt.stats.cluster(NAME).initial_health == FAILED_ACTIVE_HC
        assert rt.health.tasks == [f"pyproxy.health:{NAME}"]
        await until(lambda: passing(rt, a))
        assert rt.stats.cluster(NAME).health_check == {"attempt": 1, "success": 1, "failure": 0,
                                                       "network_failure": 0}
    # stopping the runtime ended its checks
    assert not [task for task in asyncio.all_tasks() if task.get_name().startswith("pyproxy.health:")]

"""Shared fixtures: uvloop (as in production), a trustme CA, recording upstreams, and an
in-process proxy serving a hand-built IR."""
from __future__ import annotations

import ssl
from contextlib import asynccontextmanager

import pytest
import trustme
import uvloop

from pyproxy import ir
from pyproxy.runtime import Runtime, Settings
from pyproxy.translate.status import Result
from tests.helpers.h2server import H2Upstream
from tests.helpers.http import Upstream
from tests.helpers.scripted import ScriptedUpstream


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite tests/translate/testdata/*.out.yaml from the current translator output")
    parser.addoption("--run-slow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: use --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_asyncio_loop_factories(config, item):
    """Every async test runs on uvloop, as production does."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(ctx)
    return ctx


@pytest.fixture
async def upstream():
    up = await Upstream().start()
    yield up
    await up.stop()


@pytest.fixture
async def tls_upstream(ca):
    up = await Upstream().start(ssl_context=server_context(ca, "backend.test"))
    yield up
    await up.stop()


@pytest.fixture
async def scripted():
    """``await scripted(script)`` starts a scripted upstream, stopped after the test."""
    started = []

    async def start(script) -> ScriptedUpstream:
        up = await ScriptedUpstream(script).start()
        started.append(up)
        return up

    yield start
    for up in started:
        await up.stop()


@pytest.fixture
async def h2_upstream():
    """``await h2_upstream(script, ...)`` starts a scripted HTTP/2 upstream, stopped after the test."""
    started = []

    async def start(script, max_streams: int | None = None, ssl_context: ssl.SSLContext | None = None) -> H2Upstream:
        up = await H2Upstream(script, max_streams=max_streams).start(ssl_context)
        started.append(up)
        return up

    yield start
    for up in started:
        await up.stop()


@asynccontextmanager
async def serve_ir(config: ir.Config, **settings):
    """Run the data plane on ``config`` (listeners should use port 0); yields the Runtime,
    whose ``ports`` maps (address, 0) to the bound port. ``settings`` are ``runtime.Settings``
    fields (``access_log`` is off unless given)."""
    runtime = Runtime(Settings(**{"config_paths": (), "access_log": "off", **settings}))
    try:
        await runtime.serve(Result(config, ()))
        yield runtime
    finally:
        await runtime.stop()


def listener(*routes: ir.Route, hostname: str = "*", port: int = 0,
             client: ir.ClientSettings | None = None) -> ir.Listener:
    return ir.Listener(
        name="listener/test", address="127.0.0.1", port=port, protocol="HTTP",
        virtual_hosts=(ir.VirtualHost(name="vhost/test", hostname=hostname, routes=routes),),
        client=client or ir.ClientSettings(),
    )


def forward(name: str, *destinations: ir.Destination, match: ir.Match | None = None, **kw) -> ir.Route:
    return ir.Route(
        name=name,
        match=match or ir.Match(ir.PathMatch("PathPrefix", "/")),
        action=ir.Forward(tuple(ir.WeightedBackend(1, d) for d in destinations)),
        **kw,
    )


def destination(port: int, host: str = "127.0.0.1", kind: str = "ip", tls: ir.UpstreamTLS | None = None,
                name: str = "backend/default/test", http2: bool = False) -> ir.Destination:
    return ir.Destination(name=name, endpoints=(ir.Endpoint(kind, host, port),), tls=tls, http2=http2)

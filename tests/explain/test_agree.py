"""explain and serve agree: each request of a table goes through the running proxy (the real
runtime, listening on 127.0.0.1, in front of echo upstreams a, b and c) and is explained
in-process with the same settings; the backend reached (or the local answer's status and
Location), and the path, Host and headers the backend saw, must be what ``explain --json``
says. Where serve picks a backend at random by weight, the backend reached must be one the
answer gives a share to (an invalid backendRef's share is a 500)."""
from __future__ import annotations

import asyncio
import dataclasses
import ssl
import string
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trustme

from pyproxy.explain.command import explain_config
from pyproxy.explain.question import Question, parse_url, request_bytes, server_name
from pyproxy.runtime import Runtime, Settings
from tests.explain import configs
from tests.helpers.http import Client, Upstream
from tests.helpers.proc import free_port

NAMES = ("a", "b", "c")


@pytest.fixture
async def upstreams():
    started = {name: await Upstream().start() for name in NAMES}
    yield started
    for up in started.values():
        await up.stop()


@asynccontextmanager
async def serving(tmp_path: Path, template: str, upstreams: dict[str, Upstream], ca: trustme.CA | None = None):
    """The real runtime serving ``template``; yields its settings and the listener ports."""
    ports = {"http": free_port(), "https": free_port()}
    directory = configs.write(tmp_path / "config", template, **ports,
                              **{name: up.port for name, up in upstreams.items()})
    if ca is not None:
        configs.tls_secrets(ca, directory)
    settings = Settings(config_paths=(str(directory),), listen=("127.0.0.1", free_port()), bind_address="127.0.0.1",
                        access_log="off")
    runtime = Runtime(settings)
    try:
        await runtime.start()
        yield settings, ports
    finally:
        await runtime.stop()


def possible(answer: dict) -> set[tuple]:
    """The outcomes explain allows: a local answer, or each backend with a share."""
    if answer["action"] == "local":
        return {("local", answer["status"], answer["location"])}
    out: set[tuple] = set()
    for backend in answer["backends"]:
        if backend["weight"] > 0:
            out.add(("forward", backend["name"]) if backend["valid"] else ("local", backend["status"], None))
    return out


async def send(question: Question, answer: dict, ca: trustme.CA | None,
               upstreams: dict[str, Upstream]) -> tuple[tuple, dict | None]:
    """Send the bytes explain parsed to the port explain chose; the outcome, and for a
    forwarded request what the upstream saw."""
    target = parse_url(question.url)
    port = answer["request"]["port"]
    context = None
    sni = None
    if target.scheme == "https":
        assert ca is not None
        context = ssl.create_default_context()
        context.check_hostname = False  # the certificate matches the SNI, which may differ from the Host
        ca.configure_trust(context)
        sni = server_name(question, target)
    before = {name: len(up.seen) for name, up in upstreams.items()}
    # from the client address explain was told (any of 127.0.0.0/8 is ours)
    client = Client(*await asyncio.wait_for(asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname=sni, local_addr=(question.client_ip, 0)), 5))
    try:
        await client.send(request_bytes(question, target))
        response = await client.read_response(head_request=question.method == "HEAD")
    finally:
        await client.close()
    reached = [name for name, up in upstreams.items() if len(up.seen) > before[name]]
    if not reached:
        return ("local", response.status, response.header("location")), None
    assert len(reached) == 1 and response.status == 200, (reached, response.status)
    seen = upstreams[reached[0]].seen[-1]
    return ("forward", reached[0]), {"method": seen.method, "path": seen.path, "headers": seen.headers}


async def agree(settings: Settings, question: Question, ca: trustme.CA | None, upstreams: dict[str, Upstream],
                repeat: int) -> dict:
    """Explain ``question``, send it ``repeat`` times, check each outcome against the answer."""
    answer = await explain_config(settings, question)
    allowed = possible(answer)
    for _ in range(repeat):
        outcome, seen = await send(question, answer, ca, upstreams)
        assert outcome in allowed, (question, outcome, allowed)
        if seen is None:
            continue
        backend = next(b for b in answer["backends"] if b["name"] == outcome[1])
        expected = backend["upstream_request"]
        assert seen["method"] == expected["method"]
        assert seen["path"] == expected["path"]
        # the proxy writes Host first, then the headers in explain's order; the id is random
        request_id = dict(seen["headers"])["x-request-id"]
        headers = [(n, request_id if n == "x-request-id" else v) for n, v in expected["headers"]]
        assert seen["headers"] == [("host", expected["host"]), *headers], question
    return answer


def q(url: str, *headers: str, expect: dict | None = None, method: str = "GET", **kw) -> tuple[Question, dict]:
    """A request of a table (``$http``, ``$https`` in the URL are the listener ports) and what
    its answer must say besides agreeing with serve (``route``: the route's name)."""
    return Question(url=url, method=method, headers=tuple(tuple(h.split(": ", 1)) for h in headers), **kw), expect or {}


APP = "http://app.example:$http"
# config -> the requests sent, each with what its answer must hold
TABLES: dict[str, tuple[str, list[tuple[Question, dict]]]] = {
    "precedence": (configs.PRECEDENCE, [
        q(f"{APP}/api/v1", expect={"route": "exact"}),
        q(f"{APP}/api/v2", expect={"route": "prefix"}),
        q(f"{APP}/api/v2", "x-canary: yes", expect={"route": "prefix"}),
        q(f"{APP}/api/v2", "x-canary: no"),
        q(f"{APP}/x", method="POST"),
        q(f"{APP}/x?v=2"),
        q(f"{APP}/x?v=3", expect={"status": 404}),
        q(f"{APP}/x", expect={"status": 404}),
        q(f"{APP}/shared/1", expect={"route": "older"}),
        q(f"{APP}/same", expect={"route": "name-a"}),
        q("http://www.example:$http/", expect={"route": "wildcard"}),
        q("http://other.test:$http/only-any", expect={"route": "any-host"}),
        q("http://other.test:$http/nothing", expect={"status": 404}),
        q("http://APP.example.:$http/api/v1", expect={"route": "exact"}),
        q(f"{APP}/api/../api/v1", expect={"route": "exact"}),
    ]),
    "filters": (configs.FILTERS, [
        q(f"{APP}/rw"),
        q(f"{APP}/rw/deeper/path?x=1"),
        q(f"{APP}/rw/", "X-Forwarded-Host: client.example", "X-Forwarded-For: 10.1.1.1"),
        q(f"{APP}/full/anything?keep=1"),
        q(f"{APP}/hdr", "x-drop: 1", "x-multi: first", "x-env: dev", "x-keep: kept"),
        q(f"{APP}/redir/a?b=c", expect={"status": 301, "location": "https://secure.example/redir/a?b=c"}),
        q(f"{APP}/moved/a", expect={"status": 302, "location": "http://app.example:8443/elsewhere"}),
        q(f"{APP}/cors", "Origin: https://ok.example"),
        q(f"{APP}/cors", "Origin: https://ok.example", "Access-Control-Request-Method: PUT", method="OPTIONS",
          expect={"status": 200}),
        q(f"{APP}/cors", "Origin: https://evil.example", "Access-Control-Request-Method: PUT", method="OPTIONS",
          expect={"status": 403}),
        q(f"{APP}/hdr", "Connection: x-drop-me", "x-drop-me: 1", "Keep-Alive: 5"),
        q(f"{APP}/rw", client_ip="127.0.0.9"),
    ]),
    "weights": (configs.WEIGHTS, [
        q(f"{APP}/zero", expect={"outcomes": {("forward", "b")}}),
        q(f"{APP}/split", expect={"outcomes": {("forward", "a"), ("forward", "c")}}),
        q(f"{APP}/half-broken", expect={"outcomes": {("forward", "b"), ("local", 500, None)}}),
        q(f"{APP}/broken", expect={"outcomes": {("local", 500, None)}}),
        q(f"{APP}/none", expect={"outcomes": {("local", 500, None)}}),
    ]),
    "https-listeners": (configs.HTTPS, [
        q("https://first.example:$https/", expect={"listener": "default/eg/first", "status": None}),
        q("https://second.example:$https/x", expect={"listener": "default/eg/second"}),
        q("https://first.example:$https/", sni="second.example", expect={"listener": None, "status": 421}),
        q("https://first.example:$https/", sni="", expect={"listener": "default/eg/first"}),
        q("https://third.example:$https/", sni="first.example", expect={"listener": None, "status": 404}),
        q("https://Second.Example:$https/", sni="SECOND.example", expect={"listener": "default/eg/second"}),
        q("http://first.example:$http/", expect={"listener": "default/eg/web"}),
        q("https://127.0.0.1:$https/", "Host: second.example", expect={"listener": "default/eg/second"}),
    ]),
    "no-route-and-bad-requests": (configs.NO_ROUTE, [
        q(f"{APP}/exact", expect={"route": "web"}),
        q(f"{APP}/exact", method="DELETE", expect={"status": 404}),
        q(f"{APP}/api?debug=1", "x-version: v12", expect={"route": "web"}),
        q(f"{APP}/api?debug=1", "x-version: twelve", expect={"status": 404}),
        q(f"{APP}/api?debug=0", "x-version: v1", expect={"status": 404}),
        q("http://other.example:$http/anything", expect={"route": "elsewhere"}),
        q("http://unknown.example:$http/", expect={"status": 404}),
        q(f"{APP}/a%2Fb", expect={"status": 307}),
        q(f"{APP}/", "Host: bad host", expect={"status": 400}),
        q(f"{APP}/", "Host: a.example", "Host: b.example", expect={"status": 400}),
        q(f"{APP}/", "Connection: upgrade", "Upgrade: foo", expect={"status": 403}),
        q(f"{APP}/", "x_underscore: 1", expect={"status": 400}),
    ]),
}


@pytest.mark.parametrize("table", sorted(TABLES))
async def test_explain_and_serve_agree(table, tmp_path, upstreams, ca):
    template, rows = TABLES[table]
    async with serving(tmp_path, template, upstreams, ca if template is configs.HTTPS else None) as (settings, ports):
        for question, expect in rows:
            url = string.Template(question.url).substitute(ports)
            answer = await agree(settings, dataclasses.replace(question, url=url), ca, upstreams, repeat=8 if
                                 "outcomes" in expect else 1)
            for key, value in expect.items():
                assert observed(answer, key) == value, (url, key)


def observed(answer: dict, key: str) -> object:
    if key == "route":
        return (answer["route"] or {}).get("name")
    if key == "outcomes":
        return possible(answer)
    return answer[key]

"""What a serving process imports (issue 11: idle RSS). The real CLI's main serves one
HTTP/1.1 request of the bench's configuration shape (an HTTPRoute rewriting the Host to a
Backend with an ip endpoint, verified with a BackendTLSPolicy's CA) with the admin off, then
lists ``sys.modules`` as it exits. Libraries that only some configurations, clients or
commands need stay out until one does; the loader process's own imports (config/, translate/,
PyYAML: test_loader.py) are not the serving process's."""
from __future__ import annotations

import asyncio

from pyproxy.demo import seed_config
from tests.helpers.h2client import H2Client
from tests.helpers.http import Client
from tests.helpers.named import HOST, route_config
from tests.helpers.proc import SERVE_THEN_LIST_MODULES, CliProcess, free_port

NOT_FOR_SERVING = {
    "re2": "only a configuration with a RegularExpression compiles patterns",
    "email": "nothing of the data plane formats or parses mail headers",
    "importlib.metadata": "only --version and version read the installed version",
    "fractions": "only a metav1.Duration value is summed exactly",
    "anyio._backends._asyncio": "pyproxy.watch runs watchfiles' blocking iterator, not awatch",
    "h2": "only an HTTP/2 client or an HTTP/2 upstream brings the h2 library in",
    "hashlib": "only a hashing balancer (ConsistentHash) hashes",
    "certifi": "only a System trust store with no CA in it falls back to certifi's bundle",
    "datetime": "the access log's time is formatted with time.strftime",
    "pyproxy.translate": "the loader process translates (pyproxy/loader.py)",
}


def bench_config(ca, upstream, path_match: str = "type: PathPrefix\n        value: /") -> str:
    config = seed_config(name="bench", route_host="bench.example", upstream_name="backend.test",
                         endpoint=f"ip: {{address: 127.0.0.1, port: {upstream.port}}}",
                         ca_pem=ca.cert_pem.bytes().decode(), comment="the bench's shape")
    return config.replace("type: PathPrefix\n        value: /", path_match)


async def imported_serving_one_request(config: str, tmp_path, http2: bool = False, host: str = "bench.example",
                                       path: str = "/small") -> set[str]:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "bench.yaml").write_text(config)
    port = free_port()
    modules = tmp_path / "modules.txt"
    proxy = CliProcess(str(modules), "--config", str(tmp_path / "config"), "--listen", f"127.0.0.1:{port}",
                       "--admin", "off", "--access-log", "off", program=("-c", SERVE_THEN_LIST_MODULES))
    try:
        await asyncio.to_thread(proxy.wait_for, "ready:")
        if http2:  # with prior knowledge, in clear
            h2client = await H2Client.connect(port)
            sid = await h2client.start(path, authority=host.encode())
            assert (await h2client.response(sid)).status == 200
            await h2client.close()
        else:
            client = await Client.connect(port)
            assert (await client.request("GET", path, host=host)).status == 200
            await client.close()
    finally:
        code, lines = proxy.stop()
    assert code == 0, "\n".join(lines)
    return set(modules.read_text().splitlines())


async def test_serving_imports_only_what_serving_needs(ca, tls_upstream, tmp_path):
    modules = await imported_serving_one_request(bench_config(ca, tls_upstream), tmp_path)
    assert "pyproxy.dataplane.server" in modules
    assert {name: why for name, why in NOT_FOR_SERVING.items() if name in modules} == {}


async def test_a_regular_expression_brings_re2_in(ca, tls_upstream, tmp_path):
    config = bench_config(ca, tls_upstream, path_match="type: RegularExpression\n        value: /sm.*")
    assert "re2" in await imported_serving_one_request(config, tmp_path)


async def test_an_http2_client_brings_h2_in(ca, tls_upstream, tmp_path):
    modules = await imported_serving_one_request(bench_config(ca, tls_upstream), tmp_path, http2=True)
    assert {"h2", "pyproxy.dataplane.h2"} <= modules


async def test_with_no_tls_upstream_the_idna_codec_stays_out(upstream, tmp_path):
    """Listening addresses go to the loop as ASCII bytes (startup.bind_host); only a TLS
    upstream's server name is encoded with the idna codec (by the ssl module)."""
    modules = await imported_serving_one_request(route_config(upstream.port), tmp_path, host=HOST, path="/")
    assert "pyproxy.dataplane.server" in modules
    assert "encodings.idna" not in modules

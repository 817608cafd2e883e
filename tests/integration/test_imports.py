"""What a serving process imports (issue 11: idle RSS). The real CLI with
``PYTHONPROFILEIMPORTTIME``, whose report on stderr names every module imported, serves one
request of the bench's configuration shape (an HTTPRoute rewriting the Host to a Backend with
an ip endpoint, verified with a BackendTLSPolicy's CA) with the admin off. Libraries that only
some configurations or commands need stay out until one does."""
from __future__ import annotations

import asyncio

from pyproxy.demo import seed_config
from tests.helpers.http import Client
from tests.helpers.proc import CliProcess, free_port

NOT_FOR_SERVING = {
    "re2": "only a configuration with a RegularExpression compiles patterns",
    "email": "nothing of the data plane formats or parses mail headers",
    "importlib.metadata": "only --version and version read the installed version",
    "fractions": "only a metav1.Duration value is summed exactly",
    "anyio._backends._asyncio": "pyproxy.watch runs watchfiles' blocking iterator, not awatch",
}


def bench_config(ca, upstream, path_match: str = "type: PathPrefix\n        value: /") -> str:
    config = seed_config(name="bench", route_host="bench.example", upstream_name="backend.test",
                         endpoint=f"ip: {{address: 127.0.0.1, port: {upstream.port}}}",
                         ca_pem=ca.cert_pem.bytes().decode(), comment="the bench's shape")
    return config.replace("type: PathPrefix\n        value: /", path_match)


async def imported_serving_one_request(config: str, tmp_path) -> set[str]:
    (tmp_path / "bench.yaml").write_text(config)
    port = free_port()
    proxy = CliProcess("--config", str(tmp_path), "--listen", f"127.0.0.1:{port}", "--admin", "off",
                       "--access-log", "off", env={"PYTHONPROFILEIMPORTTIME": "1"})
    try:
        await asyncio.to_thread(proxy.wait_for, "ready:")
        client = await Client.connect(port)
        assert (await client.request("GET", "/small", host="bench.example")).status == 200
        await client.close()
    finally:
        code, lines = proxy.stop()
    assert code == 0, "\n".join(lines)
    return {line.split("|")[2].strip() for line in lines if line.startswith("import time:") and line.count("|") == 2}


async def test_serving_imports_only_what_serving_needs(ca, tls_upstream, tmp_path):
    modules = await imported_serving_one_request(bench_config(ca, tls_upstream), tmp_path)
    assert "pyproxy.dataplane.server" in modules
    assert {name: why for name, why in NOT_FOR_SERVING.items() if name in modules} == {}


async def test_a_regular_expression_brings_re2_in(ca, tls_upstream, tmp_path):
    config = bench_config(ca, tls_upstream, path_match="type: RegularExpression\n        value: /sm.*")
    assert "re2" in await imported_serving_one_request(config, tmp_path)

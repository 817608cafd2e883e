"""``pyproxy explain`` as a user runs it: golden text answers (``testdata/<case>.txt``: each
command, its output and its exit code) and the exit codes and messages of the command line.

Run ``pytest tests/explain --update-golden`` to rewrite the golden files, then review the
diff by eye before keeping it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.explain import configs
from tests.helpers.proc import run_cli

TESTDATA = Path(__file__).parent / "testdata"
SEED = Path(__file__).resolve().parents[2] / "config" / "seed-example.yaml"
PORTS = {"http": 8081, "https": 8443, "a": 9001, "b": 9002, "c": 9003}
APP = "http://app.example:8081"

# case -> (config template, or None for the seed example; the commands' arguments)
CASES: dict[str, tuple[str | None, list[list[str]]]] = {
    "seed-example": (None, [["http://www.example.com/get"]]),
    "no-route": (configs.NO_ROUTE, [
        ["-H", "x-version: twelve", f"{APP}/api?debug=1"],
        ["http://unknown.example:8081/"],
    ]),
    "precedence-tie-breaks": (configs.PRECEDENCE, [
        ["-H", "x-canary: yes", f"{APP}/api/v2"],
        [f"{APP}/shared/1"],
        [f"{APP}/same"],
    ]),
    "rewrite-and-header-modifiers": (configs.FILTERS, [
        ["--client-ip", "192.0.2.1", "-H", "X-Forwarded-For: 10.0.0.1", f"{APP}/rw/deep?x=1"],
        ["-H", "x-drop: 1", "-H", "x-multi: first", "-H", "x-env: dev", f"{APP}/hdr"],
        [f"{APP}/redir/a?b=c"],
    ]),
    "weighted-backends": (configs.WEIGHTS, [
        [f"{APP}/split"],
        [f"{APP}/half-broken"],
        [f"{APP}/broken"],
    ]),
    "https-listener-sni": (configs.HTTPS, [
        ["https://first.example:8443/"],
        ["--sni", "second.example", "https://first.example:8443/"],
    ]),
}


def transcript(config: Path, commands: list[list[str]]) -> str:
    """Each command as typed (the config path written CONFIG), its output and exit code."""
    parts = []
    for args in commands:
        result = run_cli("explain", "--config", str(config), *args)
        assert result.stderr == "", result.stderr
        shown = " ".join(f"'{a}'" if " " in a else a for a in args)
        parts.append(f"$ pyproxy explain --config CONFIG {shown}\n{result.stdout}[exit {result.returncode}]\n")
    return "\n".join(parts)


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str, tmp_path: Path, ca, request: pytest.FixtureRequest) -> None:
    template, commands = CASES[case]
    if template is None:
        config = SEED
    else:
        config = configs.write(tmp_path / "config", template, **PORTS)
        if template is configs.HTTPS:
            configs.tls_secrets(ca, config)  # random certificates: the answer must not show them
    actual = transcript(config, commands)
    golden = TESTDATA / f"{case}.txt"
    if request.config.getoption("--update-golden", default=False):
        golden.write_text(actual)
        return
    assert golden.exists(), f"{golden.name} is missing: run pytest tests/explain --update-golden and review it"
    assert actual == golden.read_text()


def test_seed_answer_fits_one_screen() -> None:
    result = run_cli("explain", "--config", str(SEED), "http://www.example.com/get")
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) <= 24
    assert max(map(len, result.stdout.splitlines())) <= 120


def test_json_fields_and_exit_codes(tmp_path: Path) -> None:
    config = configs.write(tmp_path / "config", configs.WEIGHTS, **PORTS)
    forwarded = run_cli("explain", "--config", str(config), "--json", f"{APP}/zero")
    assert forwarded.returncode == 0
    answer = json.loads(forwarded.stdout)
    assert answer["listener"] == "default/eg/web"
    assert answer["route"] == {"kind": "HTTPRoute", "namespace": "default", "name": "weighted", "rule": 0, "match": 0}
    assert (answer["action"], answer["status"], answer["location"]) == ("forward", None, None)
    assert [{k: b[k] for k in ("kind", "namespace", "name", "weight")} for b in answer["backends"]] == [
        {"kind": "Backend", "namespace": "default", "name": "a", "weight": 0},
        {"kind": "Backend", "namespace": "default", "name": "b", "weight": 1}]
    assert answer["upstream_request"] == {
        "method": "GET", "path": "/zero", "host": "app.example:8081",
        "headers": [["x-forwarded-for", "127.0.0.1"], ["x-forwarded-proto", "http"],
                    ["x-envoy-external-address", "127.0.0.1"], ["x-request-id", "<generated>"]]}
    assert {"route": "httproute/default/weighted", "rule": 1,
            "why": "path: /zero is not under /split (PathPrefix)"} in answer["not_matched"]
    local = run_cli("explain", "--config", str(config), "--json", f"{APP}/broken")
    assert local.returncode == 3
    assert (json.loads(local.stdout)["action"], json.loads(local.stdout)["status"]) == ("local", 500)


def test_redirect_exits_0(tmp_path: Path) -> None:
    config = configs.write(tmp_path / "config", configs.FILTERS, **PORTS)
    result = run_cli("explain", "--config", str(config), f"{APP}/redir")
    assert result.returncode == 0
    assert "location  https://secure.example/redir" in result.stdout


def test_config_error_gives_checks_messages(tmp_path: Path) -> None:
    (tmp_path / "route.yaml").write_text(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web}\n"
        "spec:\n  rules:\n  - matches: [{path: {type: Prefixx, value: /}}]\n")
    explained = run_cli("explain", "--config", str(tmp_path), "http://x/")
    checked = run_cli("check", "--config", str(tmp_path))
    assert (explained.returncode, checked.returncode) == (1, 1)
    assert explained.stdout == ""
    assert explained.stderr == checked.stderr
    assert "unknown value 'Prefixx'" in explained.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["ftp://x/"], "pyproxy explain: error: the URL must start with http:// or https://, got 'ftp://x/'\n"),
    (["-H", "no colon", "http://x/"], "pyproxy explain: error: -H wants 'Name: value', got 'no colon'\n"),
    (["--client-ip", "me", "http://x/"], "pyproxy explain: error: --client-ip wants an IP address, got 'me'\n"),
    (["--port", "1", "http://x/"], "pyproxy explain: error: nothing listens on port 1; served: "
     "implicit (port 8080, HTTP)\n"),
])
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = run_cli("explain", "--config", str(SEED), *args)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", message)


def test_argparse_usage_errors_exit_2() -> None:
    missing = run_cli("explain", "--config", str(SEED))
    assert missing.returncode == 2
    assert "the following arguments are required: URL" in missing.stderr
    both = run_cli("explain", "--config", str(SEED), "--port", "80", "--listener", "implicit", "http://x/")
    assert both.returncode == 2
    assert "not allowed with argument" in both.stderr
    listed = run_cli("--help")
    assert "explain" in listed.stdout

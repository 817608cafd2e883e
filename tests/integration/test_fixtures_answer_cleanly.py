"""Every config fixture of the repository (golden translation inputs, with their corrupt
certificates, unresolvable references and conflicts; the examples in ``config/``) gets a clear
answer: ``pyproxy check`` in a subprocess prints a verdict and never a traceback, and what
``serve`` would compile from the translation compiles without an exception escaping."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pyproxy.dataplane.compile import compile_config
from pyproxy.errors import ConfigError
from pyproxy.loading import check
from pyproxy.stats import Stats
from tests.helpers.proc import run_cli

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = sorted([*ROOT.glob("tests/translate/testdata/*.in.yaml"), *ROOT.glob("config/*.yaml")])


def test_there_are_fixtures_to_sweep():
    assert len(FIXTURES) > 40
    assert ROOT / "config" / "seed-example.yaml" in FIXTURES


def test_check_gives_every_fixture_a_verdict_without_a_traceback():
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda path: run_cli("check", "--config", str(path)), FIXTURES))
    for path, result in zip(FIXTURES, results, strict=True):
        assert "Traceback" not in result.stderr, f"{path.name}:\n{result.stderr}"
        assert result.returncode in (0, 1), f"{path.name}: exit {result.returncode}\n{result.stderr}"
        if result.returncode == 0:
            assert result.stdout.rstrip().endswith("ok"), path.name
        else:  # conditions with errors on stdout, or shape errors naming the file on stderr
            assert result.stdout.rstrip().endswith("errors found") or path.name in result.stderr, path.name


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
async def test_what_serve_would_compile_compiles(path: Path):
    try:
        checked = check([str(path)])
    except ConfigError:
        return  # a shape error: serve refuses it with the same message check prints
    snapshot = await compile_config(checked.result.config, Stats())
    compiled_groups = {(lst.address, lst.port) for lst in checked.result.config.listeners}
    assert set(snapshot.groups) <= compiled_groups


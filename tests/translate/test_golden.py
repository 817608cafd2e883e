"""Golden files: ``testdata/<case>.in.yaml`` → ``<case>.out.yaml`` (IR and statuses).

Run ``pytest tests/translate --update-golden`` to rewrite the .out files, then review the
diff by eye before keeping it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pyproxy import ir
from pyproxy.config import load_text
from pyproxy.translate import translate

TESTDATA = Path(__file__).parent / "testdata"
CASES = sorted(p.name.removesuffix(".in.yaml") for p in TESTDATA.glob("*.in.yaml"))


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PEM data) as readable ``|`` blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def render(case: str) -> str:
    """The translation of ``<case>.in.yaml`` as YAML: IR in to_dict form, then every status."""
    source = TESTDATA / f"{case}.in.yaml"
    loaded = load_text(source.read_text(), source.name)
    result = translate(loaded.resources)
    document = {
        "ok": result.ok,
        "config": ir.to_dict(result.config),
        "statuses": [status.to_dict() for status in result.statuses],
    }
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, request: pytest.FixtureRequest) -> None:
    golden = TESTDATA / f"{case}.out.yaml"
    actual = render(case)
    if request.config.getoption("--update-golden", default=False):
        golden.write_text(actual)
        return
    assert golden.exists(), f"{golden.name} is missing: run pytest tests/translate --update-golden and review it"
    assert actual == golden.read_text()

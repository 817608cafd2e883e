"""The ``recorder`` fixture, loaded by test modules with
``pytest_plugins = ["tests.helpers.recorder_fixture"]`` (a plugin module of its own, so that
pytest imports it first and rewrites its asserts)."""
from __future__ import annotations

import pytest

from tests.helpers.recorder import Recorder, response


@pytest.fixture
async def recorder():
    """``await recorder(*answers)`` (answers in order, the last repeating) or
    ``await recorder(fn)`` (``fn(index, seen)``) starts a Recorder, stopped after the test."""
    started: list[Recorder] = []

    async def start(*answers) -> Recorder:
        if len(answers) == 1 and callable(answers[0]):
            rec = Recorder(answers[0])
        else:
            rec = Recorder.sequence(*(answers or (response(200, b"ok"),)))
        started.append(await rec.start())
        return rec

    yield start
    for rec in started:
        await rec.stop()

"""The ``members`` fixture, loaded by test modules with
``pytest_plugins = ["tests.helpers.members_fixture"]``: ``await members(n)`` starts n
``Member`` endpoints on 127.0.0.1, 127.0.0.2 …, stopped after the test."""
from __future__ import annotations

import pytest

from tests.helpers.members import Member, start_members


@pytest.fixture
async def members():
    started: list[Member] = []

    async def start(count: int) -> list[Member]:
        started.extend(await start_members(count))
        return started[-count:]

    yield start
    for member in started:
        await member.stop()

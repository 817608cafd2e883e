"""The access log's ``start_time`` (``observe.format_time``): formatted once per second, the
same text as formatting each time with ``datetime`` would give, at every fraction and at the
rounding edges."""
from __future__ import annotations

import datetime
import random

from pyproxy.observe import format_time


def by_datetime(epoch: float) -> str:
    dt = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def test_start_time_is_rfc3339_with_milliseconds_in_utc():
    assert format_time(1764756295.8049) == "2025-12-03T10:04:55.804Z"
    assert format_time(0.0) == "1970-01-01T00:00:00.000Z"


def test_start_time_matches_datetime_across_seconds_and_at_rounding_edges():
    draw = random.Random(11)
    epochs = sorted(1764750000 + draw.random() * 100_000 for _ in range(20_000))  # in order, as a log is
    epochs += [1e9 + 0.9999996, 1e9 + 0.9999995, 1e9 + 0.9995, 1e9 - 0.0000004, 1e9 + 0.0000004]
    epochs += draw.sample(epochs, 2_000)  # and out of order: a second seen again
    assert [format_time(e) for e in epochs] == [by_datetime(e) for e in epochs]

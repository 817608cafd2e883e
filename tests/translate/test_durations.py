import pytest

from pyproxy.translate.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0s", 0.0),
        ("500ms", 0.5),
        ("1s", 1.0),
        ("90m", 5400.0),
        ("1h2m3s4ms", 3723.004),
        ("01h", 3600.0),
        ("1s1s", 2.0),  # components add up, as Go's time.ParseDuration does
        ("99999ms", 99.999),
    ],
)
def test_valid(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1", "1.5s", "-1s", "1d", "1us", "100000s", "1h1m1s1ms1h", " 1s", "1S"])
def test_invalid(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)

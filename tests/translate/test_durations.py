import pytest

from pyproxy.translate.durations import parse_duration, parse_go_duration
from pyproxy.translate.sizes import parse_quantity


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


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0.0), ("1.5s", 1.5), ("300ms", 0.3), ("1h30m", 5400.0), ("1.1s", 1.1), ("100us", 0.0001), ("1m0.5s", 60.5),
     ("2µs", 0.000002), (".5s", 0.5)],
)
def test_valid_metav1(text: str, seconds: float) -> None:
    """Kubernetes metav1.Duration, as Go's time.ParseDuration reads it (without a sign)."""
    assert parse_go_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1", "-1s", "1d", "s", "1.5", " 1s", "1S", "0s0"])
def test_invalid_metav1(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_go_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [("0", 0), ("32768", 32768), ("32Ki", 32768), ("1Mi", 1048576), ("20M", 20_000_000), ("1k", 1000),
     ("2Gi", 2 * 2**30)],
)
def test_quantities(text: str, size: int) -> None:
    assert parse_quantity(text) == size


@pytest.mark.parametrize("text", ["", "32KB", "1.5Mi", "-1", "Ki", "01Ki", "1K"])
def test_invalid_quantities(text: str) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_quantity(text)

import pytest

from pyproxy.translate.hostnames import effective_hostnames, hostname_problem, intersect


@pytest.mark.parametrize(
    ("listener", "route", "expected"),
    [
        (None, "foo.example.com", "foo.example.com"),
        (None, "*.example.com", "*.example.com"),
        ("foo.example.com", "foo.example.com", "foo.example.com"),
        ("foo.example.com", "*.example.com", "foo.example.com"),
        ("*.example.com", "foo.example.com", "foo.example.com"),
        ("*.example.com", "foo.bar.example.com", "foo.bar.example.com"),
        ("*.example.com", "*.bar.example.com", "*.bar.example.com"),
        ("*.bar.example.com", "*.example.com", "*.bar.example.com"),
        ("*.example.com", "example.com", None),
        ("example.com", "*.example.com", None),
        ("foo.example.com", "bar.example.com", None),
        ("*.example.com", "foo.example.net", None),
        ("*.example.com", "fooexample.com", None),
    ],
)
def test_intersect(listener: str | None, route: str, expected: str | None) -> None:
    assert intersect(listener, route) == expected


def test_effective_hostnames() -> None:
    assert effective_hostnames(None, ()) == ("*",)
    assert effective_hostnames("*.example.com", ()) == ("*.example.com",)
    assert effective_hostnames("*.example.com", ("b.example.com", "a.example.com", "x.net", "a.example.com")) == (
        "a.example.com",
        "b.example.com",
    )
    assert effective_hostnames("a.example.com", ("x.net",)) == ()


@pytest.mark.parametrize("name", ["example.com", "a", "*.example.com", "x-1.y-2.z", "xn--bcher-kva.example"])
def test_valid_hostnames(name: str) -> None:
    assert hostname_problem(name) is None


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("10.0.0.1", "is an IP address"),
        ("::1", "is an IP address"),
        ("Example.com", "is not valid"),
        ("-a.example.com", "is not valid"),
        ("a..example.com", "is not valid"),
        ("foo.*.example.com", "is not valid"),
        ("*", "is not valid"),
        ("a" * 254, "longer than 253"),
    ],
)
def test_invalid_hostnames(name: str, problem: str) -> None:
    assert problem in (hostname_problem(name) or "")


def test_wildcard_only_where_allowed() -> None:
    assert "is not valid" in (hostname_problem("*.example.com", wildcard=False) or "")

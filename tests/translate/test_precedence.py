from pyproxy import ir
from pyproxy.config.resources import Metadata
from pyproxy.translate.precedence import age_key, match_key


def m(
    kind: str = "PathPrefix", value: str = "/", method: str | None = None, headers: int = 0, query: int = 0
) -> ir.Match:
    return ir.Match(
        path=ir.PathMatch(kind, value),  # type: ignore[arg-type]
        headers=tuple(ir.HeaderMatch(f"h{i}", "Exact", "v") for i in range(headers)),
        query_params=tuple(ir.QueryMatch(f"q{i}", "Exact", "v") for i in range(query)),
        method=method,
    )


def test_match_order_most_specific_first() -> None:
    ordered = [
        m("Exact", "/a"),
        m("Exact", "/"),
        m("RegularExpression", "/a.*"),
        m("PathPrefix", "/longer"),
        m("PathPrefix", "/a", method="GET"),
        m("PathPrefix", "/a", headers=2),
        m("PathPrefix", "/a", headers=1, query=3),
        m("PathPrefix", "/a", query=1),
        m("PathPrefix", "/a"),
        m("PathPrefix", "/"),
    ]
    assert sorted(reversed(ordered), key=match_key) == ordered


def test_age_key_older_first_then_name() -> None:
    old = Metadata(name="z", creation_timestamp="2020-01-01T00:00:00Z")
    new = Metadata(name="a", creation_timestamp="2021-01-01T00:00:00+00:00")
    same_moment_other_zone = Metadata(name="b", creation_timestamp="2021-01-01T01:00:00+01:00")
    missing = Metadata(name="0")
    unparsable = Metadata(name="1", creation_timestamp="yesterday")
    ordered = [old, new, same_moment_other_zone, missing, unparsable]
    assert sorted(reversed(ordered), key=age_key) == ordered


def test_age_key_namespace_before_name() -> None:
    assert age_key(Metadata(name="b", namespace="a")) < age_key(Metadata(name="a", namespace="b"))

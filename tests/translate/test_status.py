from pyproxy import ir
from pyproxy.translate.status import Condition, ObjectStatus, Result


def status(*conditions: Condition) -> ObjectStatus:
    return ObjectStatus("HTTPRoute", "default", "r", "f.yaml: document 1, line 1", conditions)


def test_ok_means_no_error_condition() -> None:
    assert status(Condition("Accepted", True, "Accepted", "spec.fallback is ignored (not supported)")).ok
    assert status(Condition("Programmed", True, "Programmed", "attachedRoutes: 2")).ok
    assert status(Condition("Conflicted", False, "NoConflicts")).ok
    assert not status(Condition("Accepted", True, "Accepted"), Condition("ResolvedRefs", False, "BackendNotFound")).ok
    assert not status(Condition("PartiallyInvalid", True, "UnsupportedValue")).ok
    assert not status(Condition("Conflicted", True, "HostnameConflict")).ok
    assert not status(Condition("Programmed", False, "Invalid")).ok


def test_result_ok() -> None:
    good = status(Condition("Accepted", True, "Accepted"))
    bad = status(Condition("Accepted", False, "NoMatchingParent"))
    assert Result(ir.Config(), (good,)).ok
    assert not Result(ir.Config(), (good, bad)).ok

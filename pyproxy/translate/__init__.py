"""translate/: Gateway API resources → IR routing table plus status conditions (a pure function)."""

from .status import Condition, ObjectStatus, Result
from .translator import Options, translate

__all__ = ["Condition", "ObjectStatus", "Options", "Result", "translate"]

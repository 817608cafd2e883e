"""Sizes written as Envoy Gateway's resource.Quantity fields take them (``32768``, ``32Ki``,
``1Mi``, ``20M``), in bytes."""

from __future__ import annotations

import re

_QUANTITY = re.compile(r"([1-9][0-9]*|0)([EPTGMK]i|[EPTGMk])?")
_MULTIPLIERS = {
    None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}


def parse_quantity(text: str) -> int:
    """Bytes in ``text``; ``ValueError`` unless it is an integer with an optional binary
    (``Ki``, ``Mi`` …) or decimal (``k``, ``M`` …) suffix."""
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size: use bytes or a quantity such as 32Ki or 1Mi")
    number, suffix = match.groups()
    return int(number) * _MULTIPLIERS[suffix]

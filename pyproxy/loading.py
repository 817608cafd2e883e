"""Loading a configuration: read the files (config/) and translate them (translate/).

``check`` and ``explain`` call ``load`` in their own process. The serving process does not
import this module: its loader process (a fork, see loader.py) does, and sends the result back.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from . import config as config_room
from . import translate as translate_room
from .loader import Loaded
from .status import ObjectStatus, Result

log = logging.getLogger("pyproxy")


def load(paths: Sequence[str], listen: tuple[str, int], bind_address: str) -> Loaded:
    """Read and translate the configuration; raises ConfigError on shape errors. ``listen``
    and ``bind_address`` are ``serve``'s --listen and --bind-address."""
    loaded = _read(paths)
    files = dict.fromkeys(doc.location.file for doc in (*loaded.resources, *loaded.skipped))
    return Loaded(tuple(files), _translate(loaded, listen, bind_address), loaded.resources)


def _read(paths: Sequence[str]) -> config_room.Loaded:
    loaded = config_room.load(paths)
    for skipped in loaded.skipped:
        log.info("skipping %s", skipped)
    for warning in loaded.warnings:
        log.warning("%s", warning)
    return loaded


def _translate(loaded: config_room.Loaded, listen: tuple[str, int], bind_address: str) -> Result:
    options = translate_room.Options(implicit_address=listen[0], implicit_port=listen[1], bind_address=bind_address)
    return translate_room.translate(loaded.resources, options)


@dataclass(frozen=True)
class Checked:
    """What ``pyproxy check`` found: the translation, and whether loading met a likely mistake."""

    result: Result
    mistaken: bool

    @property
    def statuses(self) -> tuple[ObjectStatus, ...]:
        return self.result.statuses

    @property
    def ok(self) -> bool:
        return self.result.ok and not self.mistaken


def check(paths: Sequence[str]) -> Checked:
    """``pyproxy check``: load and translate only (with translate's default listener
    addresses, serve's defaults); warnings are logged as ``serve`` logs them."""
    loaded = _read(paths)
    return Checked(translate_room.translate(loaded.resources), any(warning.mistake for warning in loaded.warnings))

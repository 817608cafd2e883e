"""Configuration: YAML files and directories in, typed resources with locations out.

``load`` reads everything it is given and reports every problem at once in a single
``ConfigError``; nothing is returned unless the whole configuration is well formed.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from pyproxy.config.parse import Skipped, format_error, object_label, parse_document
from pyproxy.config.resources import Location, Resource
from pyproxy.config.yamlload import FileContents, compose, find_files, read_file
from pyproxy.errors import ConfigError

__all__ = ["Loaded", "Skipped", "load", "load_text"]


@dataclass(frozen=True, slots=True)
class Loaded:
    resources: tuple[Resource, ...]  # in file and document order
    skipped: tuple[Skipped, ...]  # documents of kinds pyproxy does not read, to log


def load(paths: Sequence[str]) -> Loaded:
    """Load YAML files and directories (walked recursively) in the order given. A file named
    twice, directly or through a directory, is read once."""
    if isinstance(paths, str):
        raise TypeError("load() takes a sequence of paths, not a single string")
    collector = _Collector()
    read: set[str] = set()
    for path in paths:
        files, errors = find_files(path)
        collector.errors += errors
        for file in files:
            real = os.path.realpath(file)
            if real not in read:
                read.add(real)
                collector.add(read_file(file))
    return collector.result()


def load_text(text: str, filename: str = "<text>") -> Loaded:
    """Load YAML text as if read from ``filename``."""
    collector = _Collector()
    collector.add(compose(text, filename))
    return collector.result()


class _Collector:
    """Resources, skipped documents and errors, kept in order of appearance."""

    def __init__(self) -> None:
        self.resources: list[Resource] = []
        self.skipped: list[Skipped] = []
        self.errors: list[str] = []
        self.first_seen: dict[str, Location] = {}

    def add(self, contents: FileContents) -> None:
        for document in contents.documents:
            result, errors = parse_document(document)
            self.errors += errors
            if isinstance(result, Skipped):
                self.skipped.append(result)
            elif result is not None:
                self._add_resource(result)
        self.errors += contents.errors

    def _add_resource(self, resource: Resource) -> None:
        metadata = resource.metadata
        label = object_label(type(resource).__name__, metadata.namespace, metadata.name)
        first = self.first_seen.setdefault(label, resource.location)
        if first is resource.location:
            self.resources.append(resource)
        else:
            self.errors.append(format_error(resource.location, label, resource.location.line, "",
                                            f"duplicate object; first defined at {first}"))

    def result(self) -> Loaded:
        if self.errors:
            raise ConfigError(self.errors)
        return Loaded(tuple(self.resources), tuple(self.skipped))

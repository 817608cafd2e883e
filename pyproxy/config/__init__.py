"""Configuration: YAML files and directories in, typed resources with locations out.

``load`` reads everything it is given and reports every problem at once in a single
``ConfigError``; nothing is returned unless the whole configuration is well formed. What
loads but deserves a word (a document that is not a Kubernetes object, a misspelled kind, no
route at all) comes back as warnings (``documents.py`` states the rules).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from pyproxy.config.documents import LoadWarning, Read
from pyproxy.config.kinds import Resource
from pyproxy.config.parse import Skipped, format_error, object_label
from pyproxy.config.resources import GRPCRoute, HTTPRoute, Location
from pyproxy.config.yamlload import FileContents, compose, find_files, read_file
from pyproxy.errors import ConfigError

__all__ = ["NO_ROUTES", "LoadWarning", "Loaded", "Skipped", "load", "load_text"]

NO_ROUTES = "no HTTPRoute or GRPCRoute in the configuration: every request will be answered 404"


@dataclass(frozen=True, slots=True)
class Loaded:
    resources: tuple[Resource, ...]  # in file and document order
    skipped: tuple[Skipped, ...]  # documents of kinds pyproxy does not read, to log
    warnings: tuple[LoadWarning, ...]  # in order of appearance, NO_ROUTES last


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
        self.warnings: list[LoadWarning] = []
        self.errors: list[str] = []
        self.first_seen: dict[str, Location] = {}

    def add(self, contents: FileContents) -> None:
        read = Read()
        for document in contents.documents:
            read.add(document)
        for result in read.found:
            if isinstance(result, Skipped):
                self.skipped.append(result)
            else:
                self._add_resource(result)
        self.warnings += read.warnings
        self.errors += read.errors
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
        if not any(isinstance(resource, HTTPRoute | GRPCRoute) for resource in self.resources):
            self.warnings.append(LoadWarning(NO_ROUTES))
        return Loaded(tuple(self.resources), tuple(self.skipped), tuple(self.warnings))

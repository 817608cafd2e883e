"""What each YAML document is, before the shape of its kind is read (``parse.py``).

- ``kind: List`` (``apiVersion: v1``, what ``kubectl get -o yaml`` writes): its ``items`` are
  read one by one, each located by file, document and ``items[i]``.
- A mapping with none of ``apiVersion``, ``kind``, ``metadata`` and ``spec`` is not a Kubernetes
  object (a ``docker-compose.yml``, a Helm ``values.yaml`` left in the directory): it is skipped
  with a warning. With any of them it is meant as a resource, so a missing ``kind`` or
  ``apiVersion`` is an error; so is a document that is not a mapping at all, and an item of a
  List without a ``kind``.
- A kind pyproxy reads is parsed. A kind that is nearly one of them (``HttpRoute``,
  ``Backends``, ``Gatway``) is almost always a typo: it is skipped with a "did you mean"
  warning that ``check`` fails on. Any other kind (GatewayClass, Service, Deployment, ...) is
  skipped, to be logged.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from yaml import MappingNode, Node, ScalarNode, SequenceNode

from pyproxy.config.kinds import KINDS, Resource
from pyproxy.config.parse import Skipped, document_label, format_error, get, parse_document
from pyproxy.config.resources import Location
from pyproxy.config.yamlload import Document

_OBJECT_KEYS = ("apiVersion", "kind", "metadata", "spec")
_LIST_KEYS = ("apiVersion", "kind", "metadata", "items")

# Real kinds close to one pyproxy reads (TCPRoute ~ HTTPRoute): skipped, never "corrected".
_OTHER_KINDS = frozenset({
    "GatewayClass", "TLSRoute", "TCPRoute", "UDPRoute", "BackendLBPolicy", "ListenerSet",
    "XListenerSet", "XBackendTrafficPolicy", "HTTPRouteFilter", "SecurityPolicy", "EnvoyProxy", "EnvoyPatchPolicy",
    "EnvoyExtensionPolicy",
})
_TYPO_SIMILARITY = 0.85  # difflib ratio, case ignored: Backends/Backend 0.93, GatewayClass/Gateway 0.74


@dataclass(frozen=True, slots=True)
class LoadWarning:
    """Something loaded but worth saying. ``mistake``: almost certainly not what the user meant,
    so ``check`` fails on it (``serve`` logs it and serves)."""

    message: str
    mistake: bool = False

    def __str__(self) -> str:
        return self.message


@dataclass(slots=True)
class Read:
    """What the documents read so far hold, in order of appearance."""

    found: list[Resource | Skipped] = field(default_factory=list)
    warnings: list[LoadWarning] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, document: Document) -> None:
        node = document.node
        if not isinstance(node, MappingNode):
            self._add_object(document)
        elif _plain(get(node, "kind")) == "List":
            self._add_list(document, node)
        elif document.item is None and not any(get(node, key) is not None for key in _OBJECT_KEYS):
            self.warnings.append(LoadWarning(format_error(
                _location(document), "", node.start_mark.line + 1, "",
                "not a Kubernetes object (no apiVersion or kind); skipped")))
        else:
            self._add_object(document)

    def _add_object(self, document: Document) -> None:
        result, errors = parse_document(document)
        self.errors += errors
        if isinstance(result, Skipped) and (kind := _meant(result.kind)) is not None:
            kind_node = get(document.node, "kind") or document.node
            self.warnings.append(LoadWarning(format_error(
                result.location, document_label(document.node), kind_node.start_mark.line + 1, "kind",
                f"unknown kind {result.kind!r}, document skipped; did you mean {kind}?"), mistake=True))
        elif result is not None:
            self.found.append(result)

    def _add_list(self, document: Document, node: MappingNode) -> None:
        location = _location(document)

        def error(at: Node, path: str, problem: str) -> None:
            self.errors.append(format_error(location, "List", at.start_mark.line + 1, path, problem))

        for key_node, _ in node.value:
            key = _plain(key_node)
            if key not in _LIST_KEYS:
                close = difflib.get_close_matches(key or "", _LIST_KEYS, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(_LIST_KEYS)}"
                error(key_node, key or "", f"unknown field; {hint}")
        version = get(node, "apiVersion")
        if version is None or _plain(version) != "v1":
            error(version or node, "apiVersion",
                  "required field missing" if version is None
                  else f"unsupported version {_plain(version)!r} for List; expected v1")
        items = get(node, "items")
        if not isinstance(items, SequenceNode):
            error(items or node, "items", "required field missing" if items is None else "expected a list")
            return
        for i, item in enumerate(items.value):
            self.add(Document(document.file, document.index, item, i))


def _location(document: Document) -> Location:
    return Location(document.file, document.index, document.node.start_mark.line + 1, document.item)


def _plain(node: Node | None) -> str | None:
    return node.value if isinstance(node, ScalarNode) else None


def _meant(kind: str) -> str | None:
    """The kind pyproxy reads that ``kind`` is a misspelling of, if any."""
    if kind in _OTHER_KINDS:
        return None
    folded = {name.lower(): name for name in KINDS}
    close = difflib.get_close_matches(kind.lower(), folded, n=1, cutoff=_TYPO_SIMILARITY)
    return folded[close[0]] if close else None

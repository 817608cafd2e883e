"""YAML nodes to the typed resources of ``resources.py``, driven by their declarations.

One generic walker reads every kind: it follows ``dataclasses.fields`` and the type hints
(dataclass, ``X | None``, ``Literal`` (``Annotated`` with ``NotSupported`` values),
``tuple[X, ...]``, ``dict[str, V]``, ``str``, ``Text``, ``Duration``, ``GoDuration``,
``Quantity``, ``HeaderName``, ``HeadText``, ``int``, ``bool``) and the class's
``NOT_SUPPORTED`` keys; ``checks.py`` checks what spans fields. Errors are
collected, never raised, each as
``<file>: document <n> (<Kind> <ns>/<name>), line <l>: <field.path[i]>: <problem>``.

Choices beyond the conventions documented in ``resources.py``:

- An explicit ``null`` means "not set", as in Kubernetes: a field with a default gets its
  default; a required field given ``null`` is a type error.
- A ``str`` field accepts any plain YAML scalar and keeps its source text, so
  ``sectionName: 443`` is ``"443"`` and ``value: yes`` is ``"yes"``. Kubernetes would refuse
  these; we accept them because the source text is exactly what the user wrote.
- ``int`` and ``bool`` fields take YAML integers and booleans only. A quoted ``"443"`` is an
  error: quoting says "string", and a cluster would refuse it too.
- Merge keys (``<<``) are refused rather than half-supported.
- What we do not read is not checked beyond YAML syntax: top-level ``status``, the metadata
  the API server fills in (``_IGNORED``, so ``kubectl get -o yaml`` output loads as it is)
  and documents of kinds we skip.
"""
from __future__ import annotations

import binascii
import dataclasses
import difflib
import functools
import re
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, NewType, Union

from yaml import MappingNode, Node, ScalarNode, SequenceNode
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from pyproxy.config import checks
from pyproxy.config.kinds import KINDS, Resource
from pyproxy.config.resources import (
    Duration,
    GoDuration,
    HeaderName,
    HeadText,
    Location,
    Metadata,
    NotSupported,
    Quantity,
    Secret,
    Text,
)
from pyproxy.config.yamlload import Document

Base64Text = NewType("Base64Text", str)
"""Text written base64-encoded in YAML (Secret ``data``); parsed to the decoded text."""

_TAG = "tag:yaml.org,2002:"
_NULL, _STR, _INT, _BOOL, _MERGE = (_TAG + name for name in ("null", "str", "int", "bool", "merge"))
# Scalars a string field accepts, keeping their source text (``<<`` and ``=`` as values too).
_STRING_TAGS = frozenset(_TAG + name for name in ("str", "int", "float", "bool", "timestamp", "merge", "value"))

_LINE_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")  # control characters but TAB
_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # ... but TAB, LF, CR
_DURATION = re.compile(r"([0-9]{1,5}(h|m|s|ms)){1,4}")  # GEP-2257
_GO_DURATION = re.compile(r"(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|μs|ms|s|m|h))+|0")  # metav1.Duration
_QUANTITY = re.compile(r"[1-9][0-9]*(?:[EPTGMK]i|[EPTGMk])?")  # Envoy Gateway's resource.Quantity pattern
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token: a header name

# Read apart (kind, apiVersion) or ignored (status) at the top of a document.
_TOP_LEVEL_KEYS = ("apiVersion", "kind", "status")
# Keys of a class accepted and not read: what the API server writes into an object's metadata.
_IGNORED: dict[type, tuple[str, ...]] = {
    Metadata: ("uid", "resourceVersion", "generation", "selfLink", "managedFields", "ownerReferences",
               "finalizers", "deletionTimestamp", "deletionGracePeriodSeconds", "generateName"),
}
_CLUSTER_SCOPED = frozenset({"Namespace"})

_CONSTRUCTOR = SafeConstructor()
_RESOLVER = Resolver()


_INVALID: Any = object()  # the value had errors, already reported: its parents are not built


@dataclass(frozen=True, slots=True)
class Skipped:
    """A document of a kind pyproxy does not read (GatewayClass, Service, ...)."""

    kind: str
    name: str  # metadata.name, or "" when absent
    location: Location

    def __str__(self) -> str:
        return f"{self.kind} {self.name or '(unnamed)'} ({self.location})"


@dataclass(frozen=True, slots=True)
class _SecretDocument:
    """A Secret as written; ``_secret`` merges ``stringData`` into the decoded ``data``."""

    metadata: Metadata
    type: str = "Opaque"
    data: dict[str, Base64Text] = field(default_factory=dict)
    string_data: dict[str, Text] = field(default_factory=dict)


def _secret(document: _SecretDocument, location: Location) -> Secret:
    data = {key: Text(value) for key, value in (*document.data.items(), *document.string_data.items())}
    # (stringData comes last, so it wins, as in Kubernetes)
    return Secret(metadata=document.metadata, location=location, type=document.type, data=data)


# Kinds whose YAML shape differs from their resource: the shape read, and how to build it.
_SHAPES: dict[type, tuple[type, Callable[[Any, Location], Resource]]] = {
    Secret: (_SecretDocument, _secret),
}


def object_label(kind: str, namespace: str, name: str) -> str:
    """``HTTPRoute default/web``, or ``Namespace team-a`` for cluster-scoped kinds."""
    return f"{kind} {name}" if kind in _CLUSTER_SCOPED else f"{kind} {namespace}/{name}"


def format_error(location: Location, label: str, line: int, path: str, problem: str) -> str:
    """The one shape of every message about a document."""
    where = location.where
    if label:
        where += f" ({label})"
    field_path = f"{path}: " if path else ""
    return f"{where}, line {line}: {field_path}{problem}"


def parse_document(document: Document) -> tuple[Resource | Skipped | None, list[str]]:
    """The resource a document describes (or a ``Skipped`` for a kind we do not read) and the
    errors found. With any error, the result is ``None``."""
    node = document.node
    location = Location(document.file, document.index, node.start_mark.line + 1, document.item)
    parser = _Parser(location, document_label(node))
    if not isinstance(node, MappingNode):
        parser.expected(node, "", "a Kubernetes object (a mapping)")
        return None, parser.messages
    kind = parser.header(node, "kind")
    if isinstance(kind, str) and kind not in KINDS:
        return Skipped(kind, _name(node) or "", location), []
    version = parser.header(node, "apiVersion")
    if kind is _INVALID or version is _INVALID:
        return None, parser.messages
    versions, cls = KINDS[kind]
    if version not in versions:
        parser.error(get(node, "apiVersion") or node, "apiVersion",
                     f"unsupported version {version!r} for {kind}; expected {_one_of(versions)}")
        return None, parser.messages
    resource = parser.resource(node, cls, location)
    return (None if parser.messages else _in_default_namespace(resource)), parser.messages


def _in_default_namespace(resource: Resource) -> Resource:
    """An empty ``namespace: ""`` means the default one, as it does to kubectl."""
    if resource.metadata.namespace:
        return resource
    return dataclasses.replace(resource, metadata=dataclasses.replace(resource.metadata, namespace="default"))


class _Parser:
    """Walks one document, collecting messages. Each method returns the value read or
    ``_INVALID`` after reporting why."""

    def __init__(self, location: Location, label: str) -> None:
        self.location = location
        self.label = label
        self.messages: list[str] = []

    def error(self, node: Node, path: str, problem: str) -> Any:
        self.messages.append(format_error(self.location, self.label, node.start_mark.line + 1, path, problem))
        return _INVALID

    def expected(self, node: Node, path: str, what: str, tag: str = "") -> Any:
        problem = f"expected {what}, got {_describe(node)}"
        if tag and _quoted(node) and _RESOLVER.resolve(ScalarNode, node.value, (True, False)) == tag:
            problem += "; remove the quotes"
        return self.error(node, path, problem)

    # ------------------------------------------------------------------ top level

    def header(self, node: MappingNode, key: str) -> Any:
        value = get(node, key)
        if value is None:
            return self.error(node, key, "required field missing")
        return self.string(value, key)

    def resource(self, node: MappingNode, cls: type, location: Location) -> Any:
        entry = _SHAPES.get(cls)
        if entry is None:
            return self.dataclass(node, cls, "", provided={"location": location}, ignored=_TOP_LEVEL_KEYS)
        shape, build = entry
        value = self.dataclass(node, shape, "", ignored=_TOP_LEVEL_KEYS)
        return value if value is _INVALID else build(value, location)

    # ------------------------------------------------------------------ structure

    def value(self, node: Node, tp: Any, path: str) -> Any:
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            return self.dataclass(node, tp, path)
        origin = typing.get_origin(tp)
        if origin is Annotated:
            return self.annotated(node, tp, path)
        if origin is Literal:
            return self.literal(node, typing.get_args(tp), path)
        if origin in (Union, types.UnionType):
            return self.optional(node, tp, path)
        if origin is tuple:
            return self.sequence(node, typing.get_args(tp)[0], path)
        if origin is dict:
            return self.mapping(node, typing.get_args(tp)[1], path)
        leaf = _LEAVES.get(tp)
        if leaf is None:
            raise TypeError(f"no parser for field type {tp!r}")
        return leaf(self, node, path)

    def dataclass(self, node: Node, cls: type, path: str, *, provided: dict[str, Any] | None = None,
                  ignored: Sequence[str] = ()) -> Any:
        """``provided`` fields are given, not read; ``ignored`` keys (and the class's own in
        ``_IGNORED``) are allowed and skipped."""
        if not isinstance(node, MappingNode):
            return self.expected(node, path, "a mapping")
        ignored = (*ignored, *_IGNORED.get(cls, ()))
        values = dict(provided or {})
        fields = {key: f for key, f in checks.yaml_fields(cls).items() if f.name not in values}
        not_supported = getattr(cls, "NOT_SUPPORTED", ())
        hints = _hints(cls)
        present: dict[str, Node] = {}
        valid = True
        for key, key_node, value_node in self.entries(node, path):
            f = fields.get(key)
            if f is None:
                if key in not_supported:
                    self.error(key_node, _child(path, key), "not supported by pyproxy; remove it")
                    valid = False
                elif key not in ignored:
                    self.unknown(key_node, _child(path, key), [*fields, *ignored])
                    valid = False  # what was meant is unknown: no check of the rest (checks.py)
                continue
            present[key] = value_node
            if _is_null(value_node) and _has_default(f):
                continue
            value = self.value(value_node, hints[f.name], _child(path, key))
            valid = valid and value is not _INVALID
            values[f.name] = value
        missing = [key for key, f in fields.items() if key not in present and not _has_default(f)]
        for key in missing:
            self.error(node, _child(path, key), "required field missing")
        if not valid or missing:
            return _INVALID
        value = cls(**values)
        found = checks.problem(value)
        if found is not None:
            key, problem = found
            return self.error(present.get(key, node), _child(path, key) if key else path, problem)
        return value

    def unknown(self, key_node: Node, path: str, names: list[str]) -> None:
        close = difflib.get_close_matches(key_node.value, names, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(names)}"
        self.error(key_node, path, f"unknown field; {hint}")

    def entries(self, node: MappingNode, path: str) -> Iterator[tuple[str, Node, Node]]:
        """(key, key node, value node) in order; bad and duplicate keys are reported and left out."""
        first_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag == _MERGE:
                self.error(key_node, path, "merge keys (<<) are not supported")
                continue
            key = self.string(key_node, path)
            if key is _INVALID:
                continue
            line = key_node.start_mark.line + 1
            if key in first_lines:
                self.error(key_node, path, f"duplicate key {key!r} (first at line {first_lines[key]})")
                continue
            first_lines[key] = line
            yield key, key_node, value_node

    def mapping(self, node: Node, value_type: Any, path: str) -> Any:
        if not isinstance(node, MappingNode):
            return self.expected(node, path, "a mapping")
        result = {key: self.value(value, value_type, f"{path}[{key}]") for key, _, value in self.entries(node, path)}
        return _INVALID if any(value is _INVALID for value in result.values()) else result

    def sequence(self, node: Node, item_type: Any, path: str) -> Any:
        if not isinstance(node, SequenceNode):
            return self.expected(node, path, "a list")
        items = tuple(self.value(item, item_type, f"{path}[{i}]") for i, item in enumerate(node.value))
        return _INVALID if any(item is _INVALID for item in items) else items

    def optional(self, node: Node, tp: Any, path: str) -> Any:
        (inner,) = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        return None if _is_null(node) else self.value(node, inner, path)

    def annotated(self, node: Node, tp: Any, path: str) -> Any:
        """An enum (``Literal``) with values Envoy Gateway has and pyproxy refuses (``NotSupported``)."""
        inner, *extras = typing.get_args(tp)
        refused = {value for extra in extras if isinstance(extra, NotSupported) for value in extra.values}
        if isinstance(node, ScalarNode) and node.value in refused:
            choices = _one_of(typing.get_args(inner))
            return self.error(node, path, f"{node.value!r} is not supported by pyproxy; expected {choices}")
        return self.value(node, inner, path)

    def literal(self, node: Node, choices: tuple[Any, ...], path: str) -> Any:
        value = (self.integer if isinstance(choices[0], int) else self.string)(node, path)
        if value is _INVALID or value in choices:
            return value
        return self.error(node, path, f"unknown value {value!r}; expected {_one_of(choices)}")

    # ------------------------------------------------------------------ leaves

    def string(self, node: Node, path: str) -> Any:
        return self._checked_text(node, path, _LINE_CONTROL)

    def text(self, node: Node, path: str) -> Any:
        return self._checked_text(node, path, _TEXT_CONTROL)

    def _checked_text(self, node: Node, path: str, forbidden: re.Pattern[str]) -> Any:
        if not (isinstance(node, ScalarNode) and node.tag in _STRING_TAGS):
            return self.expected(node, path, "a string")
        return self._allowed(node, path, node.value, forbidden)

    def _allowed(self, node: Node, path: str, value: str, forbidden: re.Pattern[str]) -> Any:
        bad = forbidden.search(value)
        if bad:
            return self.error(node, path, f"control character {bad.group()!r} not allowed")
        return value

    def duration(self, node: Node, path: str) -> Any:
        value = self.string(node, path)
        if value is _INVALID or _DURATION.fullmatch(value):
            return value
        return self.error(node, path,
                          f"invalid duration {value!r}; expected a GEP-2257 duration such as 1h, 30s or 500ms")

    def go_duration(self, node: Node, path: str) -> Any:
        value = self.string(node, path)
        if value is _INVALID or _GO_DURATION.fullmatch(value):
            return value
        return self.error(node, path, f"invalid duration {value!r}; expected a duration such as 1h, 30s, 1.5s or 500ms")

    def quantity(self, node: Node, path: str) -> Any:
        """A YAML integer (bytes) or a string such as ``32Ki``; kept as text (translate/ sizes it)."""
        if isinstance(node, ScalarNode) and node.tag == _INT:
            number = _CONSTRUCTOR.construct_yaml_int(node)
            return str(number) if number >= 0 else self.error(node, path, f"size {number} is negative")
        value = self.string(node, path)
        if value is _INVALID or _QUANTITY.fullmatch(value):
            return value
        return self.error(node, path, f"invalid size {value!r}; expected bytes or a quantity such as 32Ki or 1Mi")

    def header_name(self, node: Node, path: str) -> Any:
        value = self.string(node, path)
        if value is _INVALID or _TOKEN.fullmatch(value):
            return value
        return self.error(
            node, path, f"{value!r} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)"
        )

    def head_text(self, node: Node, path: str) -> Any:
        """HTTP/1.1 heads are latin-1 (the data plane encodes them so): nothing else can be sent."""
        value = self.string(node, path)
        if value is _INVALID:
            return value
        try:
            value.encode("latin-1")
        except UnicodeEncodeError as exc:
            return self.error(
                node, path,
                f"character {value[exc.start]!r} is not latin-1, so it cannot be sent in an HTTP message head"
            )
        return value

    def base64_text(self, node: Node, path: str) -> Any:
        encoded = self.text(node, path)
        if encoded is _INVALID:
            return encoded
        try:
            decoded = _decode_base64(encoded)
        except ValueError as exc:
            return self.error(node, path, f"invalid base64 ({str(exc).lower()})")
        try:
            return self._allowed(node, path, decoded.decode("utf-8"), _TEXT_CONTROL)
        except UnicodeDecodeError:
            return self.error(node, path, "decoded value is not UTF-8 text")

    def integer(self, node: Node, path: str) -> Any:
        if isinstance(node, ScalarNode) and node.tag == _INT:
            return _CONSTRUCTOR.construct_yaml_int(node)
        return self.expected(node, path, "an integer", _INT)

    def boolean(self, node: Node, path: str) -> Any:
        if isinstance(node, ScalarNode) and node.tag == _BOOL:
            return _CONSTRUCTOR.construct_yaml_bool(node)
        return self.expected(node, path, "a boolean", _BOOL)


_LEAVES: dict[Any, Callable[[_Parser, Node, str], Any]] = {
    str: _Parser.string,
    Text: _Parser.text,
    Duration: _Parser.duration,
    GoDuration: _Parser.go_duration,
    Quantity: _Parser.quantity,
    HeaderName: _Parser.header_name,
    HeadText: _Parser.head_text,
    Base64Text: _Parser.base64_text,
    int: _Parser.integer,
    bool: _Parser.boolean,
}


def _decode_base64(encoded: str) -> bytes:
    """Standard base64 as Kubernetes (Go's decoder) reads it: line breaks are ignored, padding
    is required, and anything else outside the alphabet is an error, not silently dropped."""
    compact = encoded.replace("\r", "").replace("\n", "")
    if not compact.isascii():
        raise ValueError("only base64 data is allowed")
    if len(compact) % 4:
        raise ValueError("incorrect padding")
    return binascii.a2b_base64(compact, strict_mode=True)


# ---------------------------------------------------------------------- declarations


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


# ---------------------------------------------------------------------- nodes


def get(node: Node | None, key: str) -> Node | None:
    """The value of the first ``key`` in a mapping node, without reporting anything."""
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.value == key:
                return value_node
    return None


def _plain(node: Node | None) -> str | None:
    """A scalar's text if it can go into a message line as is."""
    if isinstance(node, ScalarNode) and node.tag in _STRING_TAGS and not _LINE_CONTROL.search(node.value):
        return node.value
    return None


def _name(node: Node) -> str | None:
    return _plain(get(get(node, "metadata"), "name"))


def document_label(node: Node) -> str:
    """``HTTPRoute default/web`` as far as the document says, for message prefixes."""
    kind = _plain(get(node, "kind"))
    if kind is None:
        return ""
    name = _name(node)
    if name is None:
        return kind
    namespace = _plain(get(get(node, "metadata"), "namespace")) or "default"
    return object_label(kind, namespace, name)


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL


def _quoted(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.style in ("'", '"')


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag == _NULL:
        return "null"
    if node.tag == _STR:
        value = node.value if len(node.value) <= 40 else node.value[:37] + "..."
        return repr(value)
    if node.tag in _STRING_TAGS:
        return node.value
    return f"a value tagged {node.tag.replace(_TAG, '!!', 1)}"


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _one_of(choices: Sequence[Any]) -> str:
    names = [str(choice) for choice in choices]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]

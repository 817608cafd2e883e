"""Configuration files to YAML node trees that remember their lines.

Paths name files or directories; a directory is read recursively (``*.yaml`` and ``*.yml``,
sorted, dot-files and dot-directories skipped, so Kubernetes ConfigMap mounts with their
``..data`` links work). Each file may hold several documents. We compose nodes instead of
loading Python objects because every node carries its start line, which error messages
need. Checking the shape of the nodes (including duplicate keys) is ``parse.py``'s job.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

YAML_SUFFIXES = (".yaml", ".yml")

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NULL_TAG = "tag:yaml.org,2002:null"
_TAB_INDENT = re.compile(r"[ ]*\t")


@dataclass(frozen=True, slots=True)
class Document:
    """One non-empty document. ``index`` is 1-based and counts empty documents too, so it
    matches what a reader counts in the file. An item of a ``kind: List`` document is a
    document of its own, with ``item`` its 0-based index in ``items``."""

    file: str
    index: int
    node: yaml.Node
    item: int | None = None


@dataclass(frozen=True, slots=True)
class FileContents:
    documents: tuple[Document, ...]
    errors: tuple[str, ...]  # problems reading the file; they come after its documents


def find_files(path: str) -> tuple[list[str], list[str]]:
    """The YAML files named by ``path`` and any errors. A file is taken whatever its name;
    a directory is walked."""
    if os.path.isdir(path):
        return _walk(path)
    if os.path.lexists(path):
        return [path], []
    return [], [f"{path}: no such file or directory"]


def _walk(root: str) -> tuple[list[str], list[str]]:
    found: list[str] = []
    errors: list[str] = []

    def report(exc: OSError) -> None:
        errors.append(f"{exc.filename}: cannot read directory: {exc.strerror}")

    for directory, subdirectories, names in os.walk(root, onerror=report):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        found += [
            os.path.join(directory, name)
            for name in names
            if not name.startswith(".") and name.endswith(YAML_SUFFIXES)
        ]
    if not found and not errors:
        errors.append(f"{root}: no YAML files found")
    return sorted(found, key=lambda file: file.split(os.sep)), errors


def read_file(file: str) -> FileContents:
    """Read and compose one file; a file that cannot be read or decoded is an error."""
    try:
        data = Path(file).read_bytes()
    except OSError as exc:
        return FileContents((), (f"{file}: cannot read: {exc.strerror}",))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return FileContents((), (f"{file}: line {line}: not valid UTF-8",))
    return compose(text, file)


def compose(text: str, file: str) -> FileContents:
    """Compose every document of ``text``. A syntax error ends the file: the documents before
    it are kept (so their own errors are reported too) and the error is recorded."""
    documents: list[Document] = []
    try:
        for index, node in enumerate(yaml.compose_all(text, Loader=_LOADER), start=1):
            if not _is_empty(node):
                documents.append(Document(file, index, node))
    except yaml.YAMLError as exc:
        return FileContents(tuple(documents), (f"{file}: {_describe_syntax_error(exc, text)}",))
    return FileContents(tuple(documents), ())


def _is_empty(node: yaml.Node) -> bool:
    """A document with nothing but comments composes to a null scalar; so does ``~``."""
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG


def _describe_syntax_error(exc: yaml.YAMLError, text: str) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        # The C reader reports a byte offset, the Python one a character offset; the first
        # occurrence of the rejected character is where either stopped.
        char = chr(exc.character) if isinstance(exc.character, int) else exc.character
        line = text.count("\n", 0, max(text.find(char), 0)) + 1
        return f"line {line}: YAML syntax error: unacceptable character {char!r} ({exc.reason})"
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        line = exc.problem_mark.line + 1
        if _TAB_INDENT.match(_line_text(text, exc.problem_mark.line)):
            # PyYAML's words for it name scanner states ("cannot start any token")
            return f"line {line}: YAML syntax error: tabs are not allowed in YAML indentation"
        message = f"line {line}: YAML syntax error: {exc.problem}"
        if exc.context and exc.context_mark is not None:
            message += f" ({exc.context} at line {exc.context_mark.line + 1})"
        elif exc.context:
            message += f" ({exc.context})"
        return message
    return f"YAML syntax error: {exc}"


def _line_text(text: str, index: int) -> str:
    """The 0-based line ``index`` of ``text`` ("" past the end, where the C reader may point)."""
    lines = text.split("\n")
    return lines[index] if index < len(lines) else ""

"""Kubernetes objects from YAML and JSON files, directories and stdin, one at a time.

Read the way kubectl reads them, so ``webhook check`` judges what ``kubectl apply`` would
send: multi-document YAML, ``List`` kinds flattened into their items, empty documents
skipped, timestamps left as strings (sigs.k8s.io/yaml never makes them dates), and a
duplicate key refused rather than resolved to the last one (``policy/kubeyaml.py``).
Anything unreadable is reported with the file, the document's index and its line, and
reading goes on with the next source.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import yaml

from webhook.policy import kubeyaml
from webhook.policy.defaults import render_path

STDIN = "-"
SUFFIXES = (".yaml", ".yml", ".json")
INT64 = 2**63
MAX_VALUES = 1_000_000


@dataclass(frozen=True, slots=True)
class Location:
    source: str  # the path as given, or <stdin>
    document: int = 0  # 1-based; 0 when the source could not be opened at all
    line: int | None = None  # 1-based line where the object starts (YAML)
    item: int | None = None  # its index in a List's items

    def __str__(self) -> str:
        """Short, for a table: ``path:line`` when the line is known."""
        if self.line is not None:
            return f"{self.source}:{self.line}"
        return self.source + (f" items[{self.item}]" if self.item is not None else "")

    def describe(self) -> str:
        """Long, for an error: ``path: document 2, items[1] (line 9)``."""
        if not self.document:
            return self.source
        text = f"{self.source}: document {self.document}"
        text += f", items[{self.item}]" if self.item is not None else ""
        return text + (f" (line {self.line})" if self.line is not None else "")


@dataclass(frozen=True, slots=True)
class Manifest:
    location: Location
    object: dict[str, Any]  # JSON-compatible, with a kind and an apiVersion


@dataclass(frozen=True, slots=True)
class Unreadable:
    location: Location
    problem: str

    def __str__(self) -> str:
        return f"{self.location.describe()}: {self.problem}"


def read(paths: Sequence[str], stdin: BinaryIO) -> Iterator[Manifest | Unreadable]:
    """Every object in ``paths`` in order; directories recursively, ``-`` for stdin."""
    for path in paths:
        if path == STDIN:
            yield from _parse(stdin.read(), "<stdin>", json_first=True)
        elif os.path.isdir(path):
            yield from _directory(Path(path))
        else:
            yield from _file(Path(path), path)


def _directory(root: Path) -> Iterator[Manifest | Unreadable]:
    for directory, subdirectories, files in os.walk(root, onerror=None):
        subdirectories.sort()
        for name in sorted(files):
            if name.endswith(SUFFIXES):
                path = Path(directory) / name
                yield from _file(path, str(path))


def _file(path: Path, shown: str) -> Iterator[Manifest | Unreadable]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        yield Unreadable(Location(shown), f"cannot be read: {exc.strerror or exc}")
        return
    if path.suffix == ".json":
        yield from _json(raw, shown)
    else:
        yield from _yaml(raw, shown)


def _parse(raw: bytes, source: str, *, json_first: bool) -> Iterator[Manifest | Unreadable]:
    if json_first and raw.lstrip()[:1] in (b"{", b"["):
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # flow-style YAML starts with "{" too
        else:
            yield from _objects(document, Location(source, 1))
            return
    yield from _yaml(raw, source)


def _json(raw: bytes, source: str) -> Iterator[Manifest | Unreadable]:
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        yield Unreadable(Location(source, 1, exc.lineno), f"not valid JSON: {exc.msg} (column {exc.colno})")
        return
    yield from _objects(document, Location(source, 1))


def _yaml(raw: bytes, source: str) -> Iterator[Manifest | Unreadable]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        yield Unreadable(Location(source), f"is not UTF-8 text ({exc.reason} at byte {exc.start})")
        return
    index = 0
    try:
        for node, document in kubeyaml.documents(text):
            index += 1
            if document is not None:  # an empty document, as kubectl skips it
                yield from _objects(document, Location(source, index, node.start_mark.line + 1), node)
    except yaml.YAMLError as exc:
        yield Unreadable(Location(source, index + 1), f"not valid YAML: {kubeyaml.describe(exc)}")


def _objects(document: Any, at: Location, node: yaml.Node | None = None) -> Iterator[Manifest | Unreadable]:
    """The document's object, or a List's items (recursively), each checked to be judgeable."""
    if not isinstance(document, dict):
        yield Unreadable(at, f"is {_a(document)}, not a Kubernetes object")
        return
    problem = _not_json(document)
    if problem:
        yield Unreadable(at, problem)
        return
    kind, api_version = document.get("kind"), document.get("apiVersion")
    if not isinstance(kind, str) or not kind:
        yield Unreadable(at, "has no kind" if kind is None else f"has a kind that is {_a(kind)}, not a name")
        return
    if not isinstance(api_version, str) or not api_version or api_version.count("/") > 1:
        yield Unreadable(at, f"{kind} has no apiVersion" if api_version is None
                         else f"{kind} has an invalid apiVersion {orjson.dumps(api_version).decode()}")
        return
    if kind == "List" or (kind.endswith("List") and "items" in document):
        items = document.get("items")
        if not isinstance(items, list):
            yield Unreadable(at, f"{kind} has no items list")
            return
        lines = _item_lines(node, len(items))
        for position, item in enumerate(items):
            line = lines[position] if lines else None
            yield from _objects(item, Location(at.source, at.document, line, position), _item_node(node, position))
        return
    yield Manifest(at, document)


def _not_json(document: dict[str, Any]) -> str | None:
    """Why a YAML value cannot be sent as JSON, as kubectl would send it; None when it can.

    Iterative and bounded: YAML aliases can make a small file expand to a huge, or
    self-referencing, tree, and a CI job must get an answer rather than hang. Paths are
    kept as links to the parent and spelt out only for the one problem reported.
    """
    stack: list[tuple[Any, _Link, int]] = [(document, None, 1)]
    budget = MAX_VALUES
    while stack:
        value, link, depth = stack.pop()
        budget -= 1
        if budget < 0:
            return f"has more than {MAX_VALUES} values (or aliases that expand to that many, or refer to themselves)"
        if isinstance(value, dict | list) and depth > kubeyaml.MAX_DEPTH:
            return (f"{_path(link, 3)} is nested more than {kubeyaml.MAX_DEPTH} levels deep (or has aliases that "
                    "refer to themselves)")
        if isinstance(value, dict):
            for key, child in value.items():
                if not isinstance(key, str):
                    return f"{_path(link) or 'the object'} has a key {key!r} that is not a string"
                stack.append((child, (link, key), depth + 1))
        elif isinstance(value, list):
            stack.extend((child, (link, index), depth + 1) for index, child in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            return f"{_path(link)} is {value}, which JSON cannot hold"
        elif isinstance(value, int) and not isinstance(value, bool) and not -INT64 <= value < INT64:
            return f"{_path(link)} is a number too large for the API ({value})"
        elif not isinstance(value, str | int | float | bool | type(None)):
            return f"{_path(link)} is {_a(value)}, which JSON cannot hold"
    return None


_Link = tuple["_Link", str | int] | None


def _path(link: _Link, most: int | None = None) -> str:
    """The path to a value; only its first ``most`` parts and an ellipsis when it is longer."""
    parts: list[str | int] = []
    while link is not None:
        link, key = link
        parts.append(key)
    parts.reverse()
    return render_path(parts) if most is None or len(parts) <= most else render_path(parts[:most]) + "…"


def _item_node(node: yaml.Node | None, position: int) -> yaml.Node | None:
    items = _items_node(node)
    return items.value[position] if items is not None and position < len(items.value) else None


def _item_lines(node: yaml.Node | None, count: int) -> list[int]:
    items = _items_node(node)
    if items is None or len(items.value) != count:
        return []
    return [child.start_mark.line + 1 for child in items.value]


def _items_node(node: yaml.Node | None) -> yaml.SequenceNode | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == "items" and isinstance(value, yaml.SequenceNode):
                return value
    return None


def _a(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), f"a {type(value).__name__}")

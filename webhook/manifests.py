"""Kubernetes objects from YAML and JSON files, directories and stdin, one at a time.

Read the way kubectl reads them, so ``webhook check`` judges what ``kubectl apply`` would
send. As kubectl's file visitor and its YAMLOrJSONDecoder (k8s.io/apimachinery) do:

- bytes are UTF-8, or UTF-16 (either byte order) when a byte-order mark says so, as
  PowerShell writes them; a UTF-8 byte-order mark is dropped;
- input that starts with ``{`` is read as a JSON stream, objects one after another
  (``{...}{...}`` or one per line), whatever the file's name; if its first object is not
  JSON, or only one is and what follows is not, the whole input is read as YAML instead
  (flow-style YAML starts with ``{`` too), but once two JSON objects are read it stays JSON;
- YAML is multi-document, merge keys (``<<``) work, timestamps stay strings (sigs.k8s.io/yaml
  never makes them dates) and a duplicate key is refused rather than resolved to the last;
- empty documents and ``null`` are skipped; ``List`` kinds are flattened into their items.

A ``.json`` file is also read as JSON first when it does not start with ``{``, and when
neither JSON nor YAML can read it the JSON error is the one reported. Anything unreadable
is reported with the file, the document's index and its line, and reading goes on with the
next source.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import yaml

from webhook.policy import kubeyaml
from webhook.policy.defaults import fits_int64, render_path

STDIN = "-"
SUFFIXES = (".yaml", ".yml", ".json")
MAX_VALUES = 1_000_000
_JSON_SPACE = re.compile(r"[ \t\r\n]*")


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
            yield from _parse(stdin.read(), "<stdin>")
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
    yield from _parse(raw, shown, json_file=path.suffix == ".json")


def _parse(raw: bytes, source: str, *, json_file: bool = False) -> Iterator[Manifest | Unreadable]:
    try:
        text = kubeyaml.decode(raw)
    except UnicodeDecodeError as exc:
        yield Unreadable(Location(source), kubeyaml.undecodable(exc))
        return
    if not json_file and not text.lstrip().startswith("{"):
        yield from _yaml(text, source)
        return
    values, failure = _json_stream(text)
    if failure is not None and len(values) < 2 and (not json_file or _is_yaml(text)):
        yield from _yaml(text, source)  # kubectl flips to YAML: it was never a JSON stream
        return
    for index, (start, value) in enumerate(values, 1):
        if value is not None:  # a null document, as kubectl skips it
            yield from _objects(value, Location(source, index, text.count("\n", 0, start) + 1))
    if failure is not None:
        position, message = failure
        line = text.count("\n", 0, position) + 1
        column = position - text.rfind("\n", 0, position)
        yield Unreadable(Location(source, len(values) + 1, line), f"not valid JSON: {message} (column {column})")


def _json_stream(text: str) -> tuple[list[tuple[int, Any]], tuple[int, str] | None]:
    """The JSON values one after another, each with its offset; and where and why reading stopped.

    orjson decides what is valid (as strictly as Go's encoding/json); the standard library's
    scanner only finds where each value ends, as orjson reads one document at a time.
    """
    start = _skip_space(text, 0)
    try:
        return [(start, orjson.loads(text))], None
    except orjson.JSONDecodeError:
        pass
    values: list[tuple[int, Any]] = []
    scanner = json.JSONDecoder()
    while start < len(text):
        try:
            end = scanner.raw_decode(text, start)[1]
        except ValueError:
            end = len(text)  # orjson says what is wrong
        try:
            values.append((start, orjson.loads(text[start:end])))
        except orjson.JSONDecodeError as exc:
            return values, (start + exc.pos, exc.msg)
        start = _skip_space(text, end)
    return values, None


def _skip_space(text: str, at: int) -> int:
    found = _JSON_SPACE.match(text, at)
    return found.end() if found else at


def _is_yaml(text: str) -> bool:
    try:
        for _ in kubeyaml.documents(text):
            pass
    except yaml.YAMLError:
        return False
    return True


def _yaml(text: str, source: str) -> Iterator[Manifest | Unreadable]:
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
            yield from _objects(_typed(item, kind, api_version), Location(at.source, at.document, line, position),
                                _item_node(node, position))
        return
    yield Manifest(at, document)


def _typed(item: Any, list_kind: str, list_api_version: str) -> Any:
    """An item of a typed list (``PodList``, ``DeploymentList``) with its kind filled in, as kubectl does.

    apimachinery's unstructured decoder (``decodeToList``) gives an item whose kind *and*
    apiVersion are both empty (absent, or not strings) the list's kind minus ``List`` and the
    list's apiVersion, as the API server leaves them out of typed lists. An item missing
    only one of them keeps its gap. A plain ``v1/List`` has no item kind to give: kubectl
    would set the kind to "" and refuse the item, so here it stays without one.
    """
    item_kind = list_kind.removesuffix("List")
    if (not isinstance(item, dict) or not item_kind or _text(item.get("kind"))
            or _text(item.get("apiVersion"))):
        return item
    rest = {key: value for key, value in item.items() if key not in ("apiVersion", "kind")}
    return {"apiVersion": list_api_version, "kind": item_kind, **rest}


def _text(value: Any) -> str:
    """A field as ``Unstructured.GetKind`` reads it: the string, or "" for anything else."""
    return value if isinstance(value, str) else ""


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
        elif isinstance(value, int) and not isinstance(value, bool) and not fits_int64(value):
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

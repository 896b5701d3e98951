"""RFC 6902 patches computed by diffing the object as it arrived against its mutated copy.

The API server applies them strictly (evanphx/json-patch): ``add`` needs its parent and
``replace`` its target. Mutation only fills absent fields and replaces image strings, so a
patch here holds only ``add`` and ``replace``; anything else is a bug, raised as one, which
the webhook answers as "mutation skipped" rather than sending a patch that removes data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

Operation = dict[str, Any]


class PatchError(ValueError):
    """The mutated copy differs in a way mutation must never produce."""


def escape(key: str) -> str:
    """JSON-pointer escaping (RFC 6901): ``~`` first, so ``/`` never becomes ``~01``."""
    return key.replace("~", "~0").replace("/", "~1")


def diff(original: Any, mutated: Any, *, tick: Callable[[], None] = lambda: None) -> list[Operation]:
    """The minimal ``add``/``replace`` operations turning ``original`` into ``mutated``.

    ``tick`` is called for every key and element compared, and raises to stop the work.
    """
    operations: list[Operation] = []
    if isinstance(original, dict | list) or not _same(original, mutated):
        _diff(original, mutated, "", operations, tick)
    return operations


def _diff(old: Any, new: Any, path: str, operations: list[Operation], tick: Callable[[], None]) -> None:
    """Scalars reach here only when they differ; containers compare their children first, so
    that equal subtrees (most of an object) are encoded once and never walked."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in old:
            if key not in new:
                raise PatchError(f"{path}/{escape(key)} was removed")
        for key, value in new.items():
            tick()
            if key not in old:
                operations.append({"op": "add", "path": f"{path}/{escape(key)}", "value": value})
            elif not _same(old[key], value):
                _diff(old[key], value, f"{path}/{escape(key)}", operations, tick)
    elif isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            raise PatchError(f"{path or '/'} changed length from {len(old)} to {len(new)}")
        for index, (before, after) in enumerate(zip(old, new, strict=True)):
            tick()
            if not _same(before, after):
                _diff(before, after, f"{path}/{index}", operations, tick)
    else:
        if not path:
            raise PatchError("the whole object was replaced")
        operations.append({"op": "replace", "path": path, "value": new})


def _same(old: Any, new: Any) -> bool:
    """JSON equality: unlike ``==``, it tells ``1`` from ``true`` and ``1.0``."""
    if isinstance(old, dict | list):
        return orjson.dumps(old) == orjson.dumps(new)
    return type(old) is type(new) and old == new


def unescape(token: str) -> str:
    """The inverse of ``escape``: ``~1`` first, so ``~01`` becomes ``~1`` and not ``/``."""
    return token.replace("~1", "/").replace("~0", "~")


def pointer_parts(document: Any, path: str) -> list[str | int]:
    """The keys of a JSON pointer into ``document``, with list indexes as ints (for display)."""
    parts: list[str | int] = []
    node = document
    for token in path.split("/")[1:] if path else []:
        key = unescape(token)
        if isinstance(node, list) and key.isdigit():
            parts.append(int(key))
            node = node[int(key)] if int(key) < len(node) else None
        else:
            parts.append(key)
            node = node.get(key) if isinstance(node, dict) else None
    return parts


def apply(document: Any, operations: list[Operation]) -> Any:
    """Apply ``add``/``replace`` operations to a copy, as strictly as the API server does.

    evanphx/json-patch refuses an ``add`` whose parent is missing and a ``replace`` whose
    target is missing; so do we, so that a patch that would fail there fails here too.
    """
    result = orjson.loads(orjson.dumps(document))
    for operation in operations:
        op, path = operation.get("op"), operation.get("path")
        if op not in ("add", "replace") or not isinstance(path, str) or not path.startswith("/"):
            raise PatchError(f"unsupported operation {orjson.dumps(operation).decode()[:200]}")
        *parents, last = [unescape(token) for token in path.split("/")[1:]]
        parent = result
        for key in parents:
            parent = _child(parent, key, path)
        value = orjson.loads(orjson.dumps(operation.get("value")))
        if isinstance(parent, dict):
            if op == "replace" and last not in parent:
                raise PatchError(f"replace {path}: the target does not exist")
            parent[last] = value
        elif isinstance(parent, list):
            index = len(parent) if op == "add" and last == "-" else _index(last, path)
            if index > len(parent) or (op == "replace" and index == len(parent)):
                raise PatchError(f"{op} {path}: index {index} is out of range")
            if op == "add":
                parent.insert(index, value)
            else:
                parent[index] = value
        else:
            raise PatchError(f"{op} {path}: the parent is not an object or a list")
    return result


def _child(node: Any, key: str, path: str) -> Any:
    if isinstance(node, dict) and key in node:
        return node[key]
    if isinstance(node, list) and key.isdigit() and int(key) < len(node):
        return node[int(key)]
    raise PatchError(f"{path}: {key!r} does not exist")


def _index(key: str, path: str) -> int:
    if not key.isdigit() or (len(key) > 1 and key.startswith("0")):
        raise PatchError(f"{path}: {key!r} is not a list index")
    return int(key)

"""RFC 6902 patches computed by diffing the object as it arrived against its mutated copy.

The API server applies them strictly (evanphx/json-patch): ``add`` needs its parent and
``replace`` its target. Mutation only fills absent fields and replaces image strings, so a
patch here holds only ``add`` and ``replace``; anything else is a bug, raised as one, which
the webhook answers as "mutation skipped" rather than sending a patch that removes data.
"""

from __future__ import annotations

from typing import Any

import orjson

Operation = dict[str, Any]


class PatchError(ValueError):
    """The mutated copy differs in a way mutation must never produce."""


def escape(key: str) -> str:
    """JSON-pointer escaping (RFC 6901): ``~`` first, so ``/`` never becomes ``~01``."""
    return key.replace("~", "~0").replace("/", "~1")


def diff(original: Any, mutated: Any) -> list[Operation]:
    """The minimal ``add``/``replace`` operations turning ``original`` into ``mutated``."""
    operations: list[Operation] = []
    _diff(original, mutated, "", operations)
    return operations


def _diff(old: Any, new: Any, path: str, operations: list[Operation]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        if _same(old, new):
            return
        for key in old:
            if key not in new:
                raise PatchError(f"{path}/{escape(key)} was removed")
        for key, value in new.items():
            if key in old:
                _diff(old[key], value, f"{path}/{escape(key)}", operations)
            else:
                operations.append({"op": "add", "path": f"{path}/{escape(key)}", "value": value})
    elif isinstance(old, list) and isinstance(new, list):
        if _same(old, new):
            return
        if len(old) != len(new):
            raise PatchError(f"{path or '/'} changed length from {len(old)} to {len(new)}")
        for index, (before, after) in enumerate(zip(old, new, strict=True)):
            _diff(before, after, f"{path}/{index}", operations)
    elif not _same(old, new):
        if not path:
            raise PatchError("the whole object was replaced")
        operations.append({"op": "replace", "path": path, "value": new})


def _same(old: Any, new: Any) -> bool:
    """JSON equality: unlike ``==``, it tells ``1`` from ``true`` and ``1.0``."""
    if isinstance(old, dict | list):
        return orjson.dumps(old) == orjson.dumps(new)
    return type(old) is type(new) and old == new

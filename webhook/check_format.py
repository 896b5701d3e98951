"""How ``webhook check`` shows its answers: a table for people, JSON for machines, YAML to apply.

Changes are shown from the very patch the mutating webhook answered, in the path form that
denial messages use (``spec.containers[0].image``), so a reader can match the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import yaml

from webhook.admission.patch import Operation, pointer_parts
from webhook.manifests import Unreadable
from webhook.policy.defaults import render_path

if TYPE_CHECKING:
    from webhook.check import Result, Tally

HEADERS = ("SOURCE", "KIND", "NAMESPACE/NAME", "DECISION", "CHANGES", "MESSAGES")
MAX_VALUE_CHARS = 100


@dataclass(frozen=True, slots=True)
class Row:
    source: str
    kind: str
    name: str
    decision: str
    changes: tuple[str, ...]
    messages: tuple[str, ...]
    scope: str | None = None  # shown only when the policy has scopes or exceptions


def row(result: Result, *, scoped: bool = False) -> Row:
    admission = result.admission
    return Row(str(result.manifest.location), result.target.kind, result.display_name, admission.decision,
               tuple(changes(result.manifest.object, admission.final, admission.patch)), tuple(admission.messages),
               scope_cell(result) if scoped else None)


def scope_cell(result: Result) -> str:
    """The scope that decided, or ``baseline``, and the exceptions that admitted an image."""
    validation = result.admission.validation
    cell = validation.scope or "baseline"
    return cell + (f" (exceptions: {', '.join(validation.exceptions)})" if validation.exceptions else "")


def changes(original: Any, final: Any, patch: Sequence[Operation]) -> list[str]:
    """One line per operation: ``+ spec.replicas: 1`` or ``~ spec.containers[0].image: "a" -> "b"``."""
    lines = []
    for operation in patch:
        parts = pointer_parts(final, str(operation["path"]))
        where = render_path(parts)
        new = _value(operation.get("value"))
        if operation["op"] == "replace":
            lines.append(f"~ {where}: {_value(_at(original, parts))} -> {new}")
        else:
            lines.append(f"+ {where}: {new}")
    return lines


def table(rows: Sequence[Row]) -> str:
    """Aligned columns; an object with several changes or messages takes one line for each.
    A SCOPE column follows DECISION when the policy has scopes or exceptions."""
    scoped = any(r.scope is not None for r in rows)
    headers = (*HEADERS[:4], "SCOPE", *HEADERS[4:]) if scoped else HEADERS
    lines: list[tuple[str, ...]] = [headers]
    for r in rows:
        height = max(1, len(r.changes), len(r.messages))
        for i in range(height):
            first: tuple[str, ...] = (r.source, r.kind, r.name, r.decision) if i == 0 else ("", "", "", "")
            if scoped:
                first = (*first, (r.scope or "") if i == 0 else "")
            lines.append((*first, _nth(r.changes, i), _nth(r.messages, i)))
    widths = [max(len(line[column]) for line in lines) for column in range(len(headers) - 1)]
    text = ""
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=False)]
        text += ("  ".join([*cells, line[-1]])).rstrip() + "\n"
    return text


def record(result: Result) -> dict[str, Any]:
    """The machine-readable answer for one object, with its JSONPatch as the server would send it."""
    location, admission, validation = result.manifest.location, result.admission, result.admission.validation
    metadata = result.manifest.object.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    status = None if validation.allowed else {
        "code": validation.code, "reason": validation.reason, "message": validation.message,
    }
    return {
        "source": location.source, "document": location.document, "line": location.line, "item": location.item,
        "apiVersion": result.target.api_version, "kind": result.target.kind, "resource": result.target.resource,
        "namespace": result.namespace, "name": metadata.get("name"),
        "decision": admission.decision, "allowed": validation.allowed, "status": status,
        "warnings": admission.warnings, "patch": admission.patch,
        "scope": validation.scope, "exceptions": list(validation.exceptions),
    }


def json_report(records: list[dict[str, Any]], errors: Sequence[Unreadable], tally: Tally) -> str:
    document = {
        "results": records,
        "errors": [{"source": e.location.source, "document": e.location.document or None, "line": e.location.line,
                    "item": e.location.item, "message": str(e)} for e in errors],
        "summary": {"objects": tally.objects, "allowed": tally.allowed, "warned": tally.warned,
                    "denied": tally.denied, "unreadable": tally.unreadable},
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"


def yaml_document(result: Result) -> str:
    """The object as it would be stored, headed by comments saying where it came from and the answer."""
    validation = result.admission.validation
    decided = f' in scope "{validation.scope}"' if validation.scope else ""
    decided += f" by exceptions {', '.join(validation.exceptions)}" if validation.exceptions else ""
    head = [f"# {result.manifest.location}: {result.target.kind} {result.display_name}: {result.admission.decision}"
            f"{decided}"]
    head += [f"# {' '.join(message.split())}" for message in result.admission.messages]
    body = yaml.safe_dump(result.admission.final, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return "---\n" + "\n".join(head) + "\n" + body


def _at(document: Any, parts: Sequence[str | int]) -> Any:
    node = document
    for part in parts:
        node = node[part]
    return node


def _value(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def _nth(items: Sequence[str], index: int) -> str:
    return items[index] if index < len(items) else ""

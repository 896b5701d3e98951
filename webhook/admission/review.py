"""AdmissionReview in and out: a small typed Request, a Response and its constructors.

Only the envelope is validated. The object stays the raw dict it arrived as, so fields we
do not model, and fields from newer Kubernetes releases, pass through untouched.
"""

from __future__ import annotations

import base64
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from webhook.policy.match import labels_of
from webhook.untrusted import quote

V1 = "admission.k8s.io/v1"
V1BETA1 = "admission.k8s.io/v1beta1"
SUPPORTED_VERSIONS = (V1, V1BETA1)
OPERATIONS = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})
WARNING_MAX_CHARS = 256
# The registry of a denied image whose reference does not parse; no host can be named this.
UNPARSED_REGISTRY = "invalid"


class ReviewError(ValueError):
    """The body is not an AdmissionReview we can answer; the server answers with ``code``."""

    code = 400


class ReviewTooLarge(ReviewError):
    """The body holds more JSON values than a worker will decode: 413, before any is allocated."""

    code = 413


@dataclass(frozen=True, slots=True)
class Request:
    uid: str
    api_version: str
    group: str
    version: str
    kind: str
    operation: str
    namespace: str | None = None
    name: str | None = None
    sub_resource: str | None = None
    username: str | None = None
    object: Any = None
    old_object: Any = None
    dry_run: bool = False
    user: Any = None  # userInfo as it arrived; read only when a policy's match asks

    @property
    def groups(self) -> Sequence[str]:
        """userInfo.groups, the strings among them."""
        groups = self.user.get("groups") if isinstance(self.user, dict) else None
        return [g for g in groups if isinstance(g, str)] if isinstance(groups, list) else []

    @property
    def labels(self) -> Mapping[str, str]:
        """The labels of the object as it arrives (on UPDATE the new object, not the old)."""
        return labels_of(self.object)

    @property
    def object_name(self) -> str | None:
        """The name, or the generateName prefix of an object created without one yet."""
        meta = _metadata(self.object) or _metadata(self.old_object)
        name = self.name or meta.get("name") or meta.get("generateName")
        return name if isinstance(name, str) else None

    @property
    def display_name(self) -> str:
        """``kind ns/name`` for messages."""
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.object_name or '(unnamed)'}"


Outcome = Literal["allowed", "denied", "warned", "error"]


@dataclass(frozen=True, slots=True)
class Response:
    allowed: bool
    code: int | None = None
    reason: str | None = None
    message: str | None = None
    warnings: tuple[str, ...] = ()
    patch: tuple[Mapping[str, Any], ...] = ()
    audit_annotations: Mapping[str, str] = field(default_factory=dict)
    # What metrics and logs call this decision; set by the constructors below.
    outcome: Outcome = "allowed"
    # Registry hosts of denied or warned images (UNPARSED_REGISTRY for references that do not parse).
    registries: tuple[str, ...] = ()
    # The scope whose rules decided (None: the baseline), and the exceptions that admitted an image.
    scope: str | None = None
    exceptions: tuple[str, ...] = ()


def allowed(*warnings: str) -> Response:
    return Response(True, warnings=warnings)


def warned(warnings: Sequence[str], registries: Sequence[str] = ()) -> Response:
    """Allowed, but the policy would deny it (``mode: warn``)."""
    return Response(True, warnings=tuple(warnings), outcome="warned", registries=tuple(registries))


def denied(message: str, *warnings: str, registries: Sequence[str] = ()) -> Response:
    """A policy denial: 403 Forbidden, so clients' ``IsForbidden()`` holds."""
    return Response(False, 403, "Forbidden", message, warnings, outcome="denied", registries=tuple(registries))


def invalid(message: str) -> Response:
    """An object whose shape we cannot judge: 422 Invalid, never a silent allow."""
    return Response(False, 422, "Invalid", message, outcome="denied")


def errored(message: str, *warnings: str) -> Response:
    """Fail closed in-band: an HTTP 5xx would hand the decision to failurePolicy."""
    return Response(False, 500, "InternalError", message, warnings, outcome="error")


def timed_out(message: str) -> Response:
    """Denied because the decision was not reached in time (failureMode: deny)."""
    return Response(False, 504, "Timeout", message, outcome="error")


def skipped(warning: str) -> Response:
    """Allowed without judging, because judging failed; counted as an error."""
    return Response(True, warnings=(warning,), outcome="error")


def patched(operations: Sequence[Mapping[str, Any]], *warnings: str) -> Response:
    return Response(True, warnings=warnings, patch=tuple(operations))


def json_values_bound(body: bytes) -> int:
    """An upper bound on the values a JSON text holds, counted without decoding it.

    Every value after the first in an array or object follows a comma, and every array or object
    opens with a bracket and may hold one value more. Commas and brackets inside strings count
    too, so it over-counts a little; it runs at memory speed.
    """
    return body.count(b",") + 2 * (body.count(b"[") + body.count(b"{")) + 1


def decode_review(body: bytes, max_values: int | None = None) -> Request:
    """Parse an AdmissionReview body, leniently inside ``request`` and strictly about the envelope.

    Decoded JSON costs up to 30 times its size (a list is 56 bytes, and ``[],`` is three), so a
    body is refused when it may hold more than ``max_values`` values: an 8 MiB body of empty
    arrays would otherwise take 250 MB of a worker's memory.
    """
    if max_values is not None and 2 * len(body) >= max_values and json_values_bound(body) > max_values:
        raise ReviewTooLarge(f"body holds more than {max_values} JSON values (--max-json-values)")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ReviewError(f"body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ReviewError("body is not a JSON object")
    api_version = document.get("apiVersion")
    if api_version not in SUPPORTED_VERSIONS:
        raise ReviewError(
            f"unsupported AdmissionReview apiVersion {_short(api_version)}; expected {V1} or {V1BETA1}"
        )
    if document.get("kind") != "AdmissionReview":
        raise ReviewError(f"kind must be AdmissionReview, got {_short(document.get('kind'))}")
    request = document.get("request")
    if not isinstance(request, dict):
        raise ReviewError("request is missing or is not an object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ReviewError("request.uid is missing, empty or not a string")
    gvk = request.get("kind")
    if not isinstance(gvk, dict) or not isinstance(gvk.get("kind"), str):
        raise ReviewError("request.kind is missing or has no kind")
    operation = request.get("operation")
    if operation not in OPERATIONS:
        raise ReviewError(f"request.operation must be one of CREATE, UPDATE, DELETE, CONNECT, got {_short(operation)}")
    user = request.get("userInfo")
    return Request(
        uid=uid,
        api_version=api_version,
        group=_string(gvk.get("group")) or "",
        version=_string(gvk.get("version")) or "",
        kind=gvk["kind"],
        operation=operation,
        namespace=_string(request.get("namespace")),
        name=_string(request.get("name")),
        sub_resource=_string(request.get("subResource")),
        username=_string(user.get("username")) if isinstance(user, dict) else None,
        object=request.get("object"),
        old_object=request.get("oldObject"),
        dry_run=request.get("dryRun") is True,
        user=user,
    )


def encode_response(request: Request, response: Response, *, mutating: bool) -> bytes:
    """Answer in the request's own apiVersion; a validating answer never carries a patch."""
    body: dict[str, Any] = {"uid": request.uid, "allowed": response.allowed}
    if not response.allowed:
        status: dict[str, Any] = {"status": "Failure", "code": response.code or 403}
        if response.reason:
            status["reason"] = response.reason
        if response.message:
            status["message"] = response.message
        body["status"] = status
    if mutating and response.patch:
        body["patchType"] = "JSONPatch"
        body["patch"] = base64.b64encode(orjson.dumps(list(response.patch))).decode("ascii")
    warnings = clean_warnings(response.warnings)
    if warnings:
        body["warnings"] = warnings
    if response.audit_annotations:
        body["auditAnnotations"] = dict(response.audit_annotations)
    return orjson.dumps({"apiVersion": request.api_version, "kind": "AdmissionReview", "response": body})


def clean_warnings(warnings: Sequence[str]) -> list[str]:
    """The API server silently drops a warning holding any control character; we replace them.

    Duplicates are dropped through a dict, keeping the order: a list scan made a long list of
    warnings quadratic.
    """
    cleaned: dict[str, None] = {}
    for warning in warnings:
        text = " ".join(sanitize(warning).split())
        if len(text) > WARNING_MAX_CHARS:
            text = text[: WARNING_MAX_CHARS - 1] + "…"
        if text:
            cleaned[text] = None
    return list(cleaned)


def sanitize(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)


def _string(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _short(value: object) -> str:
    return quote(value, 80) if isinstance(value, str) else repr(value)[:80] if value is not None else "nothing"


def _metadata(obj: Any) -> Mapping[str, Any]:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return meta if isinstance(meta, dict) else {}

"""What the API server does with our two webhooks for one CREATE: mutate, apply the patch, validate.

``webhook check`` and ``webhook audit`` come through here, so what they report is what the
server would answer: the same ``Webhook`` objects, the same decoding of the same
AdmissionReview body the API server would send, and the patch the mutating webhook
returned, applied as strictly as the API server applies it. Nothing here decides anything.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from webhook.admission.deadline import NEVER, Deadline
from webhook.admission.patch import Operation, PatchError, apply
from webhook.admission.review import V1, Request, Response, clean_warnings, decode_review, errored
from webhook.admission.webhook import MUTATING, VALIDATING
from webhook.policy.model import Policy

Decision = Literal["allowed", "warned", "denied"]


@dataclass(frozen=True, slots=True)
class Target:
    """What a review names: the object's group, version and kind, and the resource it is stored as."""

    group: str
    version: str
    kind: str
    resource: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


@dataclass(frozen=True, slots=True)
class Admission:
    """Both answers for one object, the patch between them, and the object as it would be stored."""

    mutation: Response
    validation: Response
    final: Any

    @property
    def patch(self) -> list[Operation]:
        return [dict(operation) for operation in self.mutation.patch]

    @property
    def decision(self) -> Decision:
        if not self.validation.allowed:
            return "denied"
        return "warned" if self.validation.outcome == "warned" else "allowed"

    @property
    def warnings(self) -> list[str]:
        """Both answers' warnings, cleaned as each answer sends them, mutation's first."""
        return [*clean_warnings(self.mutation.warnings), *clean_warnings(self.validation.warnings)]

    @property
    def messages(self) -> list[str]:
        """What ``kubectl`` would show: the denial, then every warning."""
        denial = [self.validation.message or self.validation.reason or "denied"] if not self.validation.allowed else []
        return [*denial, *self.warnings]


def create_review(obj: Any, target: Target, namespace: str | None, *, username: str) -> dict[str, Any]:
    """The AdmissionReview v1 body the API server sends for a CREATE of ``obj`` (shared/protocol.md §1)."""
    gvk = {"group": target.group, "version": target.version, "kind": target.kind}
    gvr = {"group": target.group, "version": target.version, "resource": target.resource}
    request: dict[str, Any] = {
        "uid": str(uuid.uuid4()),
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "operation": "CREATE",
        "userInfo": {"username": username},
        "object": obj,
        "oldObject": None,
        "dryRun": True,
        "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "dryRun": ["All"]},
    }
    if namespace is not None:
        request["namespace"] = namespace
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if isinstance(name, str) and name:  # absent on a generateName create, as the API server leaves it
        request["name"] = name
    return {"apiVersion": V1, "kind": "AdmissionReview", "request": request}


def request_for(obj: Any, target: Target, namespace: str | None, *, username: str) -> Request:
    """The request the server would decode from that body: built and decoded the same way."""
    return decode_review(orjson.dumps(create_review(obj, target, namespace, username=username)))


def admit(
    obj: Any, target: Target, namespace: str | None, policy: Policy, *, username: str, deadline: Deadline = NEVER,
) -> Admission:
    """Mutation, then validation of the patched object, as the API server orders them (protocol.md §5)."""
    first = request_for(obj, target, namespace, username=username)
    mutation = MUTATING.review(first, policy, deadline)
    try:
        final = apply(obj, [dict(operation) for operation in mutation.patch]) if mutation.patch else obj
    except PatchError as exc:  # the API server fails the request when a patch does not apply
        return Admission(mutation, errored(f"the mutating webhook's patch does not apply: {exc}"), obj)
    second = request_for(final, target, namespace, username=username)  # a fresh uid, as for every call
    return Admission(mutation, VALIDATING.review(second, policy, deadline), final)

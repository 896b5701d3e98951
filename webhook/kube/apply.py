"""Writing the webhook configurations: preflight, create or update, and the break-glass delete.

Get, compare, then create or update with the ``resourceVersion`` we read: a concurrent writer
makes the update fail with 409 Conflict instead of being overwritten, and we start again from
a fresh read. Nothing is ever deleted and recreated, because between the two the cluster
would run without its guard. When every field we set already has our value, nothing is
written and the answer is "unchanged", so ``register`` can run on every start.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from typing import Any

from webhook.kube.access import ADMISSION_GROUP, UNREGISTER, Access, Permission, check_all, describe, missing
from webhook.kube.client import ApiError, KubeClient, KubeError
from webhook.kube.registration import API_VERSION

log = logging.getLogger("webhook.kube")

CONFLICT_ATTEMPTS = 5
RESOURCES = {
    "ValidatingWebhookConfiguration": "validatingwebhookconfigurations",
    "MutatingWebhookConfiguration": "mutatingwebhookconfigurations",
}


class PermissionsMissing(KubeError):
    def __init__(self, action: str, identity: str, absent: list[Access]) -> None:
        lines = "\n".join(f"  - {describe(a.permission)}" + (f" ({a.reason})" if a.reason else "") for a in absent)
        super().__init__(f"cannot {action}: {identity} is missing {len(absent)} permission(s), "
                         f"so nothing was changed:\n{lines}")
        self.missing = absent


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: str
    name: str
    action: str  # created, updated, unchanged, deleted, or "not found"

    def __str__(self) -> str:
        return f"{RESOURCES[self.kind]}.admissionregistration.k8s.io/{self.name} {self.action}"


def preflight(client: KubeClient, permissions: list[Permission], action: str) -> None:
    """Ask before writing, so a missing grant stops us before anything changed."""
    absent = missing(check_all(client, permissions))
    if absent:
        raise PermissionsMissing(action, client.config.identity, absent)


def register(client: KubeClient, configurations: list[dict[str, Any]]) -> list[Outcome]:
    """Ask for exactly what this run needs, by name, before writing anything: read both, then
    update those that exist and create those that do not."""
    names = [(desired["kind"], desired["metadata"]["name"]) for desired in configurations]
    preflight(client, [_permission("get", kind, name) for kind, name in names], "register the webhooks")
    writes = [_permission("update", kind, name) if _get(client, kind, name) is not None
              else Permission("create", RESOURCES[kind], ADMISSION_GROUP) for kind, name in names]
    preflight(client, writes, "register the webhooks")
    return [apply_configuration(client, desired) for desired in configurations]


def _permission(verb: str, kind: str, name: str) -> Permission:
    return Permission(verb, RESOURCES[kind], ADMISSION_GROUP, name=name)


def unregister(client: KubeClient, name: str) -> list[Outcome]:
    """Delete both configurations: validating first, since it is the one that blocks."""
    preflight(client, list(UNREGISTER), "unregister the webhooks")
    outcomes = []
    for kind in RESOURCES:
        try:
            client.request("DELETE", _item(kind, name))
            outcomes.append(Outcome(kind, name, "deleted"))
        except ApiError as exc:
            if exc.code != 404:
                raise
            outcomes.append(Outcome(kind, name, "not found"))
    return outcomes


def apply_configuration(client: KubeClient, desired: dict[str, Any]) -> Outcome:
    kind, name = desired["kind"], desired["metadata"]["name"]
    for attempt in range(CONFLICT_ATTEMPTS):
        if attempt:
            time.sleep(0.05 * 2**attempt)
        existing = _get(client, kind, name)
        if existing is None:
            try:
                client.request("POST", _collection(kind), body=desired)
            except ApiError as exc:
                if exc.code == 409:  # created by someone else since we looked
                    continue
                raise
            return Outcome(kind, name, "created")
        if contains(existing, desired):
            return Outcome(kind, name, "unchanged")
        try:
            client.request("PUT", _item(kind, name), body=overlay(existing, desired))
        except ApiError as exc:
            if exc.code == 409:
                log.info("%s %s changed while we updated it (409 Conflict); reading it again", kind, name)
                continue
            raise
        return Outcome(kind, name, "updated")
    raise KubeError(f"{kind} {name} kept changing under us: {CONFLICT_ATTEMPTS} updates met 409 Conflict")


def contains(actual: Any, wanted: Any) -> bool:
    """Every field of ``wanted`` has its value in ``actual``; fields the API server defaulted are ignored."""
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(k in actual and contains(actual[k], v) for k, v in wanted.items())
    if isinstance(wanted, list):
        return (isinstance(actual, list) and len(actual) == len(wanted)
                and all(contains(a, w) for a, w in zip(actual, wanted, strict=True)))
    return bool(actual == wanted)


def overlay(existing: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """``existing`` with our fields set: its ``resourceVersion`` makes the update conditional.

    Our webhooks replace the list (we own the configuration), but each keeps the fields
    someone else added to the webhook of the same name, such as ``matchConditions``.
    """
    result = copy.deepcopy(existing)
    metadata = result.setdefault("metadata", {})
    for key in ("labels", "annotations"):
        if key in desired["metadata"]:
            metadata[key] = {**(metadata.get(key) or {}), **desired["metadata"][key]}
    previous = {w.get("name"): w for w in existing.get("webhooks") or []}
    result["webhooks"] = [_webhook(previous.get(w["name"], {}), w) for w in desired["webhooks"]]
    return result


def _webhook(previous: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    merged = _merge(copy.deepcopy(previous), desired)
    # url and service exclude each other, so the client config is ours whole; only a caBundle
    # that a CA injector put there survives when we publish none.
    client_config = copy.deepcopy(desired["clientConfig"])
    injected = (previous.get("clientConfig") or {}).get("caBundle")
    if "caBundle" not in client_config and injected:
        client_config["caBundle"] = injected
    merged["clientConfig"] = client_config
    return merged


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _get(client: KubeClient, kind: str, name: str) -> dict[str, Any] | None:
    try:
        return client.request("GET", _item(kind, name))
    except ApiError as exc:
        if exc.code == 404:
            return None
        raise


def _collection(kind: str) -> str:
    return f"/apis/{API_VERSION}/{RESOURCES[kind]}"


def _item(kind: str, name: str) -> str:
    return f"{_collection(kind)}/{name}"

"""PolicyReports (``wgpolicyk8s.io/v1alpha2``) from audit findings: one per namespace, split by size.

Platform teams read policy results where Policy Reporter and dashboards look: PolicyReport
objects, the format of the Kubernetes Policy working group. Each judged object gets one result:
``fail`` when the validating webhook would deny it, ``warn`` when it would admit it with a
warning (``mode: warn``, or an exception that admits it), ``pass`` when it would admit it
cleanly, ``error`` when it could not be judged, and ``skip`` in an exempt namespace. The rule is
the deciding scope, or ``baseline``; the exceptions used are in ``properties`` with their expiry.

Pure: no I/O, so building and splitting are tested without a cluster. A report is split before
its JSON reaches ``max_bytes`` (1 MiB, well below etcd's 1.5 MiB request limit), into parts
named ``admission-webhook-<namespace>``, ``admission-webhook-<namespace>-2``, and so on, so the
same results always land in the same parts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from webhook.untrusted import cap

API_VERSION = "wgpolicyk8s.io/v1alpha2"
GROUP = "wgpolicyk8s.io"
RESOURCE = "policyreports"
KIND = "PolicyReport"
SOURCE = POLICY = NAME_PREFIX = "admission-webhook"
MANAGED_BY = ("app.kubernetes.io/managed-by", "admission-webhook")
CATEGORY = "Supply Chain Security"
MAX_REPORT_BYTES = 1024 * 1024
MAX_MESSAGE_CHARS = 4096  # a Pod with a thousand bad containers still fits many results in a part
# What the API server adds to a stored report (uid, resourceVersion, managedFields...), and the
# summary's digits, on top of the shell we measure.
OVERHEAD_BYTES = 2048
Outcome = Literal["pass", "fail", "warn", "error", "skip"]
OUTCOMES: tuple[Outcome, ...] = ("pass", "fail", "warn", "error", "skip")
SEVERITY = {"fail": "high", "warn": "medium", "error": "medium"}
Found = dict[str, tuple[bytes, Any]]  # uid -> a stored result's fingerprint and timestamp


@dataclass(frozen=True, slots=True)
class Result:
    """One judged object's result, small enough to keep for every object until the list ends."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str
    rule: str  # the deciding scope, "baseline", or "exemptNamespaces"
    outcome: Outcome
    message: str
    exceptions: tuple[tuple[str, str], ...] = ()  # (name, expiry)
    decision: str = ""  # audit's word: allowed, denied, warned, excepted

    @property
    def order(self) -> tuple[str, str, str]:
        """Related objects (a Deployment, its ReplicaSets and Pods) sort next to each other."""
        return (self.name, self.kind, self.uid)

    def fields(self) -> dict[str, Any]:
        """The result as the report holds it, without the timestamp."""
        properties = {"decision": self.decision} if self.decision else {}
        if self.exceptions:
            properties["exception"] = ",".join(name for name, _ in self.exceptions)
            properties["exceptionExpires"] = ",".join(expires for _, expires in self.exceptions)
        document: dict[str, Any] = {"source": SOURCE, "policy": POLICY, "rule": self.rule, "category": CATEGORY}
        if self.outcome in SEVERITY:
            document["severity"] = SEVERITY[self.outcome]
        document["result"] = self.outcome
        document["resources"] = [{"apiVersion": self.api_version, "kind": self.kind, "namespace": self.namespace,
                                  "name": self.name, "uid": self.uid}]
        document["message"] = self.message
        if properties:
            document["properties"] = properties
        return document


def outcome_of(*, allowed: bool, error: bool, warned: bool, exempt: bool) -> Outcome:
    """What the API server would show for the object, in the report's words."""
    if exempt:
        return "skip"
    if error:
        return "error"
    if not allowed:
        return "fail"
    return "warn" if warned else "pass"


def message_of(messages: Iterable[str], outcome: Outcome, namespace: str) -> str:
    """The denial and warnings, one per line; a fixed sentence for what has none."""
    text = "\n".join(messages)
    if text:
        return cap(text, MAX_MESSAGE_CHARS)
    if outcome == "skip":
        return f"namespace {namespace} is exempt from the policy (exemptNamespaces)"
    return "allowed by the validating webhook"


def fingerprint(document: Mapping[str, Any]) -> bytes:
    """A result or report's content, ignoring what the API server or a run adds: keys sorted,
    no timestamp, so an unchanged result keeps the time it was first found."""
    return orjson.dumps({k: v for k, v in document.items() if k != "timestamp"}, option=orjson.OPT_SORT_KEYS)


def timestamp(seconds: float) -> dict[str, int]:
    """``metav1.Timestamp``, which the v1alpha2 schema uses (not an RFC 3339 string)."""
    return {"seconds": int(seconds), "nanos": 0}


def part_name(namespace: str, index: int) -> str:
    """``admission-webhook-<ns>`` for the first part, ``-2``, ``-3``... for the next."""
    base = f"{NAME_PREFIX}-{namespace}"
    return base if index == 0 else f"{base}-{index + 1}"


def report(namespace: str, name: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    """One PolicyReport, its summary counted from its own results (Policy Reporter adds parts up)."""
    summary = dict.fromkeys(OUTCOMES, 0)
    for result in results:
        summary[result["result"]] += 1
    return {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": name, "namespace": namespace, "labels": dict([MANAGED_BY])},
            "summary": summary, "results": results}


def content(document: Mapping[str, Any]) -> bytes:
    """A digest of what we own in a report (our label, the summary, the results), to tell
    whether a stored report already says what we would write."""
    labels = (document.get("metadata") or {}).get("labels") or {}
    ours = {"label": labels.get(MANAGED_BY[0]), "summary": document.get("summary"),
            "results": document.get("results") or []}
    return hashlib.sha256(orjson.dumps(ours, option=orjson.OPT_SORT_KEYS)).digest()


def build(
    namespace: str, results: Iterable[Result], *, now: float, found: Found, max_bytes: int = MAX_REPORT_BYTES,
) -> list[dict[str, Any]]:
    """The namespace's reports, in order. ``found`` maps a uid to the fingerprint and timestamp of
    its result in the reports already stored: an unchanged result keeps its timestamp."""
    budget = max_bytes - len(orjson.dumps(report(namespace, part_name(namespace, 999), []))) - OVERHEAD_BYTES
    parts: list[list[dict[str, Any]]] = [[]]
    used = 0
    unique = {result.uid: result for result in results}  # a list resumed after 410 may hand one over twice
    for result in sorted(unique.values(), key=lambda r: r.order):
        document = result.fields()
        previous = found.get(result.uid)
        stamp = previous[1] if previous and previous[0] == fingerprint(document) else timestamp(now)
        document = {**document, "timestamp": stamp}
        size = len(orjson.dumps(document)) + 1  # and a comma
        if parts[-1] and used + size > budget:
            parts.append([])
            used = 0
        parts[-1].append(document)
        used += size
    if not parts[0]:
        return []
    return [report(namespace, part_name(namespace, index), part) for index, part in enumerate(parts)]

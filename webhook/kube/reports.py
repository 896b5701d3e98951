"""``webhook audit --report``: the audit's results written as PolicyReports, one set per namespace.

A one-shot list, then the writes: reports are rebuilt from the whole list on every run, so an
object deleted since the last run simply has no result, and a namespace left with no judged
objects loses its reports. Nothing is written until the list is complete, so a list that fails
half-way never prunes what it did not see.

Each report is created, or updated with the ``resourceVersion`` we read (a concurrent writer
makes that a 409 Conflict, and we read it again and retry a few times), or left alone when it
already says what we would write. Only reports labelled ``app.kubernetes.io/managed-by:
admission-webhook`` are ever updated or deleted; one of our names held by someone else's report
is an error, not an overwrite. Building the reports is ``policyreport.py``'s.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, TextIO

from webhook.kube import policyreport as pr
from webhook.kube.access import FEATURES, check_all, missing
from webhook.kube.audit import Finding, Output, PreflightFailed
from webhook.kube.audit import run as run_audit
from webhook.kube.client import ApiError, KubeClient, KubeError
from webhook.policy.model import Policy

CONFLICT_ATTEMPTS = 5
PAGE = 20  # reports per list page: each may be up to 1 MiB
QUALIFIED = f"{pr.RESOURCE}.{pr.GROUP}"


@dataclass(frozen=True, slots=True)
class Stored:
    """A report of ours as listed: enough to update or delete it, and the results' timestamps."""

    namespace: str
    name: str
    resource_version: str
    digest: bytes


@dataclass(frozen=True, slots=True)
class Written:
    namespace: str
    name: str
    action: str  # created, updated, unchanged, deleted
    summary: dict[str, int] | None = None

    def __str__(self) -> str:
        counts = f" ({', '.join(f'{n} {k}' for k, n in self.summary.items())})" if self.summary else ""
        return f"{QUALIFIED}/{self.name} -n {self.namespace} {self.action}{counts}"


class Collector:
    """The audit's hook: every judged object's result, kept small, by namespace."""

    def __init__(self, policy: Policy) -> None:
        self.exempt = policy.exempt_namespaces
        self.results: dict[str, list[pr.Result]] = defaultdict(list)
        self.messages: dict[str, str] = {}  # one copy of each message: replicas share theirs
        self.unplaced = 0  # objects without a namespace (none of the kinds audited has one)
        self.lock = threading.Lock()

    def add(self, finding: Finding) -> None:
        response = finding.response
        if response is None:
            return
        if finding.namespace is None:
            self.unplaced += 1
            return
        exempt = finding.namespace in self.exempt
        outcome = pr.outcome_of(allowed=response.allowed, error=response.outcome == "error",
                                warned=bool(finding.messages), exempt=exempt)
        message = pr.message_of(finding.messages, outcome, finding.namespace)
        message = self.messages.setdefault(message, message)
        rule = "exemptNamespaces" if exempt else response.scope or "baseline"
        result = pr.Result(finding.target.api_version, finding.target.kind, finding.namespace, finding.name,
                           finding.uid, rule, outcome, message, finding.exceptions, finding.decision)
        with self.lock:
            self.results[finding.namespace].append(result)


def preflight(client: KubeClient, namespace: str | None) -> None:
    """Ask for every verb the writes need first, so a missing grant stops us before the audit runs."""
    permissions = [replace(p, namespace=namespace or "") for p in FEATURES["report"].permissions]
    absent = missing(check_all(client, permissions))
    if absent:
        raise PreflightFailed("write policy reports", client.config.identity, absent)


def stored_reports(client: KubeClient, namespace: str | None) -> tuple[list[Stored], pr.Found]:
    """Our reports now stored (in ``namespace``, or everywhere), and each stored result's
    fingerprint and timestamp by uid. A missing CRD is named as such."""
    path = _collection(namespace)
    params = {"labelSelector": "=".join(pr.MANAGED_BY), "limit": str(PAGE)}
    reports: list[Stored] = []
    found: pr.Found = {}
    while True:
        try:
            page = client.request("GET", path, params=params)
        except ApiError as exc:
            if exc.code == 404:
                raise KubeError(f"the API server does not serve {QUALIFIED}/{pr.API_VERSION.split('/')[1]}: "
                                "install the PolicyReport CRDs (manifests/components/policy-reports)") from None
            if exc.code == 410 and "continue" in params:  # the list expired under us: start it again
                params.pop("continue")
                reports, found = [], {}
                continue
            raise
        for item in page.get("items") or []:
            if not isinstance(item, dict):
                continue
            metadata = item.get("metadata") or {}
            reports.append(Stored(str(metadata.get("namespace") or ""), str(metadata.get("name") or ""),
                                  str(metadata.get("resourceVersion") or ""), pr.content(item)))
            for result in item.get("results") or []:
                if not isinstance(result, dict):
                    continue
                for ref in result.get("resources") or []:
                    found[str(ref.get("uid"))] = (pr.fingerprint(result), result.get("timestamp"))
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return reports, found
        params["continue"] = str(token)


def write(client: KubeClient, collector: Collector, stored: list[Stored], found: pr.Found, *,
          now: float, max_bytes: int = pr.MAX_REPORT_BYTES) -> Iterator[Written]:
    """Bring every namespace's reports to what the collected results say, then prune the rest;
    each write is handed over as it is done, so a failure later still shows what was written."""
    by_namespace: dict[str, dict[str, Stored]] = defaultdict(dict)
    for known in stored:
        by_namespace[known.namespace][known.name] = known
    for namespace in sorted(set(collector.results) | set(by_namespace)):
        existing = by_namespace.get(namespace, {})
        desired = pr.build(namespace, collector.results.get(namespace, []), now=now, found=found, max_bytes=max_bytes)
        for report in desired:
            action = apply(client, report, existing.get(report["metadata"]["name"]))
            yield Written(namespace, report["metadata"]["name"], action, report["summary"])
        names = {report["metadata"]["name"] for report in desired}
        for name in sorted(set(existing) - names):
            _delete(client, namespace, name)
            yield Written(namespace, name, "deleted")


def apply(client: KubeClient, desired: dict[str, Any], known: Stored | None) -> str:
    """Create, update with ``resourceVersion``, or leave alone; a 409 means read it again and retry."""
    namespace, name = desired["metadata"]["namespace"], desired["metadata"]["name"]
    for attempt in range(CONFLICT_ATTEMPTS):
        if attempt:
            time.sleep(0.05 * 2**attempt)
            current = _get(client, namespace, name)
            known = None if current is None else _ours(current, namespace, name)
        if known is None:
            try:
                client.request("POST", _collection(namespace), body=desired)
            except ApiError as exc:
                if exc.code == 409:  # created by someone else since we looked
                    continue
                raise
            return "created"
        if known.digest == pr.content(desired):
            return "unchanged"
        body = {**desired, "metadata": {**desired["metadata"], "resourceVersion": known.resource_version}}
        try:
            client.request("PUT", f"{_collection(namespace)}/{name}", body=body)
        except ApiError as exc:
            if exc.code == 409:
                continue
            raise
        return "updated"
    raise KubeError(f"{QUALIFIED} {name} in namespace {namespace} kept changing under us: "
                    f"{CONFLICT_ATTEMPTS} writes met 409 Conflict")


def run(
    client: KubeClient, policy: Policy, *, namespace: str | None, chunk_size: int, output: Output,
    out: TextIO, err: TextIO, stop: threading.Event, max_bytes: int = pr.MAX_REPORT_BYTES,
) -> int:
    """Preflight, read our stored reports, audit with a full list, then write; 0 once written.

    Violations do not make the status 1 here: they are the reports' content, and a CronJob whose
    every run failed would be retried and alerted on for what the reports already say.
    """
    preflight(client, namespace)
    stored, found = stored_reports(client, namespace)
    collector = Collector(policy)
    now = time.time()
    run_audit(client, policy, namespace=namespace, watch=False, chunk_size=chunk_size, output=output,
              out=out, err=err, stop=stop, collect=collector.add)
    stream = out if output == "table" else err

    def say(line: str) -> None:
        print(line if output == "table" else f"webhook: {line}", file=stream, flush=True)

    counts = dict.fromkeys(("created", "updated", "unchanged", "deleted"), 0)
    for written in write(client, collector, stored, found, now=now, max_bytes=max_bytes):
        counts[written.action] += 1
        say(str(written))
    namespaces = len(collector.results)
    say(f"policy reports for {namespaces} namespace{'' if namespaces == 1 else 's'}: "
        + ", ".join(f"{n} {action}" for action, n in counts.items()))
    if collector.unplaced:
        say(f"{collector.unplaced} object(s) without a namespace were left out")
    return 0


def _ours(current: dict[str, Any], namespace: str, name: str) -> Stored:
    metadata = current.get("metadata") or {}
    if (metadata.get("labels") or {}).get(pr.MANAGED_BY[0]) != pr.MANAGED_BY[1]:
        raise KubeError(f"{QUALIFIED} {name} in namespace {namespace} exists but is not labelled "
                        f"{'='.join(pr.MANAGED_BY)}: not overwritten; delete or rename it")
    return Stored(namespace, name, str(metadata.get("resourceVersion") or ""), pr.content(current))


def _get(client: KubeClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return client.request("GET", f"{_collection(namespace)}/{name}")
    except ApiError as exc:
        if exc.code == 404:
            return None
        raise


def _delete(client: KubeClient, namespace: str, name: str) -> None:
    try:
        client.request("DELETE", f"{_collection(namespace)}/{name}")
    except ApiError as exc:
        if exc.code != 404:  # already gone is what we wanted
            raise


def _collection(namespace: str | None) -> str:
    where = f"/namespaces/{namespace}" if namespace else ""
    return f"/apis/{pr.API_VERSION}{where}/{pr.RESOURCE}"

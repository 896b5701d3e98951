"""``webhook audit``: what already runs that the current policy would deny, by list and watch.

Policies change, and workloads admitted before a change (or in an exempt window) keep
running. Each Pod and workload is judged by the validating webhook exactly as the server
would judge a CREATE of it, so the messages are the server's. Mutation is not applied: it
cannot change what already runs, and an image that a rewrite would move to a mirror is still
pulled from where the object says.

Objects are judged one at a time as pages and events arrive (``reflector.py``); nothing
holds the cluster. In watch mode only the objects now in violation are remembered, so each
violation is reported once, and again only when its messages change, resolve or it is deleted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TextIO

import orjson

from webhook.admission.chain import Target, request_for
from webhook.admission.deadline import NEVER
from webhook.admission.review import Response, clean_warnings
from webhook.admission.webhook import VALIDATING
from webhook.kube.access import Access, Permission, check_all, describe, missing
from webhook.kube.client import KubeClient, KubeError
from webhook.kube.namespaces import PATH as NAMESPACES
from webhook.kube.namespaces import NamespaceCache
from webhook.kube.reflector import Backoff, Reflector, names, uid
from webhook.policy.model import Policy

USERNAME = "webhook-audit"
EXIT_VIOLATIONS = 1
Output = Literal["table", "json"]
# The kinds the validating webhook judges, in the order of access.WORKLOADS.
RESOURCES = (
    Target("", "v1", "Pod", "pods"),
    Target("", "v1", "PodTemplate", "podtemplates"),
    Target("", "v1", "ReplicationController", "replicationcontrollers"),
    Target("apps", "v1", "Deployment", "deployments"),
    Target("apps", "v1", "ReplicaSet", "replicasets"),
    Target("apps", "v1", "StatefulSet", "statefulsets"),
    Target("apps", "v1", "DaemonSet", "daemonsets"),
    Target("batch", "v1", "Job", "jobs"),
    Target("batch", "v1", "CronJob", "cronjobs"),
)
# Table columns are fixed, because rows are printed as they are found.
WIDTHS = {"EVENT": 9, "KIND": 21, "NAMESPACE/NAME": 40, "DECISION": 8}


class PreflightFailed(KubeError):
    """A command's preflight found a permission missing: ``audit``, and ``audit --report``."""

    def __init__(self, action: str, identity: str, absent: list[Access]) -> None:
        lines = "\n".join(f"  - {describe(a.permission)}" + (f" ({a.reason})" if a.reason else "") for a in absent)
        super().__init__(f"cannot {action}: {identity} is missing {len(absent)} permission(s):\n{lines}")


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the report: a violation, or the end of one."""

    event: str  # LISTED, ADDED, MODIFIED; RESOLVED or DELETED when a reported violation ends
    target: Target
    namespace: str | None
    name: str
    uid: str
    response: Response | None  # None once the object is deleted
    # (name, expiry) of each exception without which the object would be denied or warned about
    exceptions: tuple[tuple[str, str], ...] = ()

    @property
    def decision(self) -> str:
        if self.response is None:
            return "deleted"
        if not self.response.allowed:
            return "denied"
        if self.response.outcome == "warned":
            return "warned"
        return "excepted" if self.response.exceptions else "allowed"

    @property
    def messages(self) -> list[str]:
        if self.response is None:
            return []
        denial = [] if self.response.allowed else [self.response.message or self.response.reason or "denied"]
        return [*denial, *clean_warnings(self.response.warnings)]

    def record(self) -> dict[str, Any]:
        response = self.response
        status = None if response is None or response.allowed else {
            "code": response.code, "reason": response.reason, "message": response.message}
        return {"event": self.event, "apiVersion": self.target.api_version, "kind": self.target.kind,
                "namespace": self.namespace, "name": self.name, "uid": self.uid, "decision": self.decision,
                "status": status, "warnings": clean_warnings(response.warnings) if response else [],
                "scope": response.scope if response else None,
                "exceptions": [{"name": name, "expires": expires} for name, expires in self.exceptions]}


def preflight(client: KubeClient, namespace: str | None, *, watch: bool, namespaces: bool = False) -> None:
    """Ask for list (and watch) on every kind first, so a missing grant stops us with its name;
    on namespaces too, when the policy selects by their labels."""
    verbs = ("list", "watch") if watch else ("list",)
    permissions = [Permission(verb, t.resource, t.group, namespace or "") for t in RESOURCES for verb in verbs]
    permissions += [Permission(verb, "namespaces") for verb in verbs] if namespaces else []
    absent = missing(check_all(client, permissions))
    if absent:
        raise PreflightFailed("audit", client.config.identity, absent)


def judge(obj: dict[str, Any], target: Target, policy: Policy) -> Response:
    """The validating webhook's answer to a CREATE of the object as it is stored."""
    return VALIDATING.review(request_for(obj, target, names(obj)[0], username=USERNAME), policy, NEVER)


class Auditor:
    """The reflector's handler for one kind: judge each object, report what violates the policy."""

    def __init__(self, target: Target, policy: Policy, report: Callable[[Finding], None], *, track: bool,
                 collect: Callable[[Finding], None] | None = None) -> None:
        self.target = target
        self.policy = policy
        self.report = report
        self.collect = collect  # `--report`: every object's finding, violation or not
        self.track = track  # watch mode: remember violations, to report each once and its end
        self.violations: dict[str, tuple[str | None, str, tuple[str, ...]]] = {}  # uid -> namespace, name, messages
        self.seen: set[str] = set()  # violations seen again by the list under way

    def listing(self) -> None:
        self.seen = set()

    def observe(self, obj: dict[str, Any], event: str) -> None:
        key, (namespace, name) = uid(obj), names(obj)
        response = judge(obj, self.target, self.policy)
        exceptions = tuple((n, self.policy.exceptions.expires_text(n)) for n in response.exceptions)
        finding = Finding(event, self.target, namespace, name, key, response, exceptions)
        if self.collect is not None:
            self.collect(finding)
        if response.allowed and response.outcome != "warned" and not response.exceptions:
            if self.track and self.violations.pop(key, None) is not None:
                self.report(Finding("RESOLVED", self.target, namespace, name, key, response))
            return
        if self.track:
            self.seen.add(key)
            now = (namespace, name, tuple(finding.messages))
            if self.violations.get(key) == now:
                return  # nothing new: a status update, a scale, a label
            self.violations[key] = now
        self.report(finding)

    def listed(self) -> None:
        for key in [key for key in self.violations if key not in self.seen]:  # gone while we did not watch
            self._gone(key)

    def deleted(self, obj: dict[str, Any]) -> None:
        self._gone(uid(obj))

    def _gone(self, key: str) -> None:
        known = self.violations.pop(key, None)
        if known is not None:
            self.report(Finding("DELETED", self.target, known[0], known[1], key, None))


class Report:
    """Prints findings as they come, from any thread, one whole line at a time."""

    def __init__(self, output: Output, *, watch: bool, out: TextIO, err: TextIO) -> None:
        self.output = output
        self.watch = watch
        self.out = out
        self.err = err
        self.lock = threading.Lock()
        self.denied = self.warned = self.excepted = 0
        self.header = False

    def finding(self, finding: Finding) -> None:
        with self.lock:
            self.denied += finding.decision == "denied"
            self.warned += finding.decision == "warned"
            self.excepted += finding.decision == "excepted"
            if self.output == "json":
                self.out.write(orjson.dumps(finding.record()).decode() + "\n")
            else:
                self.out.write(self._rows(finding))
            self.out.flush()

    def warning(self, text: str) -> None:
        with self.lock:
            print(f"webhook: warning: {text}", file=self.err, flush=True)

    def _rows(self, finding: Finding) -> str:
        columns = ["EVENT", "KIND", "NAMESPACE/NAME", "DECISION"][0 if self.watch else 1:]
        name = f"{finding.namespace}/{finding.name}" if finding.namespace else finding.name
        cells = dict(zip(["EVENT", "KIND", "NAMESPACE/NAME", "DECISION"],
                         [finding.event, finding.target.kind, name, finding.decision], strict=True))
        text = ""
        if not self.header:
            self.header = True
            text += "  ".join(c.ljust(WIDTHS[c]) for c in columns) + "  MESSAGES\n"
        for index, message in enumerate(finding.messages or [""]):
            lead = [cells[c] if index == 0 else "" for c in columns]
            text += ("  ".join(cell.ljust(WIDTHS[c]) for cell, c in zip(lead, columns, strict=True))
                     + "  " + message).rstrip() + "\n"
        return text


def run(
    client: KubeClient, policy: Policy, *, namespace: str | None, watch: bool, chunk_size: int, output: Output,
    out: TextIO, err: TextIO, stop: threading.Event, backoff: Backoff | None = None, at: float | None = None,
    collect: Callable[[Finding], None] | None = None,
) -> int:
    """Preflight, list every kind, then (``watch``) watch them all until ``stop`` is set.

    Returns 1 when a list found a violation and ``watch`` is off, else 0. ``at`` judges as of
    that moment (``--at``), the note about expired exceptions included. ``collect`` is handed
    every object's finding, for ``--report``.
    """
    if at is not None:
        policy = policy.seen_from(clock=lambda: at)
    preflight(client, namespace, watch=watch, namespaces=policy.needs_namespace_labels)
    report = Report(output, watch=watch, out=out, err=err)
    for warning in policy.exceptions.expired_warnings(policy.clock()):
        report.warning(f"policy file {policy.source}: {warning}")
    reflectors = []
    if policy.needs_namespace_labels:  # the labels first, as serve has them before it judges
        labels = NamespaceCache()
        reflectors.append(Reflector(client, NAMESPACES, "namespaces", labels, chunk_size=chunk_size, backoff=backoff,
                                    warn=report.warning))
        policy = policy.seen_from(namespace_labels=labels)
    for target in RESOURCES:
        prefix = f"/apis/{target.group}/{target.version}" if target.group else f"/api/{target.version}"
        path = f"{prefix}/namespaces/{namespace}/{target.resource}" if namespace else f"{prefix}/{target.resource}"
        what = f"{target.resource}.{target.group}" if target.group else target.resource
        auditor = Auditor(target, policy, report.finding, track=watch, collect=collect)
        reflectors.append(Reflector(client, path, what, auditor, chunk_size=chunk_size, backoff=backoff,
                                    warn=report.warning))
    versions = [reflector.list() for reflector in reflectors]
    if not watch:
        scope = f"namespace {namespace}" if namespace else "all namespaces"
        objects = sum(r.objects for r in reflectors if r.path != NAMESPACES)
        summary = (f"audited {objects} object{'' if objects == 1 else 's'} of {len(RESOURCES)} kinds in {scope}: "
                   f"{report.denied} denied, {report.warned} warned")
        if report.excepted:  # running only because of an exception, which will expire
            summary += f", {report.excepted} excepted"
        if output == "table":
            print(f"\n{summary}" if report.header else summary, file=out, flush=True)
        else:
            print(f"webhook: {summary}", file=err, flush=True)
        return EXIT_VIOLATIONS if report.denied else 0
    threads = [threading.Thread(target=r.watch, args=(v, stop), name=f"watch {r.what}", daemon=True)
               for r, v in zip(reflectors, versions, strict=True)]
    try:
        for thread in threads:
            thread.start()
        while not stop.wait(0.2):
            pass
    finally:
        stop.set()
    return 0

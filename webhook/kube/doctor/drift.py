"""What runs now that the policy would deny: ``audit``'s count, from one list pass and no watch.

The judging is audit's own (``Auditor``, ``judge``), so the numbers are the ones ``webhook audit``
prints with the same policy; doctor only counts, and points to it for the list.
"""

from __future__ import annotations

from webhook.kube.access import Permission
from webhook.kube.audit import RESOURCES, Auditor, Finding
from webhook.kube.client import ApiError
from webhook.kube.doctor.findings import CannotCheck, Cluster, Report, Settings
from webhook.kube.doctor.namespaces import live_namespaces
from webhook.kube.reflector import Reflector


def check(cluster: Cluster, settings: Settings, report: Report) -> None:
    policy = settings.policy
    counts = {"denied": 0, "warned": 0, "excepted": 0}

    def count(finding: Finding) -> None:
        if finding.decision in counts:
            counts[finding.decision] += 1

    try:
        if policy.needs_namespace_labels:
            labels = live_namespaces(cluster)
            policy = policy.seen_from(namespace_labels=labels.get)
        objects = 0
        for target in RESOURCES:
            prefix = f"/apis/{target.group}/{target.version}" if target.group else f"/api/{target.version}"
            reflector = Reflector(cluster.client, f"{prefix}/{target.resource}", target.resource,
                                  Auditor(target, policy, count, track=False), chunk_size=500)
            try:
                reflector.list()
            except ApiError as exc:
                if exc.code != 403:
                    raise
                raise CannotCheck(Permission("list", target.resource, target.group)) from None
            objects += reflector.objects
    except CannotCheck as exc:
        report.cannot("running", exc)
        return
    if counts["denied"]:
        report.add("running", "warning", f"{counts['denied']} of {objects} running objects would be denied by the "
                   f"policy now ({counts['warned']} warned, {counts['excepted']} only by an exception)",
                   f"webhook audit{'' if policy.source.startswith('<') else f' --policy {policy.source}'} lists them")
    else:
        report.ok("running")
        if counts["warned"] or counts["excepted"]:
            report.add("running", "info", f"{counts['warned']} running object(s) get a warning and "
                       f"{counts['excepted']} run only because of an exception", "webhook audit lists them")

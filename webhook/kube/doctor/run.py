"""Run every check against one cluster and print the report as a table or JSON.

Exit status, so CI can gate on it: 0 when nothing is an error or a warning, 1 otherwise
(a check that could not be done is a warning: a gate must not pass on what it did not see).
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from webhook.kube.client import KubeClient
from webhook.kube.doctor import availability, configurations, drift, namespaces, policy, switches
from webhook.kube.doctor.findings import SEVERITIES, Cluster, Report, Settings

EXIT_FINDINGS = 1
CHECKS: tuple[Callable[[Cluster, Settings, Report], None], ...] = (
    configurations.check, policy.check, namespaces.check, switches.check, availability.check, drift.check)


def diagnose(client: KubeClient, settings: Settings) -> Report:
    """Every check, in the order of the report; a refused read never stops the ones after it."""
    cluster = Cluster(client)
    report = Report()
    for check in CHECKS:
        check(cluster, settings, report)
    order = {severity: index for index, severity in enumerate(SEVERITIES)}
    report.findings.sort(key=lambda f: order[f.severity])  # stable: check order within a severity
    return report


def exit_code(report: Report) -> int:
    return EXIT_FINDINGS if any(f.severity != "info" for f in report.findings) else 0


def summary(report: Report) -> str:
    counts = {s: sum(1 for f in report.findings if f.severity == s) for s in SEVERITIES}
    return (f"{counts['error']} error(s), {counts['warning']} warning(s), {counts['info']} note(s); "
            f"{len(report.passed)} check(s) passed")


def render(report: Report, output: str) -> str:
    """The table (severity, check, finding, and the fix under it), or one JSON document."""
    if output == "json":
        document = {"findings": [f.record() for f in report.findings], "passed": report.passed,
                    "summary": summary(report), "exitCode": exit_code(report)}
        return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"
    width = max([len("CHECK"), *(len(f.check) for f in report.findings)])
    lines = [f"{'SEVERITY':<8}  {'CHECK':<{width}}  FINDING"] if report.findings else []
    for finding in report.findings:
        lines.append(f"{finding.severity:<8}  {finding.check:<{width}}  {finding.message}")
        if finding.fix:
            lines.append(f"{'':<8}  {'':<{width}}  fix: {finding.fix}")
    lines += ["", summary(report)] if lines else [summary(report)]
    return "\n".join(lines) + "\n"

"""Which live namespaces the guard does not reach, and why.

A namespace can be left out in four places: the policy (``exemptNamespaces``, a scope with
``mode: off``), the validating webhook's ``namespaceSelector`` (evaluated here against the
namespaces' labels), its ``objectSelector`` and its ``matchConditions`` (which leave out
objects or requests rather than namespaces, and whose CEL we do not evaluate). A selector on
a label other than ``kubernetes.io/metadata.name`` is a switch for whoever may label namespaces.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from webhook.kube.access import Permission
from webhook.kube.doctor.configurations import REGISTER, live_webhook
from webhook.kube.doctor.findings import CannotCheck, Cluster, Report, Settings, names
from webhook.kube.registration import NAMESPACE_LABEL
from webhook.policy.match import Labels, LabelSelector
from webhook.policy.model import Policy

NAMESPACES = Permission("list", "namespaces", "")


def live_namespaces(cluster: Cluster) -> dict[str, Labels]:
    """Every namespace's labels, by name; raises CannotCheck without ``list namespaces``."""
    items = cluster.list("/api/v1/namespaces", NAMESPACES)
    return {str(ns["metadata"]["name"]): dict(ns["metadata"].get("labels") or {}) for ns in items}


def label_keys(hook: dict[str, Any] | None, policy: Policy) -> list[str]:
    """The namespace labels that decide whether we guard a namespace: our namespaceSelector's keys
    (but the name label, which the API server sets and nobody can change) and the policy's."""
    keys = _selector_keys((hook or {}).get("namespaceSelector") or {})
    places = [s.match for s in policy.scopes.scopes] + [e.match for e in policy.exceptions.items]
    for match in places:
        if match.namespace_selector is not None:
            keys += _selector_keys(match.namespace_selector.model_dump())
    return sorted({key for key in keys if key != NAMESPACE_LABEL})


def check(cluster: Cluster, settings: Settings, report: Report) -> None:
    try:
        hook = live_webhook(cluster, settings, "validating")
        namespaces = live_namespaces(cluster)
    except CannotCheck as exc:
        report.cannot("namespaces", exc)
        return
    if hook is None:
        return  # reported by the configuration checks: nothing is guarded
    policy = settings.policy
    exempt = sorted(n for n in namespaces if n in policy.exempt_namespaces)
    if exempt:
        report.add("namespaces.exempt", "info", f"{len(exempt)} namespace(s) exempt in the policy (exemptNamespaces): "
                   f"{names(exempt)}", "remove them from exemptNamespaces in the policy to guard them")
    else:
        report.ok("namespaces.exempt")
    _selector(report, hook, namespaces, exempt)
    off = sorted({n for scope in policy.scopes.scopes if scope.rules.mode == "off" and _whole(scope.match)
                  for n in namespaces if scope.match.namespace_holds(n, namespaces.get)})
    if off:
        report.add("namespaces.scope-off", "info", f"{len(off)} namespace(s) where a policy scope has mode off: "
                   f"{names(off)}", "set the scope's images.mode to enforce or warn")
    else:
        report.ok("namespaces.scope-off")
    _object_filters(report, hook)


def _selector(report: Report, hook: dict[str, Any], namespaces: dict[str, Labels], exempt: list[str]) -> None:
    raw = hook.get("namespaceSelector") or {}
    try:
        selector = LabelSelector.model_validate(raw)
    except ValidationError:
        report.add("namespaces.selector", "error", f"{hook['name']} has a namespaceSelector we cannot read: {raw}",
                   REGISTER)
        return
    excluded = sorted(n for n, labels in namespaces.items() if not selector.matches(labels) and n not in exempt)
    # Left out by a label someone may set, or only by the name label, which nobody can change.
    by_label = LabelSelector(
        matchLabels={k: v for k, v in selector.matchLabels.items() if k != NAMESPACE_LABEL},
        matchExpressions=[r for r in selector.matchExpressions if r.key != NAMESPACE_LABEL])
    labelled = [n for n in excluded if not by_label.matches(namespaces[n])]
    by_name = [n for n in excluded if n not in labelled]
    if labelled:
        keys = sorted(set(_selector_keys(raw)) - {NAMESPACE_LABEL})
        report.add("namespaces.selector", "warning", f"{len(labelled)} namespace(s) left out by the namespaceSelector "
                   f"of {hook['name']} on label(s) {', '.join(keys)}, which whoever may update a namespace can set: "
                   f"{names(labelled)}", f"{REGISTER}: its namespaceSelector keys only on {NAMESPACE_LABEL}")
    if by_name:
        report.add("namespaces.selector", "info", f"{len(by_name)} namespace(s) left out by name by the "
                   f"namespaceSelector of {hook['name']}: {names(by_name)}",
                   "register without --exclude-namespace NS to guard one (kube-system and the webhook's own "
                   "namespace always stay out)")
    if not labelled:
        report.ok("namespaces.selector")


def _object_filters(report: Report, hook: dict[str, Any]) -> None:
    selector = hook.get("objectSelector") or {}
    if selector.get("matchLabels") or selector.get("matchExpressions"):
        report.add("namespaces.object-selector", "warning", f"{hook['name']} has objectSelector {selector}: an object "
                   "whose labels do not match is never judged, and whoever creates it chooses its labels", REGISTER)
    else:
        report.ok("namespaces.object-selector")
    conditions = [str(c.get("name")) for c in hook.get("matchConditions") or [] if isinstance(c, dict)]
    if conditions:
        report.add("namespaces.match-conditions", "warning", f"{hook['name']} has matchConditions "
                   f"({', '.join(conditions)}): requests they reject are never judged (their CEL is not "
                   "evaluated here; read them)", "remove the matchConditions, or make sure they only skip what "
                   "the policy would allow anyway")
    else:
        report.ok("namespaces.match-conditions")


def _selector_keys(selector: dict[str, Any]) -> list[str]:
    keys = list((selector.get("matchLabels") or {}).keys())
    return keys + [str(r.get("key")) for r in selector.get("matchExpressions") or [] if isinstance(r, dict)]


def _whole(match: Any) -> bool:
    """A match that selects by namespace only, so it takes in every request there."""
    return (match.kinds is None and match.users is None and match.groups is None and match.object_selector is None
            and (match.exact_namespaces is not None or match.namespace_selector is not None))

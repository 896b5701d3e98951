"""The policy the pods serve: the ConfigMap they mount, against the policy doctor judges with.

Every other check reads the policy given with ``--policy`` (or the embedded default). If the
live ConfigMap holds another, those findings are about a policy nobody enforces; if it does not
load, the pods keep their last good policy until one restarts, and a restarted pod does not
start at all; and ``mode: off`` there judges nothing, however the rest looks.
"""

from __future__ import annotations

from webhook.kube.access import Permission
from webhook.kube.doctor.findings import CannotCheck, Cluster, Report, Settings
from webhook.policy.model import PolicyError, parse_policy

KEY = "policy.yaml"  # the ConfigMap key the Deployment mounts (manifests/base/deployment.yaml)


def check(cluster: Cluster, settings: Settings, report: Report) -> None:
    namespace, name = settings.options.service_namespace, settings.policy_configmap
    where = f"ConfigMap {namespace}/{name}"
    try:
        configmap = cluster.get(f"/api/v1/namespaces/{namespace}/configmaps/{name}",
                                Permission("get", "configmaps", "", namespace=namespace, name=name))
    except CannotCheck as exc:
        report.cannot("policy.live", exc)
        return
    text = ((configmap or {}).get("data") or {}).get(KEY)
    if not isinstance(text, str):
        missing = "does not exist" if configmap is None else f"has no {KEY}"
        report.add("policy.live", "warning", f"{where} {missing}: the pods mount their policy from it, so a pod "
                   "that restarts cannot start; doctor judged with " + settings.policy.source,
                   "kubectl apply -k manifests/ (or --policy-configmap NAME where the pods' policy lives)")
        return
    try:
        live = parse_policy(text.encode(), f"{where} {KEY}")
    except PolicyError as exc:
        report.add("policy.live", "error", f"the policy in {where} does not load ({exc}): running pods keep their "
                   "last good policy, and a pod that restarts does not start",
                   "webhook check --policy FILE on the file the ConfigMap is made from, fix it, and apply it again")
        return
    report.ok("policy.live")
    if live.mode == "off":
        report.add("policy.mode", "error", f"the policy in {where} has images.mode: off: no image is judged",
                   "set images.mode to enforce (or warn while teams move)")
    else:
        report.ok("policy.mode")
    if live.meaning != settings.policy.meaning:  # a comment or a key's order is no drift
        report.add("policy.drift", "warning", f"the policy in {where} (sha256:{live.sha256[:12]}) is not the one "
                   f"doctor judged with, {settings.policy.source} (sha256:{settings.policy.sha256[:12]}): "
                   "the findings on namespaces and on what runs are about the latter",
                   f"webhook doctor --policy FILE, with the file {where} is made from")
    else:
        report.ok("policy.drift")

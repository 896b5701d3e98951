"""Whether the API server can always reach a replica: with ``failurePolicy: Fail``, a webhook
without a ready endpoint refuses every guarded write in the cluster, and with ``Ignore`` it
admits every image. So: at least two ready endpoints, a PodDisruptionBudget over them, and
replicas on more than one node when there are several.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from webhook.kube.access import Permission
from webhook.kube.doctor.findings import CannotCheck, Cluster, Report, Settings, names
from webhook.policy.match import LabelSelector


def check(cluster: Cluster, settings: Settings, report: Report) -> None:
    options = settings.options
    if options.url is not None:
        report.add("availability", "info", f"the webhook is called at {options.url}, outside the cluster: its "
                   "availability is not checked")
        return
    ns, service = options.service_namespace, options.service_name
    deployment = f"kubectl -n {ns} get deployment,pods -l app.kubernetes.io/name={service}"
    try:
        endpoints = _ready_endpoints(cluster, ns, service)
    except CannotCheck as exc:
        report.cannot("availability.endpoints", exc)
        return
    if not endpoints:
        report.add("availability.endpoints", "error", f"Service {ns}/{service} has no ready endpoint: every call "
                   "fails, so failurePolicy decides every guarded write", deployment)
        return
    if len(endpoints) == 1:
        report.add("availability.endpoints", "warning", f"Service {ns}/{service} has 1 ready endpoint: a restart "
                   "or an eviction leaves the API server without the webhook",
                   f"kubectl -n {ns} scale deployment/{service} --replicas 3 (as manifests/base/deployment.yaml)")
    else:
        report.ok("availability.endpoints")
    pods = [str(ref["name"]) for ep in endpoints if (ref := ep.get("targetRef") or {}).get("kind") == "Pod"]
    try:
        _disruption_budget(cluster, report, ns, pods)
    except CannotCheck as exc:
        report.cannot("availability.disruption-budget", exc)
    try:
        _spread(cluster, report, ns, endpoints)
    except CannotCheck as exc:
        report.cannot("availability.spread", exc)


def _ready_endpoints(cluster: Cluster, ns: str, service: str) -> list[dict[str, Any]]:
    slices = cluster.list(f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
                          Permission("list", "endpointslices", "discovery.k8s.io", namespace=ns),
                          selector=f"kubernetes.io/service-name={service}")
    found: dict[tuple[str, ...], dict[str, Any]] = {}
    for piece in slices:
        for endpoint in piece.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is not False:  # absent means ready
                found.setdefault(tuple(endpoint.get("addresses") or []), endpoint)
    return list(found.values())


def _pods(cluster: Cluster, ns: str) -> dict[str, dict[str, Any]]:
    items = cluster.list(f"/api/v1/namespaces/{ns}/pods", Permission("list", "pods", "", namespace=ns))
    return {str(pod["metadata"]["name"]): pod for pod in items}


def _disruption_budget(cluster: Cluster, report: Report, ns: str, pods: list[str]) -> None:
    budgets = cluster.list(f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
                           Permission("list", "poddisruptionbudgets", "policy", namespace=ns))
    live = _pods(cluster, ns)
    labels = [(live.get(name) or {}).get("metadata", {}).get("labels") or {} for name in pods]
    for budget in budgets:
        try:
            selector = LabelSelector.model_validate((budget.get("spec") or {}).get("selector") or {})
        except ValidationError:
            continue
        if labels and all(selector.matches(each) for each in labels):
            report.ok("availability.disruption-budget")
            return
    report.add("availability.disruption-budget", "warning", f"no PodDisruptionBudget in {ns} covers the webhook's "
               f"pods ({names(pods) or 'none known'}): a node drain may evict them all at once",
               "apply manifests/base/pdb.yaml (maxUnavailable: 1, selecting the Deployment's pod labels)")


def _spread(cluster: Cluster, report: Report, ns: str, endpoints: list[dict[str, Any]]) -> None:
    nodes = cluster.list("/api/v1/nodes", Permission("list", "nodes", ""))
    if len(nodes) < 2:
        report.ok("availability.spread")
        return
    placed = {str(ep.get("nodeName") or "") for ep in endpoints}
    if "" in placed:  # an endpoint that does not say: ask its pod
        live = _pods(cluster, ns)
        placed = {str(ep.get("nodeName") or ((live.get((ep.get("targetRef") or {}).get("name", "")) or {})
                  .get("spec") or {}).get("nodeName") or "") for ep in endpoints} - {""}
    if len(placed) == 1 and len(endpoints) > 1:
        report.add("availability.spread", "warning", f"all {len(endpoints)} ready replicas run on node "
                   f"{next(iter(placed))}, of {len(nodes)} nodes: losing that node stops the webhook",
                   "keep the Deployment's topologySpreadConstraints (manifests/base/deployment.yaml), then "
                   f"kubectl -n {ns} rollout restart deployment")
    else:
        report.ok("availability.spread")

"""The stand-in API server holding an installed webhook, healthy or broken, for ``doctor``.

``install`` stores what ``kubectl apply -k manifests/`` and a running Deployment leave behind:
namespaces, three nodes, the serving Secret (a real CA and certificate), the policy ConfigMap,
both webhook configurations as ``register`` writes them, three ready pods behind an
EndpointSlice, the PodDisruptionBudget, and RBAC (``cluster-admin`` for ``system:masters``, the
webhook's own ClusterRole). ``break_installation`` then does what the issue's peers suffered:
failurePolicy Ignore, rules without ``pods/ephemeralcontainers``, a caBundle of another CA, a
namespace left out by a label a team may set, someone else allowed to delete the
configurations, one replica left and no PDB, and an image running that the policy denies.
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

from tests.apiserver import ApiServer
from tests.apiserver_store import RBAC
from tests.reviews import pod_spec, workload
from webhook.certs import ensure_certificates
from webhook.kube.registration import RegistrationOptions, build_configurations

NS = "admission-webhook"
LABELS = {"app.kubernetes.io/name": NS, "app.kubernetes.io/component": "webhook"}
NODES = ("node-a", "node-b", "node-c")
PODS = ("admission-webhook-6f7c9-2xkqp", "admission-webhook-6f7c9-8hd4z", "admission-webhook-6f7c9-tq5mn")
IMAGE = "ghcr.io/admission-webhook/admission-webhook:0.1.0"
SKIP_LABEL = "webhook.sealyun.com/skip"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _role(kind: str, name: str, rules: list[dict[str, Any]], namespace: str | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, **({"namespace": namespace} if namespace else {})}, "rules": rules}


def _binding(name: str, role_kind: str, role: str, subjects: list[dict[str, Any]],
             namespace: str | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, **({"namespace": namespace} if namespace else {})},
            "roleRef": {"apiGroup": RBAC, "kind": role_kind, "name": role}, "subjects": subjects}


def install(server: ApiServer, directory: Path) -> None:
    """A healthy installation: every doctor check passes, only the expected notes remain."""
    store = server.store
    for name, labels in (("default", {}), ("kube-system", {}), (NS, {}), ("shop", {"team": "shop"}),
                         ("ops", {"team": "ops"})):
        store.put("namespaces", {"metadata": {"name": name, "labels": labels}})
    for node in NODES:
        store.put("nodes", {"metadata": {"name": node}})
    certs = directory / "installed-certs"
    ensure_certificates(certs, NS, NS)
    store.put("secrets", {"metadata": {"name": f"{NS}-tls", "namespace": NS}, "type": "kubernetes.io/tls",
                          "data": {k: _b64((certs / k).read_bytes()) for k in ("tls.crt", "tls.key", "ca.crt")}})
    policy = (Path(__file__).resolve().parent.parent / "manifests/base/policy.yaml").read_text()
    store.put("configmaps", {"metadata": {"name": f"{NS}-policy", "namespace": NS}, "data": {"policy.yaml": policy}})
    with server.lock:
        for plural, body in zip(("validatingwebhookconfigurations", "mutatingwebhookconfigurations"),
                                build_configurations(RegistrationOptions(), (certs / "ca.crt").read_bytes()),
                                strict=True):
            server.objects[plural].pop(body["metadata"]["name"], None)
            server._create(plural, body)
    endpoints = []
    for index, (pod, node) in enumerate(zip(PODS, NODES, strict=True)):
        obj = workload("Pod", pod_spec(IMAGE), name=pod, namespace=NS)
        obj["metadata"]["labels"] = dict(LABELS)
        obj["spec"]["nodeName"] = node
        store.put("pods", obj)
        endpoints.append({"addresses": [f"10.244.{index}.7"], "conditions": {"ready": True}, "nodeName": node,
                          "targetRef": {"kind": "Pod", "name": pod, "namespace": NS}})
    store.put("endpointslices.discovery.k8s.io", {
        "metadata": {"name": f"{NS}-x7k2p", "namespace": NS, "labels": {"kubernetes.io/service-name": NS}},
        "addressType": "IPv4", "endpoints": endpoints, "ports": [{"name": "https", "port": 8443}]})
    store.put("poddisruptionbudgets.policy", {"metadata": {"name": NS, "namespace": NS},
                                              "spec": {"maxUnavailable": 1, "selector": {"matchLabels": LABELS}}})
    store.put("deployments.apps", workload("Deployment", pod_spec("nginx:1.27"), name="web", namespace="shop"))
    everything = [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]
    store.put(f"clusterroles.{RBAC}", _role("ClusterRole", "cluster-admin", everything))
    store.put(f"clusterrolebindings.{RBAC}", _binding("cluster-admin", "ClusterRole", "cluster-admin",
                                                      [{"kind": "Group", "name": "system:masters"}]))
    ours = [{"apiGroups": ["admissionregistration.k8s.io"], "resourceNames": [NS], "verbs": ["get", "update"],
             "resources": ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"]}]
    store.put(f"clusterroles.{RBAC}", _role("ClusterRole", NS, ours))
    store.put(f"clusterrolebindings.{RBAC}", _binding(NS, "ClusterRole", NS, [
        {"kind": "ServiceAccount", "name": NS, "namespace": NS}]))


def break_installation(server: ApiServer, directory: Path) -> None:
    """What went wrong at our peers, all at once, on top of ``install``; and the policy ConfigMap
    edited by hand to allow all of Docker Hub."""
    store = server.store
    other = directory / "other-ca"
    ensure_certificates(other, NS, NS)
    with server.lock:
        hook = server.objects["validatingwebhookconfigurations"][NS]["webhooks"][0]
        hook["failurePolicy"] = "Ignore"
        hook["rules"][0]["resources"].remove("pods/ephemeralcontainers")
        hook["clientConfig"]["caBundle"] = _b64((other / "ca.crt").read_bytes())
        hook["namespaceSelector"]["matchExpressions"].append({"key": SKIP_LABEL, "operator": "DoesNotExist"})
    store.put("namespaces", {"metadata": {"name": "ops", "labels": {"team": "ops", SKIP_LABEL: "true"}}})
    store.put(f"clusterroles.{RBAC}", _role("ClusterRole", "namespace-editor", [
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "update", "patch"]}]))
    store.put(f"rolebindings.{RBAC}", _binding("ops-admins", "ClusterRole", "namespace-editor",
                                               [{"kind": "Group", "name": "ops-team"}], namespace="ops"))
    store.put(f"clusterroles.{RBAC}", _role("ClusterRole", "webhook-admin", [
        {"apiGroups": ["admissionregistration.k8s.io"], "verbs": ["*"],
         "resources": ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"]}]))
    store.put(f"clusterrolebindings.{RBAC}", _binding("ci-deployer", "ClusterRole", "webhook-admin",
                                                      [{"kind": "User", "name": "ci"}]))
    for pod in PODS[1:]:
        store.delete("pods", NS, pod)
    piece = copy.deepcopy(store.get("endpointslices.discovery.k8s.io", f"{NS}-x7k2p", NS))
    assert piece is not None
    piece["endpoints"] = piece["endpoints"][:1]
    store.put("endpointslices.discovery.k8s.io", piece)
    store.delete("poddisruptionbudgets.policy", NS, NS)
    store.put("pods", workload("Pod", pod_spec("evil.io/miner:latest"), name="miner", namespace="ops"))
    live = store.get("configmaps", f"{NS}-policy", NS)
    assert live is not None
    text = live["data"]["policy.yaml"]
    live["data"]["policy.yaml"] = text.replace("    - quay.io/*\n", "    - quay.io/*\n    - docker.io/*\n")
    store.put("configmaps", live)

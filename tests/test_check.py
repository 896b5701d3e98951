"""`webhook check` as a CI job runs it: the real command over real files, output and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, write_policy
from tests.docs import Sandbox, doc_block, run_block
from tests.reviews import FIXTURES, applied

CHECK = FIXTURES / "check"
GOLDEN = CHECK / "golden"
MUTATING_POLICY = "tests/fixtures/mutating-policy.yaml"


def check(*args: str, stdin: str | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "webhook", "check", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd, input=stdin, check=False)


def source(name: str) -> list[Any]:
    text = (CHECK / name).read_text()
    return [json.loads(text)] if name.endswith(".json") else [d for d in yaml.safe_load_all(text) if d]


# --- the table, against golden files -----------------------------------------------------------

def test_example_manifests_are_allowed_and_the_table_is_golden() -> None:
    result = check("manifests/crds", "manifests/examples")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == (GOLDEN / "examples.txt").read_text()


def test_the_readme_shows_the_real_table(tmp_path: Path) -> None:
    sandbox = Sandbox.make(tmp_path)
    run_block(doc_block("README.md", "check-table"), sandbox)
    run_block(doc_block("README.md", "check-unreadable"), sandbox)


def test_a_denial_exits_1_with_the_servers_message_in_the_table() -> None:
    result = check("tests/fixtures/check/workloads.yaml", "tests/fixtures/check/list.json")
    assert (result.returncode, result.stderr) == (1, "")
    assert result.stdout == (GOLDEN / "workloads.txt").read_text()


def test_mutation_shows_every_change_one_per_line() -> None:
    result = check("--policy", MUTATING_POLICY, "tests/fixtures/check/mirrored.yaml")
    assert (result.returncode, result.stderr) == (1, "")
    assert result.stdout == (GOLDEN / "mirrored.txt").read_text()


# --- json and yaml -------------------------------------------------------------------------------

def test_json_gives_each_decision_and_each_patch_which_applies_to_the_object() -> None:
    result = check("--policy", MUTATING_POLICY, "-o", "json", "tests/fixtures/check/mirrored.yaml")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["summary"] == {"objects": 3, "allowed": 2, "warned": 0, "denied": 1, "unreadable": 0}
    assert report["errors"] == []
    pod, project, deployment = report["results"]
    originals = source("mirrored.yaml")
    assert [(r["kind"], r["namespace"], r["name"], r["decision"], r["line"]) for r in report["results"]] == [
        ("Pod", "shop", "web", "allowed", 3), ("Project", "shop", "docs", "allowed", 17),
        ("Deployment", "shop", "tools", "denied", 25)]
    # The patch is what /mutate would send; an independent RFC 6902 implementation applies it.
    mutated = applied(originals[0], pod["patch"])
    assert [c["image"] for c in mutated["spec"]["containers"]] == [
        "mirror.acme.io/dockerhub/library/nginx:1.27", "mirror.acme.io/bitnami/redis:7"]
    assert [c["securityContext"] for c in mutated["spec"]["containers"]] == [
        {"allowPrivilegeEscalation": False}, {"allowPrivilegeEscalation": True}]  # a value given is kept
    assert applied(originals[1], project["patch"])["spec"] == {"owner": "team-docs", "replicas": 1, "paused": False}
    assert (pod["allowed"], pod["status"]) == (True, None)
    assert deployment["patch"] == []
    assert deployment["status"]["code"] == 403 and deployment["status"]["reason"] == "Forbidden"
    assert deployment["status"]["message"].startswith('spec.template.spec.containers[0] "tools": image ')
    assert (pod["resource"], project["resource"], project["apiVersion"]) == (
        "pods", "projects", "example.sealyun.com/v1alpha1")


def test_yaml_prints_every_object_as_it_would_be_stored() -> None:
    result = check("--policy", MUTATING_POLICY, "-o", "yaml", "tests/fixtures/check/mirrored.yaml")
    assert result.returncode == 1, result.stderr
    documents = list(yaml.safe_load_all(result.stdout))
    report = json.loads(check("--policy", MUTATING_POLICY, "-o", "json", "tests/fixtures/check/mirrored.yaml").stdout)
    originals = source("mirrored.yaml")
    assert documents == [applied(o, r["patch"]) for o, r in zip(originals, report["results"], strict=True)]
    assert documents[2] == originals[2]  # denied, and shown unchanged
    assert "# tests/fixtures/check/mirrored.yaml:25: Deployment shop/tools: denied\n" in result.stdout
    assert "# tests/fixtures/check/mirrored.yaml:3: Pod shop/web: allowed\n# defaulted spec.containers" in result.stdout


def test_yaml_keeps_unquoted_timestamps_as_strings_and_adds_no_patch_for_them() -> None:
    result = check("-o", "json", "tests/fixtures/check/workloads.yaml")
    web = json.loads(result.stdout)["results"][0]
    assert (web["name"], web["patch"]) == ("web", [])
    out = check("-o", "yaml", "tests/fixtures/check/workloads.yaml").stdout
    assert "creationTimestamp: '2024-05-01T10:00:00Z'" in out


# --- unreadable input, exit 2 --------------------------------------------------------------------

def test_bad_yaml_names_the_file_and_document_and_still_judges_the_rest() -> None:
    result = check("tests/fixtures/check/broken.yaml", "tests/fixtures/check/workloads.yaml")
    assert result.returncode == 2
    assert result.stderr == ("webhook: error: tests/fixtures/check/broken.yaml: document 2: not valid YAML: while "
                             "parsing a block mapping: expected <block end>, but found '<block mapping start>' "
                             "(line 15, column 2)\n")
    judged = [line.split() for line in result.stdout.splitlines()[1:3]]
    assert judged[0] == ["tests/fixtures/check/broken.yaml:1", "Pod", "default/fine", "allowed"]  # document 1
    assert result.stdout.endswith("5 objects: 4 allowed, 0 warned, 1 denied; 1 unreadable\n")


def test_a_document_without_kind_is_unreadable() -> None:
    result = check("-o", "json", "tests/fixtures/check/no-kind.yaml")
    assert result.returncode == 2
    message = "tests/fixtures/check/no-kind.yaml: document 2 (line 8): has no kind"
    assert result.stderr == f"webhook: error: {message}\n"
    report = json.loads(result.stdout)
    assert report["errors"] == [{"source": "tests/fixtures/check/no-kind.yaml", "document": 2, "line": 8,
                                 "item": None, "message": message}]
    assert [r["name"] for r in report["results"]] == ["docs"]


def test_a_duplicate_key_is_unreadable_rather_than_silently_the_last() -> None:
    result = check("tests/fixtures/check/duplicate-key.yaml")
    assert result.returncode == 2
    assert result.stderr == ("webhook: error: tests/fixtures/check/duplicate-key.yaml: document 1: not valid YAML: "
                             "duplicate key 'image' (line 9, column 7)\n")


@pytest.mark.parametrize(("text", "problem"), [
    ("- a\n- b\n", "document 1 (line 1): is a list, not a Kubernetes object"),
    ("kind: Pod\nmetadata: {name: x}\n", "document 1 (line 1): Pod has no apiVersion"),
    ("apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod}\n- {apiVersion: v1}\n",
     "document 1, items[1] (line 5): has no kind"),
    ("apiVersion: v1\nkind: Pod\nspec: {replicas: .nan}\n", "document 1 (line 1): spec.replicas is nan, which JSON "
     "cannot hold"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {labels: {1: a}}\n", "document 1 (line 1): metadata.labels has a key 1 "
     "that is not a string"),
])
def test_unjudgeable_documents_from_stdin(text: str, problem: str) -> None:
    result = check("-", stdin=text)
    assert (result.returncode, result.stderr) == (2, f"webhook: error: <stdin>: {problem}\n")


def test_self_referencing_aliases_are_refused_without_hanging() -> None:
    result = check("-", stdin="apiVersion: v1\nkind: Pod\nspec: &s {containers: [*s]}\n")
    assert result.returncode == 2
    assert "refer to themselves" in result.stderr


def test_stdin_takes_json_and_yaml(tmp_path: Path) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "x"},
           "spec": {"containers": [{"name": "c", "image": "evil.io/x"}]}}
    as_json = check("-o", "json", "-", stdin=json.dumps(pod))
    as_yaml = check("-o", "json", "-", stdin=yaml.safe_dump(pod))
    assert as_json.returncode == as_yaml.returncode == 1
    first, second = json.loads(as_json.stdout)["results"][0], json.loads(as_yaml.stdout)["results"][0]
    assert first["source"] == second["source"] == "<stdin>"
    assert first["status"] == second["status"]


def test_missing_paths_and_empty_inputs_exit_2(tmp_path: Path) -> None:
    missing = check(str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2
    assert missing.stderr == f"webhook: error: {tmp_path / 'nope.yaml'}: cannot be read: No such file or directory\n"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("apiVersion: v1\nkind: Pod\n")  # not a manifest suffix
    (tmp_path / "empty" / "blank.yaml").write_text("# nothing\n---\n")
    empty = check(str(tmp_path / "empty"))
    assert empty.returncode == 2
    assert empty.stderr == "webhook: error: no Kubernetes objects found in the inputs\n"


def test_unreadable_wins_over_denied_and_a_bad_policy_exits_2(tmp_path: Path) -> None:
    both = check("tests/fixtures/check/workloads.yaml", "tests/fixtures/check/no-kind.yaml")
    assert both.returncode == 2
    policy = write_policy(tmp_path, "images:\n  allow: ['acme-*']\n")
    bad = check("--policy", str(policy), "manifests/examples")
    assert bad.returncode == 2
    assert bad.stderr.startswith(f"webhook: error: policy file {policy}: images.allow[0]: ")


# --- policy, namespaces, directories -------------------------------------------------------------

def test_warn_mode_allows_with_the_warning_and_exits_0(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, "images:\n  mode: warn\n  allow: [registry.k8s.io]\n")
    result = check("--policy", str(policy), "-o", "json", "tests/fixtures/check/workloads.yaml")
    assert result.returncode == 0, result.stderr
    decisions = {r["name"] or "generated": (r["decision"], r["warnings"]) for r in json.loads(result.stdout)["results"]}
    assert decisions["nightly"] == ("allowed", [])
    decision, warnings = decisions["web"]
    assert decision == "warned"
    assert warnings == ['policy would deny (warn mode): spec.template.spec.containers[0] "web": image "nginx:1.27" '
                        "(docker.io/library/nginx:1.27) is not from an allowed registry"]


def test_namespace_flag_fills_in_objects_without_one_and_exemptions_follow_it() -> None:
    default = json.loads(check("-o", "json", "tests/fixtures/check/workloads.yaml").stdout)["results"]
    assert [r["namespace"] for r in default] == ["shop", "shop", "default", "kube-system"]
    pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: evil.io/x}]}\n"
    assert check("-", stdin=pod).returncode == 1
    assert check("-n", "kube-system", "-", stdin=pod).returncode == 0  # exempt namespace


def test_kinds_in_legacy_groups_and_versions_are_judged_as_the_server_judges_them() -> None:
    legacy = ("apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata: {name: old, namespace: shop}\n"
              "spec: {template: {spec: {containers: [{name: c, image: evil.io/x:1}]}}}\n---\n"
              "apiVersion: batch/v1beta1\nkind: CronJob\nmetadata: {name: cron, namespace: shop}\n"
              "spec: {jobTemplate: {spec: {template: {spec: {containers: [{name: c, image: nginx}]}}}}}\n")
    result = check("-o", "json", "-", stdin=legacy)
    assert result.returncode == 1, result.stderr
    old, cron = json.loads(result.stdout)["results"]
    assert (old["apiVersion"], old["decision"], cron["decision"]) == ("extensions/v1beta1", "denied", "allowed")
    assert old["status"]["message"].startswith('spec.template.spec.containers[0] "c": image "evil.io/x:1" ')


IMAGE_ID = "sha256:" + "5e" * 32
BYPASSES = """\
apiVersion: v1
kind: Pod
metadata: {name: pod}
spec:
  containers: [{name: c, image: registry.k8s.io/pause}]
  volumes: [{name: cache, emptyDir: {}}, {name: tools, image: {reference: evil.io/x}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: fine}
spec:
  template:
    spec: {containers: [{name: c, image: nginx}], volumes: [{name: t, image: {reference: nginx}}]}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: cron}
spec:
  jobTemplate:
    spec:
      template:
        spec: {containers: [{name: c, image: nginx}], volumes: [{name: id, image: {reference: 'IMAGE_ID'}}]}
---
apiVersion: extensions/v1beta1
kind: DaemonSet
metadata: {name: legacy}
spec:
  template:
    spec: {containers: [{name: c, image: nginx}], volumes: [{name: t, image: {reference: evil.io/y}}]}
""".replace("IMAGE_ID", IMAGE_ID)


def test_image_volumes_image_ids_and_legacy_groups_are_judged() -> None:
    result = check("-o", "json", "-", stdin=BYPASSES)
    assert result.returncode == 1, result.stderr
    pod, fine, cron, legacy = json.loads(result.stdout)["results"]
    assert [r["decision"] for r in (pod, fine, cron, legacy)] == ["denied", "allowed", "denied", "denied"]
    assert pod["status"]["message"].startswith(
        'spec.volumes[1].image.reference volume "tools": image "evil.io/x" (evil.io/x) is not from an allowed ')
    assert cron["status"]["message"] == (
        f'spec.jobTemplate.spec.template.spec.volumes[0].image.reference volume "id": image "{IMAGE_ID}" is an image '
        "ID, not an image reference: the runtime would run whatever image on the node has this ID; name the image as "
        "repository@sha256:...")
    assert legacy["status"]["message"].startswith('spec.template.spec.volumes[0].image.reference volume "t": ')
    assert check("-n", "kube-system", "-", stdin=BYPASSES).returncode == 0  # exempt


def test_image_volumes_warn_in_warn_mode_and_are_rewritten_by_mutation(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, "images:\n  mode: warn\n  allow: [registry.k8s.io, docker.io/*]\n")
    warned = json.loads(check("--policy", str(policy), "-o", "json", "-", stdin=BYPASSES).stdout)["results"]
    assert [r["decision"] for r in warned] == ["warned", "allowed", "warned", "warned"]
    assert warned[0]["warnings"] == ['policy would deny (warn mode): spec.volumes[1].image.reference volume "tools": '
                                     'image "evil.io/x" (evil.io/x) is not from an allowed registry']

    mirrored = check("--policy", MUTATING_POLICY, "-o", "json", "-", stdin=BYPASSES)
    fine = json.loads(mirrored.stdout)["results"][1]
    assert fine["decision"] == "allowed"
    assert fine["patch"] == [
        {"op": "replace", "path": "/spec/template/spec/containers/0/image",
         "value": "mirror.acme.io/dockerhub/library/nginx"},
        {"op": "replace", "path": "/spec/template/spec/volumes/0/image/reference",
         "value": "mirror.acme.io/dockerhub/library/nginx"}]


def test_cluster_scoped_kinds_and_crds_among_the_inputs_decide_the_namespace(tmp_path: Path) -> None:
    (tmp_path / "a-crd.yaml").write_text(yaml.safe_dump({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.acme.io"},
        "spec": {"group": "acme.io", "scope": "Cluster", "names": {"kind": "Gadget", "plural": "gadgetry"},
                 "versions": [{"name": "v1", "served": True, "storage": True}]}}))
    (tmp_path / "b-objects.yaml").write_text(
        "apiVersion: acme.io/v1\nkind: Gadget\nmetadata: {name: g, namespace: ignored}\n---\n"
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n---\n"
        "apiVersion: acme.io/v1\nkind: Widget\nmetadata: {name: w}\n---\n"
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: n}\n")
    results = json.loads(check("-o", "json", str(tmp_path)).stdout)["results"]
    assert [(r["kind"], r["resource"], r["namespace"]) for r in results] == [
        ("CustomResourceDefinition", "customresourcedefinitions", None), ("Gadget", "gadgetry", None),
        ("Namespace", "namespaces", "team"), ("Widget", "widgets", "default"),
        ("NetworkPolicy", "networkpolicies", "default")]


def test_check_and_audit_never_load_the_http_layer() -> None:
    """The layering rule: tooling calls admission/, never server/ (and so never FastAPI)."""
    probe = ("import sys, webhook.check, webhook.kube.audit, webhook.cli; "
             "print(sorted(m for m in sys.modules if m.startswith(('webhook.server', 'fastapi', 'uvicorn'))))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=REPO,
                            check=True)
    assert result.stdout == "[]\n"

"""`webhook check` with scopes and exceptions: the scope and exceptions in its output, ``--at``,
namespace labels from the Namespace objects among its inputs, and its notes on stderr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.apiserver import UNREACHABLE, ApiServer, Rule, write_kubeconfig
from tests.test_check import check

POLICY = """\
images:
  allow: [registry.k8s.io, docker.io/library/*]
scopes:
  - name: production
    match: {namespaceSelector: {matchLabels: {env: prod}}}
    images: {inheritAllow: false, allow: [registry.acme.io/*]}
  - name: team-a
    match: {namespaces: ["team-a-*"]}
    images: {allow: [ghcr.io/team-a/*]}
exceptions:
  - name: legacy-redis
    reason: "OPS-1234: move redis to the internal mirror"
    expires: "2027-01-31T00:00:00Z"
    match: {namespaces: [team-a-web]}
    images: [docker.io/bitnami/redis]
"""
MANIFESTS = """\
apiVersion: v1
kind: Pod
metadata: {name: cache, namespace: team-a-web}
spec: {containers: [{name: redis, image: "bitnami/redis:7"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: shop, namespace: payments}
spec: {containers: [{name: web, image: "nginx:1.27"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: plain, namespace: default}
spec: {containers: [{name: web, image: "nginx:1.27"}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: payments, labels: {env: prod}}
"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[str, str]:
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "all.yaml").write_text(MANIFESTS)
    return str(tmp_path / "policy.yaml"), str(tmp_path / "all.yaml")


def test_json_names_the_scope_and_the_exceptions(files: tuple[str, str]) -> None:
    policy, manifests = files
    result = check("--policy", policy, "-o", "json", "--at", "2026-06-01T00:00:00Z", manifests, manifests)
    assert result.returncode == 1, result.stderr
    cache, shop, plain, namespace, *again = json.loads(result.stdout)["results"]
    assert len(again) == 4  # the same inputs twice: the notes are still said once
    assert (cache["decision"], cache["scope"], cache["exceptions"]) == ("allowed", "team-a", ["legacy-redis"])
    assert cache["warnings"] == ['spec.containers[0] "redis": image "bitnami/redis:7" admitted by exception '
                                 '"legacy-redis" (OPS-1234: move redis to the internal mirror) until '
                                 "2027-01-31T00:00:00Z"]
    # The Namespace object comes after the Pod in it, and its labels still select the scope.
    assert (shop["decision"], shop["scope"]) == ("denied", "production")
    assert shop["status"]["message"].startswith('in scope "production": ')
    assert (plain["decision"], plain["scope"], plain["exceptions"]) == ("allowed", None, [])
    assert namespace["scope"] is None
    # team-a-web and default have no Namespace object among the inputs: said once each on stderr
    note = ("webhook: note: namespace {!r} has no known labels (no Namespace object among the inputs); "
            "namespaceSelector judges it as having none\n")
    assert result.stderr == note.format("team-a-web") + note.format("default")


def test_the_table_has_a_scope_column(files: tuple[str, str]) -> None:
    policy, manifests = files
    result = check("--policy", policy, "--at", "2027-01-20T12:00:00+01:00", manifests)
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["SOURCE", "KIND", "NAMESPACE/NAME", "DECISION", "SCOPE", "CHANGES", "MESSAGES"]
    assert lines[1].split()[3:6] == ["allowed", "team-a", "(exceptions:"]
    assert lines[1].endswith("until 2027-01-31T00:00:00Z; expires in 11 days")
    assert lines[2].split()[3:5] == ["denied", "production"]
    assert lines[3].split()[3:5] == ["allowed", "baseline"]


def test_at_judges_as_of_that_moment_and_warns_of_expired_exceptions(files: tuple[str, str]) -> None:
    policy, manifests = files
    result = check("--policy", policy, "-o", "json", "--at", "2027-01-31T00:00:00Z", manifests)
    assert result.stderr.startswith(f'webhook: warning: policy file {policy}: exception "legacy-redis" expired '
                                    "2027-01-31T00:00:00Z and admits nothing now\n")
    cache = json.loads(result.stdout)["results"][0]
    assert (cache["decision"], cache["exceptions"]) == ("denied", [])
    assert cache["status"]["message"].endswith(
        'is not from an allowed registry (exception "legacy-redis" expired 2027-01-31T00:00:00Z); '
        "allowed: ghcr.io/team-a/*, registry.k8s.io, docker.io/library/*")
    before = check("--policy", policy, "-o", "json", "--at", "2027-01-30T23:59:59Z", manifests)
    assert "expired" not in before.stderr


def test_without_at_the_clock_decides(files: tuple[str, str]) -> None:
    policy, manifests = files
    result = check("--policy", policy, "-o", "json", manifests)
    cache = json.loads(result.stdout)["results"][0]
    assert cache["decision"] in ("allowed", "denied")  # today's date decides; the key is present either way
    assert "exceptions" in cache


@pytest.mark.parametrize("bad", ["2027-01-31T00:00:00", "tomorrow"])
def test_a_bad_at_is_a_usage_error(files: tuple[str, str], bad: str) -> None:
    policy, manifests = files
    result = check("--policy", policy, "--at", bad, manifests)
    assert result.returncode == 2
    assert "argument --at" in result.stderr


def test_a_policy_without_scopes_keeps_todays_table(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("images: {allow: [docker.io/library/*]}\n")
    (tmp_path / "m.yaml").write_text(MANIFESTS)
    result = check("--policy", str(tmp_path / "p.yaml"), "--at", "2030-01-01T00:00:00Z", str(tmp_path / "m.yaml"))
    assert "SCOPE" not in result.stdout and result.stderr == ""


def test_yaml_heads_name_the_scope_and_exceptions(files: tuple[str, str]) -> None:
    policy, manifests = files
    result = check("--policy", policy, "-o", "yaml", "--at", "2026-06-01T00:00:00Z", manifests)
    heads = [line for line in result.stdout.splitlines() if line.startswith(f"# {manifests}")]
    assert [head.split(": ", 2)[2] for head in heads] == [
        'allowed in scope "team-a" by exceptions legacy-redis', 'denied in scope "production"', "allowed",
        "allowed"]


def test_kubeconfig_gives_the_clusters_labels_and_the_inputs_win(
    files: tuple[str, str], apiserver: ApiServer, tmp_path: Path
) -> None:
    policy, manifests = files
    apiserver.add_user("ci", "ci-token", Rule(("list",), ("namespaces",), ("",)))
    apiserver.store.put("namespaces", {"metadata": {"name": "default", "labels": {"env": "prod"}}})
    apiserver.store.put("namespaces", {"metadata": {"name": "payments", "labels": {"env": "dev"}}})
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", apiserver.url, {"token": "ci-token"},
                                  ca_file=apiserver.ca_file)
    result = check("--policy", policy, "-o", "json", "--at", "2026-06-01T00:00:00Z", "--kubeconfig",
                   str(kubeconfig), manifests)
    _, shop, plain, _ = json.loads(result.stdout)["results"]
    assert (plain["decision"], plain["scope"]) == ("denied", "production")  # default is env=prod in the cluster
    assert shop["scope"] == "production"  # the input says env=prod; the cluster's env=dev is what runs now
    assert result.stderr == ("webhook: note: namespace 'team-a-web' has no known labels (no Namespace object among "
                             "the inputs or in the cluster); namespaceSelector judges it as having none\n")


def test_kubeconfig_that_cannot_be_read_is_exit_3(files: tuple[str, str], tmp_path: Path) -> None:
    policy, manifests = files
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", UNREACHABLE, {"token": "t"}, ca_file=None)
    result = check("--policy", policy, "--kubeconfig", str(kubeconfig), manifests)
    assert result.returncode == 3
    assert result.stdout == ""
    assert result.stderr.startswith(f"webhook: error: namespace labels from {kubeconfig}: cannot reach the "
                                    "Kubernetes API at https://127.0.0.1:1")
    assert result.stderr.count("\n") == 1

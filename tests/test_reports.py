"""`webhook audit --report` against the stand-in API server: PolicyReports created, updated with
``resourceVersion`` (a concurrent writer met with 409), left alone when unchanged, pruned, and
split before etcd's size limit; the product finds the stand-in only through a kubeconfig."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.apiserver import WEBHOOK_RULES, ApiServer, Reply, Request, status, without
from tests.conftest import write_policy
from tests.docs import UIDS, Sandbox, doc_block, match, run_block
from tests.reviews import pod_spec, workload
from tests.test_audit import audit, auditor, denial, docs_sandbox, env_for, pod
from webhook.kube import policyreport as pr

__all__ = ["auditor", "docs_sandbox"]  # the fixtures, shared with test_audit

REPORTS = "policyreports.wgpolicyk8s.io"
COLLECTION = "/apis/wgpolicyk8s.io/v1alpha2/namespaces/{}/policyreports"
OURS = {"app.kubernetes.io/managed-by": "admission-webhook"}


def reports(apiserver: ApiServer) -> dict[str, dict[str, Any]]:
    """Every stored PolicyReport, by ``namespace/name``."""
    return {f"{r['metadata']['namespace']}/{r['metadata']['name']}": r for r in apiserver.store.items(REPORTS)}


def results(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A report's results by the name of the object each is about."""
    return {r["resources"][0]["name"]: r for r in report["results"]}


def seconds(text: str) -> str:
    """A result's timestamp, which is the run's own."""
    return re.sub(r'"seconds": \d+', '"seconds": <n>', text)


def writes(apiserver: ApiServer) -> list[tuple[str, str, int]]:
    return [(s.method, s.path, s.status) for s in apiserver.writes()]


# --- created ---------------------------------------------------------------------------------------

def test_one_report_per_namespace_with_a_result_for_every_object(apiserver: ApiServer, auditor: dict[str, str]) -> None:
    bad = apiserver.store.put("pods", pod("bad", "evil.io/x:1"))
    apiserver.store.put("pods", pod("good", "nginx:1.27"))
    apiserver.store.put("deployments.apps", workload("Deployment", pod_spec("evil.io/x:1"), name="web",
                                                     namespace="shop"))
    apiserver.store.put("pods", pod("proxy", "evil.io/x:1", namespace="kube-system"))  # exempt

    result = audit("--report", env=auditor)
    assert result.returncode == 0, result.stderr  # violations are the reports' content, not a failure
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[-5:] == [
        "audited 4 objects of 9 kinds in all namespaces: 2 denied, 0 warned",
        "policyreports.wgpolicyk8s.io/admission-webhook-kube-system -n kube-system created "
        "(0 pass, 0 fail, 0 warn, 0 error, 1 skip)",
        "policyreports.wgpolicyk8s.io/admission-webhook-shop -n shop created (0 pass, 1 fail, 0 warn, 0 error, 0 skip)",
        "policyreports.wgpolicyk8s.io/admission-webhook-team -n team created (1 pass, 1 fail, 0 warn, 0 error, 0 skip)",
        "policy reports for 3 namespaces: 3 created, 0 updated, 0 unchanged, 0 deleted",
    ]
    stored = reports(apiserver)
    assert set(stored) == {"kube-system/admission-webhook-kube-system", "shop/admission-webhook-shop",
                           "team/admission-webhook-team"}
    team = stored["team/admission-webhook-team"]
    assert team["apiVersion"] == "wgpolicyk8s.io/v1alpha2" and team["kind"] == "PolicyReport"
    assert team["metadata"]["labels"] == OURS
    assert team["summary"] == {"pass": 1, "fail": 1, "warn": 0, "error": 0, "skip": 0}
    failed = results(team)["bad"]
    timestamp = failed.pop("timestamp")
    assert set(timestamp) == {"seconds", "nanos"} and timestamp["seconds"] > 1_700_000_000
    assert failed == {
        "source": "admission-webhook", "policy": "admission-webhook", "rule": "baseline",
        "category": "Supply Chain Security", "severity": "high", "result": "fail",
        "resources": [{"apiVersion": "v1", "kind": "Pod", "namespace": "team", "name": "bad",
                       "uid": bad["metadata"]["uid"]}],
        "message": denial("spec.containers[0]"), "properties": {"decision": "denied"}}
    passed = results(team)["good"]
    assert (passed["result"], passed["message"], passed["properties"]) == (
        "pass", "allowed by the validating webhook", {"decision": "allowed"})
    assert "severity" not in passed
    shop = results(stored["shop/admission-webhook-shop"])["web"]
    assert shop["resources"][0] | {"uid": ""} == {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "shop",
                                                   "name": "web", "uid": ""}
    skipped = results(stored["kube-system/admission-webhook-kube-system"])["proxy"]
    assert (skipped["result"], skipped["rule"], skipped["message"]) == (
        "skip", "exemptNamespaces", "namespace kube-system is exempt from the policy (exemptNamespaces)")


SCOPED = """\
images:
  allow: [docker.io/library/*]
scopes:
  - name: team
    match: {namespaces: [team]}
    images: {allow: [ghcr.io/team/*]}
  - name: trial
    match: {namespaces: [trial]}
    images: {mode: warn}
exceptions:
  - name: legacy-redis
    reason: "OPS-1234"
    expires: "2099-01-31T00:00:00Z"
    match: {namespaces: [team], objectSelector: {matchLabels: {app: cache}}}
    images: [docker.io/bitnami/redis]
"""


def test_results_name_the_scope_and_the_exception_with_its_expiry(
    apiserver: ApiServer, auditor: dict[str, str], tmp_path: Path
) -> None:
    policy = str(write_policy(tmp_path, SCOPED))
    apiserver.store.put("pods", pod("cache", "bitnami/redis:7", app="cache"))
    apiserver.store.put("pods", pod("app", "ghcr.io/team/app:1"))
    apiserver.store.put("pods", pod("bad", "evil.io/x:1"))
    apiserver.store.put("pods", pod("try", "evil.io/x:1", namespace="trial"))
    apiserver.store.put("pods", pod("plain", "nginx:1.27", namespace="other"))

    result = audit("--report", "--policy", policy, "-o", "json", env=auditor)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1] == ("webhook: policy reports for 3 namespaces: 3 created, 0 updated, "
                                              "0 unchanged, 0 deleted")
    stored = reports(apiserver)
    team = results(stored["team/admission-webhook-team"])
    cache = team["cache"]
    assert (cache["rule"], cache["result"], cache["severity"]) == ("team", "warn", "medium")
    assert cache["properties"] == {"decision": "excepted", "exception": "legacy-redis",
                                   "exceptionExpires": "2099-01-31T00:00:00Z"}
    assert cache["message"] == ('spec.containers[0] "c0": image "bitnami/redis:7" admitted by exception '
                                '"legacy-redis" (OPS-1234) until 2099-01-31T00:00:00Z')
    assert (team["app"]["rule"], team["app"]["result"]) == ("team", "pass")
    assert (team["bad"]["rule"], team["bad"]["result"]) == ("team", "fail")
    assert team["bad"]["message"].startswith('in scope "team": ')
    trial = results(stored["trial/admission-webhook-trial"])["try"]
    assert (trial["rule"], trial["result"], trial["properties"]) == ("trial", "warn", {"decision": "warned"})
    assert trial["message"].startswith('policy would deny (warn mode) in scope "trial": ')
    plain = results(stored["other/admission-webhook-other"])["plain"]
    assert (plain["rule"], plain["result"]) == ("baseline", "pass")


# --- updated ---------------------------------------------------------------------------------------

def test_a_second_run_writes_nothing_and_a_change_updates_with_the_resource_version(
    apiserver: ApiServer, auditor: dict[str, str]
) -> None:
    apiserver.store.put("pods", pod("bad", "evil.io/x:1"))
    apiserver.store.put("pods", pod("good", "nginx:1.27"))
    assert audit("--report", env=auditor).returncode == 0
    first = reports(apiserver)["team/admission-webhook-team"]

    apiserver.requests.clear()
    again = audit("--report", env=auditor)
    assert again.stdout.splitlines()[-2:] == [
        "policyreports.wgpolicyk8s.io/admission-webhook-team -n team unchanged "
        "(1 pass, 1 fail, 0 warn, 0 error, 0 skip)",
        "policy reports for 1 namespace: 0 created, 0 updated, 1 unchanged, 0 deleted"]
    assert writes(apiserver) == []
    assert reports(apiserver)["team/admission-webhook-team"] == first

    apiserver.store.put("pods", pod("bad", "nginx:1.27"))  # fixed
    apiserver.requests.clear()
    fixed = audit("--report", env=auditor)
    assert "admission-webhook-team -n team updated (2 pass, 0 fail" in fixed.stdout
    assert writes(apiserver) == [("PUT", COLLECTION.format("team") + "/admission-webhook-team", 200)]
    now = reports(apiserver)["team/admission-webhook-team"]
    assert int(now["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    assert now["metadata"]["uid"] == first["metadata"]["uid"]  # updated in place, never recreated
    assert results(now)["bad"]["result"] == "pass"
    # An unchanged result keeps the time it was found; the changed one has this run's.
    assert results(now)["good"]["timestamp"] == results(first)["good"]["timestamp"]


def test_a_concurrent_writer_gets_a_conflict_and_the_report_is_read_again(
    apiserver: ApiServer, auditor: dict[str, str]
) -> None:
    apiserver.store.put("pods", pod("bad", "evil.io/x:1"))
    assert audit("--report", env=auditor).returncode == 0
    apiserver.store.put("pods", pod("bad", "nginx:1.27"))
    path = COLLECTION.format("team") + "/admission-webhook-team"
    raced: list[str] = []

    def meanwhile(request: Request) -> Reply | None:
        """Someone else writes the report between our read and our update, once."""
        if request.method == "PUT" and request.path == path and not raced:
            current = apiserver.store.get(REPORTS, "admission-webhook-team", "team")
            assert current is not None
            current["metadata"]["annotations"] = {"someone": "else"}
            raced.append(apiserver.store.put(REPORTS, current)["metadata"]["resourceVersion"])
        return None  # the stand-in now answers our stale resourceVersion with 409

    apiserver.interceptors.append(meanwhile)
    apiserver.requests.clear()
    result = audit("--report", env=auditor)
    assert result.returncode == 0, result.stderr
    assert "admission-webhook-team -n team updated" in result.stdout
    calls = [(s.method, s.path, s.status) for s in apiserver.seen() if s.path == path]
    assert calls == [("PUT", path, 409), ("GET", path, 200), ("PUT", path, 200)]
    stored = reports(apiserver)["team/admission-webhook-team"]
    assert int(stored["metadata"]["resourceVersion"]) > int(raced[0])
    assert stored["summary"]["pass"] == 1


def test_a_report_created_meanwhile_is_updated_and_one_not_ours_is_left_alone(
    apiserver: ApiServer, auditor: dict[str, str]
) -> None:
    apiserver.store.put("pods", pod("bad", "evil.io/x:1"))
    collection = COLLECTION.format("team")

    def creator(labels: dict[str, str]) -> Any:
        def meanwhile(request: Request) -> Reply | None:
            if request.method == "POST" and request.path == collection and not reports(apiserver):
                apiserver.store.put(REPORTS, {"apiVersion": pr.API_VERSION, "kind": "PolicyReport", "metadata": {
                    "name": "admission-webhook-team", "namespace": "team", "labels": labels}})
            return None  # our create now meets 409 AlreadyExists
        return meanwhile

    apiserver.interceptors.append(creator(OURS))
    result = audit("--report", env=auditor)
    assert result.returncode == 0, result.stderr
    assert "admission-webhook-team -n team updated" in result.stdout
    assert reports(apiserver)["team/admission-webhook-team"]["summary"]["fail"] == 1

    apiserver.store.delete(REPORTS, "team", "admission-webhook-team")
    apiserver.interceptors[:] = [creator({"app.kubernetes.io/managed-by": "kyverno"})]
    refused = audit("--report", env=auditor)
    assert refused.returncode == 3
    assert refused.stderr == (
        "webhook: error: policyreports.wgpolicyk8s.io admission-webhook-team in namespace team exists but is not "
        "labelled app.kubernetes.io/managed-by=admission-webhook: not overwritten; delete or rename it\n")
    assert "results" not in reports(apiserver)["team/admission-webhook-team"]


def test_a_writer_that_never_stops_is_given_up_on_after_what_was_written_is_shown(
    apiserver: ApiServer, auditor: dict[str, str]
) -> None:
    apiserver.store.put("pods", pod("bad", "evil.io/x:1"))
    apiserver.store.put("pods", pod("bad", "evil.io/x:1", namespace="alpha"))
    assert audit("--report", env=auditor).returncode == 0
    apiserver.store.put("pods", pod("bad", "nginx:1.27"))
    apiserver.store.put("pods", pod("bad", "nginx:1.27", namespace="alpha"))
    conflict = status(409, "Conflict", "the object has been modified")
    team = COLLECTION.format("team")
    apiserver.interceptors.append(lambda r: conflict if r.method == "PUT" and r.path.startswith(team) else None)
    result = audit("--report", env=auditor)
    assert result.returncode == 3
    assert result.stdout.splitlines()[-1] == ("policyreports.wgpolicyk8s.io/admission-webhook-alpha -n alpha updated "
                                              "(1 pass, 0 fail, 0 warn, 0 error, 0 skip)")
    assert result.stderr == ("webhook: error: policyreports.wgpolicyk8s.io admission-webhook-team in namespace team "
                             "kept changing under us: 5 writes met 409 Conflict\n")


# --- pruned ----------------------------------------------------------------------------------------

def test_deleted_objects_leave_their_report_and_an_emptied_namespace_loses_it(
    apiserver: ApiServer, auditor: dict[str, str]
) -> None:
    apiserver.store.put("pods", pod("a", "evil.io/x:1"))
    apiserver.store.put("pods", pod("b", "nginx:1.27"))
    apiserver.store.put("pods", pod("gone", "evil.io/x:1", namespace="old"))
    theirs = apiserver.store.put(REPORTS, {"apiVersion": pr.API_VERSION, "kind": "PolicyReport", "metadata": {
        "name": "kyverno-old", "namespace": "old", "labels": {"app.kubernetes.io/managed-by": "kyverno"}}})
    assert audit("--report", env=auditor).returncode == 0
    assert set(reports(apiserver)) == {"team/admission-webhook-team", "old/admission-webhook-old", "old/kyverno-old"}

    apiserver.store.delete("pods", "team", "a")
    apiserver.store.delete("pods", "old", "gone")
    apiserver.requests.clear()
    result = audit("--report", env=auditor)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-3:] == [
        "policyreports.wgpolicyk8s.io/admission-webhook-old -n old deleted",
        "policyreports.wgpolicyk8s.io/admission-webhook-team -n team updated (1 pass, 0 fail, 0 warn, 0 error, 0 skip)",
        "policy reports for 1 namespace: 0 created, 1 updated, 0 unchanged, 1 deleted"]
    assert set(results(reports(apiserver)["team/admission-webhook-team"])) == {"b"}
    assert reports(apiserver)["old/kyverno-old"] == theirs  # only ours are ever pruned
    assert ("DELETE", COLLECTION.format("old") + "/admission-webhook-old", 200) in writes(apiserver)


def test_one_namespace_audited_touches_only_its_own_reports(apiserver: ApiServer, auditor: dict[str, str]) -> None:
    apiserver.store.put("pods", pod("a", "evil.io/x:1"))
    apiserver.store.put("pods", pod("b", "evil.io/x:1", namespace="shop"))
    assert audit("--report", env=auditor).returncode == 0
    apiserver.store.delete("pods", "shop", "b")
    apiserver.requests.clear()
    result = audit("--report", "-n", "team", env=auditor)
    assert result.returncode == 0, result.stderr
    assert set(reports(apiserver)) == {"team/admission-webhook-team", "shop/admission-webhook-shop"}
    assert writes(apiserver) == []
    listed = [s for s in apiserver.seen("GET") if "wgpolicyk8s.io" in s.path]
    assert [(s.path, s.query["labelSelector"]) for s in listed] == [
        (COLLECTION.format("team"), "app.kubernetes.io/managed-by=admission-webhook")]


# --- split -----------------------------------------------------------------------------------------

def test_a_large_namespace_is_split_below_the_size_limit_and_parts_are_pruned(
    apiserver: ApiServer, auditor: dict[str, str]
) -> None:
    for i in range(2400):
        apiserver.store.put("pods", pod(f"p{i:04}", "evil.io/x:1" if i % 2 else "nginx:1.27"))
    result = audit("--report", env=auditor)
    assert result.returncode == 0, result.stderr
    stored = reports(apiserver)
    assert sorted(stored) == ["team/admission-webhook-team", "team/admission-webhook-team-2"]
    sizes = [len(orjson.dumps(report)) for report in stored.values()]
    assert all(size <= pr.MAX_REPORT_BYTES for size in sizes), sizes
    assert sum(len(report["results"]) for report in stored.values()) == 2400
    assert sum(report["summary"]["fail"] for report in stored.values()) == 1200
    names = [r["resources"][0]["name"] for part in sorted(stored) for r in stored[part]["results"]]
    assert names == sorted(names)  # parts follow one order, so the same results land in the same parts

    for i in range(200, 2400):
        apiserver.store.delete("pods", "team", f"p{i:04}")
    again = audit("--report", env=auditor)
    assert "policyreports.wgpolicyk8s.io/admission-webhook-team-2 -n team deleted" in again.stdout
    assert set(reports(apiserver)) == {"team/admission-webhook-team"}


def test_parts_stay_under_a_lower_object_limit_and_take_deterministic_names() -> None:
    found: pr.Found = {}
    made = [pr.Result("v1", "Pod", "team", f"p{i:03}", f"uid-{i}", "baseline", "fail", "x" * 300)
            for i in range(100)]
    parts = pr.build("team", reversed(made), now=1_800_000_000, found=found, max_bytes=16 * 1024)
    assert [p["metadata"]["name"] for p in parts] == ["admission-webhook-team"] + [
        f"admission-webhook-team-{n}" for n in range(2, len(parts) + 1)]
    assert len(parts) > 3
    assert all(len(orjson.dumps(p)) <= 16 * 1024 for p in parts)
    assert [r["resources"][0]["name"] for p in parts for r in p["results"]] == [f"p{i:03}" for i in range(100)]
    assert pr.build("team", [], now=0, found=found) == []


def test_an_object_over_the_stand_ins_limit_is_refused_as_etcd_refuses_it(
    apiserver: ApiServer, auditor: dict[str, str]
) -> None:
    """What the split avoids: below etcd's limit the stand-in accepts a report, above it refuses."""
    for i in range(40):
        apiserver.store.put("pods", pod(f"p{i:02}", "evil.io/x:1"))
    apiserver.store.max_object_bytes = 8 * 1024
    result = audit("--report", "--request-timeout", "1", env=auditor)
    assert result.returncode == 3
    assert "etcdserver: request is too large" in result.stderr
    assert reports(apiserver) == {}


# --- refused ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("flag", "word"), [(["--watch"], "--watch"), (["--at", "2030-01-01T00:00:00Z"], "--at")])
def test_report_goes_with_neither_watch_nor_at(auditor: dict[str, str], flag: list[str], word: str) -> None:
    result = audit("--report", *flag, env=auditor)
    assert result.returncode == 2
    assert result.stderr == f"webhook: error: --report writes what one list finds now, so it does not go with {word}\n"
    assert result.stdout == ""


def test_a_missing_permission_stops_it_before_the_audit(apiserver: ApiServer, tmp_path: Path) -> None:
    env = env_for(apiserver, tmp_path, "ci", *without(WEBHOOK_RULES, "delete", "policyreports"))
    result = audit("--report", env=env)
    assert result.returncode == 3
    assert result.stderr.splitlines()[1:] == ["  - delete policyreports.wgpolicyk8s.io cluster-wide"]
    assert result.stderr.startswith("webhook: error: cannot write policy reports: ")
    assert not [s for s in apiserver.seen("GET")]  # nothing listed


def test_a_cluster_without_the_crd_is_told_which_to_install(apiserver: ApiServer, auditor: dict[str, str]) -> None:
    apiserver.interceptors.append(lambda request: apiserver.not_found() if "wgpolicyk8s.io" in request.path else None)
    result = audit("--report", env=auditor)
    assert result.returncode == 3
    assert result.stderr == ("webhook: error: the API server does not serve policyreports.wgpolicyk8s.io/v1alpha2: "
                             "install the PolicyReport CRDs (manifests/components/policy-reports)\n")
    assert result.stdout == ""  # nothing audited: the reports could not have been written


# --- the docs --------------------------------------------------------------------------------------

def test_the_docs_show_real_report_output(docs_sandbox: tuple[Sandbox, ApiServer]) -> None:
    sandbox, server = docs_sandbox
    run_block(doc_block("docs/cluster.md", "audit-report"), sandbox, normalisers=(UIDS,))
    block = doc_block("docs/cluster.md", "audit-report-result")
    stored = server.store.get(REPORTS, "admission-webhook-shop", "shop")
    assert stored is not None
    shown = results(stored)["legacy"]
    match(block.body, json.dumps(shown, indent=2), (UIDS, seconds), what=block.where)

"""`webhook audit` with scopes and exceptions, against the stand-in API server: what runs only
because of an exception is listed as excepted, with its name and expiry, and ``--at`` judges
as of another moment."""

from __future__ import annotations

import json
from pathlib import Path

from tests.apiserver import WEBHOOK_RULES, ApiServer, without
from tests.conftest import write_policy
from tests.test_audit import audit, auditor, env_for, pod

__all__ = ["auditor"]  # the fixture, shared with test_audit

POLICY = """\
images:
  allow: [docker.io/library/*]
scopes:
  - name: team
    match: {namespaces: [team]}
    images: {allow: [ghcr.io/team/*]}
exceptions:
  - name: legacy-redis
    reason: "OPS-1234"
    expires: "2027-01-31T00:00:00Z"
    match: {namespaces: [team], objectSelector: {matchLabels: {app: cache}}}
    images: [docker.io/bitnami/redis]
"""


def test_audit_lists_the_excepted_with_name_and_expiry(apiserver: ApiServer, auditor: dict[str, str],
                                                      tmp_path: Path) -> None:
    policy = str(write_policy(tmp_path, POLICY))
    apiserver.store.put("pods", pod("cache", "bitnami/redis:7"))
    apiserver.store.put("pods", pod("app", "ghcr.io/team/app:1"))
    apiserver.store.put("pods", pod("bad", "evil.io/x:1"))

    result = audit("--policy", policy, "-o", "json", "--at", "2026-06-01T00:00:00Z", env=auditor)
    assert result.returncode == 1, result.stderr
    records = {r["name"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert set(records) == {"cache", "bad"}
    cache = records["cache"]
    assert (cache["decision"], cache["scope"], cache["status"]) == ("excepted", "team", None)
    assert cache["exceptions"] == [{"name": "legacy-redis", "expires": "2027-01-31T00:00:00Z"}]
    assert cache["warnings"] == ['spec.containers[0] "c0": image "bitnami/redis:7" admitted by exception '
                                 '"legacy-redis" (OPS-1234) until 2027-01-31T00:00:00Z']
    assert records["bad"]["status"]["message"].startswith('in scope "team": ')
    assert result.stderr.endswith("1 denied, 0 warned, 1 excepted\n")

    table = audit("--policy", policy, "--at", "2027-01-30T00:00:00Z", env=auditor)
    row = next(line for line in table.stdout.splitlines() if "team/cache" in line)
    assert row.split()[:3] == ["Pod", "team/cache", "excepted"]
    assert row.endswith("until 2027-01-31T00:00:00Z; expires in 1 day")


def test_audit_at_after_expiry_denies_and_warns(apiserver: ApiServer, auditor: dict[str, str],
                                                tmp_path: Path) -> None:
    policy = str(write_policy(tmp_path, POLICY))
    apiserver.store.put("pods", pod("cache", "bitnami/redis:7"))
    result = audit("--policy", policy, "-o", "json", "--at", "2027-02-01T00:00:00Z", env=auditor)
    assert result.stderr.startswith(f'webhook: warning: policy file {policy}: exception "legacy-redis" expired '
                                    "2027-01-31T00:00:00Z and admits nothing now\n")
    (record,) = map(json.loads, result.stdout.splitlines())
    assert record["decision"] == "denied" and record["exceptions"] == []
    assert '(exception "legacy-redis" expired 2027-01-31T00:00:00Z)' in record["status"]["message"]


def test_audit_reads_namespace_labels_from_the_cluster(apiserver: ApiServer, auditor: dict[str, str],
                                                      tmp_path: Path) -> None:
    policy = str(write_policy(tmp_path, POLICY.replace("match: {namespaces: [team]}",
                                                       "match: {namespaceSelector: {matchLabels: {tier: gold}}}")))
    apiserver.store.put("namespaces", {"metadata": {"name": "team", "labels": {"tier": "gold"}}})
    apiserver.store.put("namespaces", {"metadata": {"name": "other"}})
    apiserver.store.put("pods", pod("app", "ghcr.io/team/app:1"))  # allowed by the scope that labels select
    apiserver.store.put("pods", pod("app", "ghcr.io/team/app:1", namespace="other"))  # the baseline's to judge
    result = audit("--policy", policy, "-o", "json", env=auditor)
    (record,) = map(json.loads, result.stdout.splitlines())
    assert (record["namespace"], record["decision"], record["scope"]) == ("other", "denied", None)
    assert result.stderr == "webhook: audited 2 objects of 9 kinds in all namespaces: 1 denied, 0 warned\n"
    lists = [s.path for s in apiserver.seen("GET")]
    assert lists.index("/api/v1/namespaces") < lists.index("/api/v1/pods")  # labels first, as serve has them


def test_audit_without_namespace_access_names_the_permission(apiserver: ApiServer, tmp_path: Path) -> None:
    rules = without(WEBHOOK_RULES, "list", "namespaces")
    env = env_for(apiserver, tmp_path, "narrow", *rules)
    policy = str(write_policy(tmp_path, POLICY.replace("match: {namespaces: [team]}",
                                                       "match: {namespaceSelector: {matchLabels: {tier: gold}}}")))
    result = audit("--policy", policy, env=env)
    assert result.returncode == 3  # as for any kind audit may not list
    assert result.stderr.endswith("is missing 1 permission(s):\n  - list namespaces cluster-wide\n")

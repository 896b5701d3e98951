"""The real server with scopes and exceptions: its decisions, metrics and /readyz, its refusal
of a namespaceSelector when it talks to no cluster, and the same answers as `webhook check`
and `webhook audit`."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.apiserver import WEBHOOK_RULES, ApiServer, write_kubeconfig
from tests.conftest import REPO, ApiServerClient, ServerProcess
from tests.reviews import pod_review, pod_spec, review, workload
from tests.test_operations import metric
from tests.test_policy_reload import policy_check, write_atomically
from webhook import check
from webhook.admission.review import clean_warnings
from webhook.kube.audit import judge
from webhook.manifests import read
from webhook.policy.model import Policy, parse_policy

POLICY = """\
images:
  allow: [registry.k8s.io, docker.io/library/*]
scopes:
  - name: team-a
    match: {namespaces: ["team-a-*"]}
    images: {allow: [ghcr.io/team-a/*]}
  - name: production
    match: {namespaces: [payments], kinds: [Pod, Deployment]}
    images: {inheritAllow: false, allow: [registry.acme.io/*], requireDigest: true}
  - name: onboarding
    match: {namespaces: [onboard], groups: [newcomers]}
    images: {mode: warn}
exceptions:
  - name: legacy-redis
    reason: "OPS-1234: move redis to the internal mirror"
    expires: "2999-01-31T00:00:00Z"
    match: {namespaces: [payments, shop], objectSelector: {matchLabels: {app: web}}}
    images: [docker.io/bitnami/redis]
  - name: gone
    reason: "OPS-1"
    expires: "2001-01-01T00:00:00Z"
    match: {namespaces: [shop]}
    images: [quay.io/old/*]
"""
EXPIRES = dt.datetime(2999, 1, 31, tzinfo=dt.UTC).timestamp()
SELECTOR_POLICY = POLICY.replace("match: {namespaces: [onboard], groups: [newcomers]}",
                                 "match: {namespaceSelector: {matchLabels: {stage: onboarding}}}")


@pytest.fixture(scope="module")
def scoped_server(start_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    path = tmp_path_factory.mktemp("scoped") / "policy.yaml"
    path.write_text(POLICY)
    with start_server("--policy", str(path)) as server:
        yield server


@pytest.fixture
def client(scoped_server: ServerProcess) -> Iterator[ApiServerClient]:
    c = scoped_server.client()
    yield c
    c.close()


def test_the_server_decides_with_scopes_and_exceptions(scoped_server: ServerProcess, client: ApiServerClient) -> None:
    team = client.review("/validate", pod_review("ghcr.io/team-a/app:1", namespace="team-a-web"))
    assert team["allowed"]
    denied = client.review("/validate", pod_review("ghcr.io/team-b/app:1", namespace="team-a-web"))
    assert denied["status"]["message"].startswith('in scope "team-a": spec.containers[0] "c0"')
    excepted = client.review("/validate", pod_review("bitnami/redis:7", namespace="payments"))
    assert excepted["allowed"]
    assert excepted["warnings"] == ['spec.containers[0] "c0": image "bitnami/redis:7" admitted by exception '
                                    '"legacy-redis" (OPS-1234: move redis to the internal mirror) until '
                                    "2999-01-31T00:00:00Z"]
    expired = client.review("/validate", pod_review("quay.io/old/tool:1", namespace="shop"))
    assert not expired["allowed"]
    assert '(exception "gone" expired 2001-01-01T00:00:00Z)' in expired["status"]["message"]
    onboarding = pod_review("evil.io/x", namespace="onboard")
    onboarding["request"]["userInfo"]["groups"] = ["newcomers"]
    warned = client.review("/validate", onboarding)
    assert warned["allowed"] and warned["warnings"][0].startswith('policy would deny (warn mode) in scope "onboarding"')

    time.sleep(0.2)
    text = httpx.get(f"http://127.0.0.1:{scoped_server.probe_port}/metrics").text
    labels = dict(webhook="validate", operation="CREATE", kind="Pod", mode="enforce")
    assert metric(text, "webhook_admission_requests_total", decision="allowed", scope="team-a", **labels) >= 1
    assert metric(text, "webhook_admission_requests_total", decision="denied", scope="team-a", **labels) >= 1
    assert metric(text, "webhook_admission_requests_total", decision="denied", scope="baseline", **labels) >= 1
    warn = {**labels, "mode": "warn"}  # the mode of the scope that decided
    assert metric(text, "webhook_admission_requests_total", decision="warned", scope="onboarding", **warn) >= 1
    assert metric(text, "webhook_exception_admissions_total", exception="legacy-redis") >= 1
    assert metric(text, "webhook_exception_admissions_total", exception="gone") == 0
    assert metric(text, "webhook_exception_expiry_timestamp_seconds", exception="legacy-redis") == EXPIRES
    assert metric(text, "webhook_exception_expiry_timestamp_seconds", exception="gone") == 978307200.0


def test_readyz_counts_scopes_and_exceptions_and_names_the_expired(client: ApiServerClient) -> None:
    check_ = policy_check(client)
    assert (check_["scopes"], check_["exceptions"], check_["expiredExceptions"]) == (3, 2, ["gone"])


def test_decision_logs_name_the_scope_and_exceptions(scoped_server: ServerProcess, client: ApiServerClient) -> None:
    client.review("/validate", pod_review("bitnami/redis:7", namespace="payments", uid="logged-excepted"))
    time.sleep(0.2)
    (line,) = [line for line in scoped_server.logs().splitlines() if "logged-excepted" in line]
    assert '"scope":"production"' in line and '"exceptions":["legacy-redis"]' in line


def test_serve_logs_expired_exceptions_at_load(scoped_server: ServerProcess) -> None:
    (line,) = [line for line in scoped_server.logs().splitlines() if "admits nothing now" in line]
    assert '"level":"warning"' in line
    assert 'exception \\"gone\\" expired 2001-01-01T00:00:00Z and admits nothing now' in line


def test_serve_refuses_a_namespace_selector_at_start(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(SELECTOR_POLICY)
    result = subprocess.run([sys.executable, "-m", "webhook", "serve", "--policy", str(path), "--cert-dir",
                             str(tmp_path / "certs")], capture_output=True, text=True, timeout=60, cwd=REPO,
                            check=False)
    assert result.returncode == 2
    assert result.stderr == (f"webhook: error: policy file {path}: scopes[2].match.namespaceSelector: "
                             "namespaceSelector needs the cluster's namespace labels, and serve talks to no "
                             "cluster: give --kubeconfig, or run it in a pod\n")
    assert not (tmp_path / "certs").exists()  # refused before anything was made


def test_a_reload_to_a_namespace_selector_without_a_cluster_is_refused(start_server: Any, tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    with start_server("--policy", str(path), "--reload-interval", "0.1") as server:
        client = server.client()
        write_atomically(path, SELECTOR_POLICY)
        deadline = time.monotonic() + 10
        while not policy_check(client)["reloadError"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "scopes[2].match.namespaceSelector: namespaceSelector needs the cluster's namespace labels, and serve " \
            "talks to no cluster" in policy_check(client)["reloadError"]
        warned = pod_review("evil.io/x", namespace="onboard")
        warned["request"]["userInfo"]["groups"] = ["newcomers"]
        assert client.review("/validate", warned)["warnings"]  # the last good policy still decides
        client.close()


# serve, check and audit give the same decision, messages and patch for generated scoped policies
# and objects; serve reads the namespaces' labels from the stand-in API server, check from the
# Namespace objects among its inputs, and audit's judge from the same labels.

LABELS: dict[str, dict[str, str]] = {"team-a-web": {"tier": "gold"}, "team-b": {}, "shop": {"env": "dev"},
                                     "payments": {"env": "prod", "tier": "gold"}, "onboard": {"stage": "onboarding"}}
NAMESPACES = list(LABELS)
SELECTORS = st.sampled_from([
    {"matchLabels": {"env": "prod"}}, {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["gold"]}]},
    {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]},
    {"matchExpressions": [{"key": "stage", "operator": "Exists"}]},
    {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, {}])
IMAGES = ["nginx:1", "ghcr.io/team-a/x:1", "ghcr.io/team-b/x", "registry.acme.io/app@sha256:" + "a" * 64,
          "registry.acme.io/app:1", "bitnami/redis:7", "quay.io/old/t", "evil.io/x", "Bad//Ref"]


@st.composite
def scoped_policies(draw: st.DrawFn) -> str:
    scopes = []
    for i in range(draw(st.integers(0, 3))):
        match: dict[str, Any] = {"namespaces": draw(st.lists(st.sampled_from(["team-*", "payments", "shop", "*"]),
                                                             min_size=1, max_size=2))}
        if draw(st.booleans()):
            match["namespaceSelector"] = draw(SELECTORS)
            if draw(st.booleans()):
                del match["namespaces"]
        if draw(st.booleans()):
            match["kinds"] = draw(st.lists(st.sampled_from(["Pod", "Deployment", "CronJob"]), min_size=1, max_size=2))
        if draw(st.booleans()):
            match["objectSelector"] = {"matchExpressions": [
                {"key": "app", "operator": draw(st.sampled_from(["In", "NotIn"])), "values": ["web"]}]}
        images: dict[str, Any] = {"mode": draw(st.sampled_from(["enforce", "warn", "off"]))}
        if draw(st.booleans()):
            images |= {"inheritAllow": False, "allow": draw(st.lists(
                st.sampled_from(["registry.acme.io/*", "ghcr.io/team-a/*"]), max_size=2))}
        if draw(st.booleans()):
            images["requireDigest"] = True
        scopes.append({"name": f"s{i}", "match": match, "images": images})
    exceptions = [{"name": f"e{i}", "reason": f"ticket {i}",
                   "expires": draw(st.sampled_from(["2001-01-01T00:00:00Z", "2999-01-01T00:00:00Z"])),
                   "match": draw(st.one_of(
                       st.builds(lambda names: {"namespaces": names},
                                 st.lists(st.sampled_from(NAMESPACES), min_size=1, max_size=5)),
                       st.builds(lambda selector: {"namespaceSelector": selector}, SELECTORS))),
                   "images": draw(st.lists(st.sampled_from(["docker.io/bitnami/redis", "quay.io/old/*", "evil.io"]),
                                           min_size=1, max_size=2))}
                  for i in range(draw(st.integers(0, 3)))]
    defaults = [{"group": "apps", "versions": ["v1"], "kinds": ["Deployment"], "match": {"namespaceSelector": selector},
                 "set": {"spec": {"replicas": replicas}}}
                for replicas, selector in enumerate(draw(st.lists(SELECTORS, max_size=2)), start=2)]
    defaults.append({"group": "apps", "versions": ["v1"], "kinds": ["Deployment"], "set": {"spec": {"replicas": 1}}})
    document = {"images": {"allow": ["docker.io/library/*"], "mode": draw(st.sampled_from(["enforce", "warn"]))},
                "scopes": scopes, "exceptions": exceptions, "defaults": defaults}
    return yaml.safe_dump(document)


@pytest.fixture(scope="module")
def reloadable(start_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, ServerProcess]]:
    directory = tmp_path_factory.mktemp("property")
    path = directory / "policy.yaml"
    path.write_text("images: {allow: [docker.io/library/*]}\n")
    apiserver = ApiServer(directory / "apiserver")
    apiserver.add_user("hook", "hook-token", *WEBHOOK_RULES)
    for name, labels in LABELS.items():
        apiserver.store.put("namespaces", {"metadata": {"name": name, "labels": labels}})
    kubeconfig = write_kubeconfig(directory / "kubeconfig", apiserver.url, {"token": "hook-token"},
                                  ca_file=apiserver.ca_file)
    try:
        with start_server("--policy", str(path), "--reload-interval", "0.05",
                          "--kubeconfig", str(kubeconfig)) as server:
            yield path, server
    finally:
        apiserver.stop()


def _served(client: ApiServerClient, policy: Policy, path: Path, text: str) -> None:
    """Write the policy and wait until the server answers with it (its hash in /readyz)."""
    write_atomically(path, text)
    deadline = time.monotonic() + 10
    while policy_check(client)["sha256"] != policy.sha256:
        assert time.monotonic() < deadline, "the server did not reload"
        time.sleep(0.02)


CASES = st.tuples(st.sampled_from(NAMESPACES), st.sampled_from(["Pod", "Deployment"]),
                  st.lists(st.sampled_from(IMAGES), min_size=1, max_size=3), st.sampled_from(["web", "db"]))


@given(scoped_policies(), CASES)
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow,
                                                                                   HealthCheck.function_scoped_fixture])
def test_serve_check_and_audit_agree(reloadable: tuple[Path, ServerProcess], text: str,
                                     case: tuple[str, str, list[str], str]) -> None:
    path, server = reloadable
    namespace, kind, images, app = case
    policy = parse_policy(text.encode(), str(path))
    obj = workload(kind, pod_spec(*images), name=app, namespace=namespace)
    client = server.client()
    try:
        _served(client, policy, path, text)
        served = client.review("/validate", review(obj, namespace=namespace))
        mutated = client.review("/mutate", review(obj, namespace=namespace))
    finally:
        client.close()
    the_namespace = {"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": namespace, "labels": LABELS[namespace]}}
    inputs = yaml.safe_dump_all([obj, the_namespace]).encode()
    result, _ = check.evaluate(read(["-"], io.BytesIO(inputs)), policy)
    assert isinstance(result, check.Result)
    validation = result.admission.validation
    patch = json.loads(base64.b64decode(mutated["patch"])) if "patch" in mutated else []
    event(f"selects by labels: {policy.needs_namespace_labels}, patched: {bool(patch)}")
    event(f"scoped: {validation.scope is not None}, excepted: {bool(validation.exceptions)}, "
          f"expired note: {'expired' in (validation.message or '')}, allowed: {validation.allowed}")
    assert served["allowed"] == validation.allowed
    assert served.get("status", {}).get("message") == validation.message
    assert served.get("warnings", []) == clean_warnings(validation.warnings)
    assert patch == result.admission.patch
    labelled = policy.seen_from(namespace_labels=LABELS.get)  # what audit's namespace list gives judge
    audited = judge(obj, result.target, labelled)  # audit: the stored object, judged as a CREATE of it
    assert (audited.allowed, audited.message, clean_warnings(audited.warnings)) == (
        validation.allowed, validation.message, clean_warnings(validation.warnings))
    assert (audited.scope, audited.exceptions) == (validation.scope, validation.exceptions)

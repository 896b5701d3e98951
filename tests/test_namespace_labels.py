"""Namespace labels in `serve`, for a policy's namespaceSelector: list-then-watch, not ready until
synced, one bounded GET for a namespace not seen yet, fail closed when labels cannot be had, the
last labels kept while the API server is away, and a relabel that takes effect with no reload.

The server runs as a real process and reads the stand-in API server through a kubeconfig.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.apiserver import WEBHOOK_RULES, ApiServer, Reply, Request, status
from tests.conftest import ServerProcess, eventually
from tests.reviews import pod_review, project, review
from tests.test_kube_serve import kubeconfig, readyz

POLICY = """\
images:
  allow: [registry.k8s.io, docker.io/library/*]
scopes:
  - name: onboarding
    match: {namespaceSelector: {matchLabels: {stage: onboarding}}}
    images: {mode: warn}
  - name: production
    match: {namespaceSelector: {matchExpressions: [{key: env, operator: In, values: [prod]}]}}
    images: {requireDigest: true}
defaults:
  - group: example.sealyun.com
    versions: ["*"]
    kinds: [Project]
    match: {namespaceSelector: {matchLabels: {env: prod}}}
    set: {spec: {replicas: 3}}
  - {group: example.sealyun.com, versions: ["*"], kinds: [Project], set: {spec: {replicas: 1}}}
"""
DENIED_IN_SHOP = ('spec.containers[0] "c0": image "evil.io/x" (evil.io/x) is not from an allowed registry; '
                  "allowed: registry.k8s.io, docker.io/library/*")
NAMESPACES = "/api/v1/namespaces"


class Outage:
    """Plays an API server that answers nothing about namespaces while ``on`` is set."""

    def __init__(self, apiserver: ApiServer) -> None:
        self.on = threading.Event()
        self.apiserver = apiserver
        apiserver.interceptors.append(self)

    def __call__(self, request: Request) -> Reply | None:
        if self.on.is_set() and request.path.startswith(NAMESPACES) and "/pods" not in request.path:
            return status(503, "ServiceUnavailable", "the server is currently unable to handle the request")
        return None

    def start(self) -> None:
        self.on.set()
        self.apiserver.store.drop_watches("namespaces")


@pytest.fixture
def cluster(apiserver: ApiServer, tmp_path: Path) -> Path:
    apiserver.add_user("hook", "hook-token", *WEBHOOK_RULES)
    for name, labels in [("onboard", {"stage": "onboarding"}), ("shop", {}), ("payments", {"env": "prod"})]:
        apiserver.store.put("namespaces", {"metadata": {"name": name, "labels": labels}})
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return kubeconfig(apiserver, tmp_path, "hook-token")


@pytest.fixture
def served(start_server: Any, cluster: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    with start_server("--kubeconfig", str(cluster), "--policy", str(tmp_path / "policy.yaml")) as server:
        assert eventually(lambda: readyz(server)[0] == 200)
        yield server


def validate(server: ServerProcess, namespace: str, image: str = "evil.io/x") -> dict[str, Any]:
    client = server.client()
    try:
        return client.review("/validate", pod_review(image, namespace=namespace))
    finally:
        client.close()


def mutate(server: ServerProcess, namespace: str) -> dict[str, Any]:
    client = server.client()
    try:
        return client.review("/mutate", review(project(namespace=namespace), namespace=namespace))
    finally:
        client.close()


def replicas(answer: dict[str, Any]) -> Any:
    (operation,) = json.loads(base64.b64decode(answer["patch"]))
    return operation["value"]


def lookups(apiserver: ApiServer, name: str | None = None) -> list[Any]:
    """The GETs for one namespace not yet seen (a list narrowed by metadata.name)."""
    return [s for s in apiserver.lists(NAMESPACES)
            if (s.query.get("fieldSelector") or "").startswith("metadata.name=")
            and (name is None or s.query["fieldSelector"] == f"metadata.name={name}")]


def test_labels_decide_and_a_relabel_takes_effect_without_a_reload(served: ServerProcess,
                                                                     apiserver: ApiServer) -> None:
    onboard = validate(served, "onboard")
    assert onboard["allowed"] is True
    assert any('in scope "onboarding"' in w for w in onboard["warnings"])
    assert validate(served, "shop")["status"]["message"] == DENIED_IN_SHOP
    production = validate(served, "payments", "registry.k8s.io/pause:3.9")
    assert production["allowed"] is False and 'in scope "production"' in production["status"]["message"]
    assert (replicas(mutate(served, "payments")), replicas(mutate(served, "shop"))) == ({"replicas": 3},
                                                                                        {"replicas": 1})

    apiserver.store.put("namespaces", {"metadata": {"name": "onboard", "labels": {"env": "prod"}}})
    relabelled = eventually(lambda: 'in scope "production"' in (validate(served, "onboard").get("status") or {})
                            .get("message", ""))
    assert relabelled
    apiserver.store.put("namespaces", {"metadata": {"name": "shop", "labels": {"stage": "onboarding"}}})
    assert eventually(lambda: validate(served, "shop")["allowed"])
    assert not lookups(apiserver)  # the watch delivered every change: no review asked the API server
    code, report = readyz(served)
    assert code == 200
    assert report["checks"]["namespaces"]["ready"] is True and report["checks"]["namespaces"]["needed"] is True
    assert report["checks"]["namespaces"]["namespaces"] == 3


def test_not_ready_until_the_first_list_and_labels_that_cannot_be_had_fail_closed(
    start_server: Any, cluster: Path, apiserver: ApiServer, tmp_path: Path
) -> None:
    outage = Outage(apiserver)
    outage.on.set()
    with start_server("--kubeconfig", str(cluster), "--policy", str(tmp_path / "policy.yaml")) as server:
        code, report = readyz(server)
        assert code == 503
        assert report["checks"]["namespaces"]["ready"] is False
        denied = validate(server, "onboard", "registry.k8s.io/pause:3.9")  # allowed by every scope, if judged
        assert (denied["allowed"], denied["status"]["code"]) == (False, 500)
        assert re.fullmatch(r'not judged: the labels of namespace "onboard" are unavailable: the Kubernetes API '
                            r"at https://127\.0\.0\.1:\d+ kept failing GET /api/v1/namespaces: HTTP 503: the "
                            r"server is currently unable to handle the request \(tried once, with a 1 s timeout\)",
                            denied["status"]["message"])
        skipped = mutate(server, "payments")
        assert skipped["allowed"] is True and "patch" not in skipped
        assert skipped["warnings"][0].startswith('mutation skipped: the labels of namespace "payments" are '
                                                 "unavailable: ")
        outage.on.clear()
        assert eventually(lambda: readyz(server)[0] == 200, timeout=20)
        assert validate(server, "onboard")["allowed"] is True


def test_a_namespace_not_yet_seen_is_fetched_once(served: ServerProcess, apiserver: ApiServer) -> None:
    # Hold back the watch, so a new namespace reaches serve only through its own GET.
    held = threading.Event()
    held.set()

    def hold(request: Request) -> Reply | None:
        if held.is_set() and request.path == NAMESPACES and request.query.get("watch") == "true":
            return status(500, "InternalError", "watch held back by the test")
        return None

    apiserver.interceptors.append(hold)
    apiserver.store.drop_watches("namespaces")
    assert eventually(lambda: not apiserver.store.watching("namespaces"))
    apiserver.store.put("namespaces", {"metadata": {"name": "fresh", "labels": {"stage": "onboarding"}}})
    assert validate(served, "fresh")["allowed"] is True
    assert validate(served, "fresh")["allowed"] is True
    assert len(lookups(apiserver, "fresh")) == 1  # then cached
    held.clear()


def test_made_up_namespaces_are_rationed_and_never_decide(served: ServerProcess, apiserver: ApiServer) -> None:
    first = validate(served, "no-such-namespace", "registry.k8s.io/pause:3.9")
    assert (first["allowed"], first["status"]["code"]) == (False, 500)
    assert first["status"]["message"] == ('not judged: the labels of namespace "no-such-namespace" are unavailable: '
                                          "no such namespace")
    validate(served, "no-such-namespace")
    assert len(lookups(apiserver, "no-such-namespace")) == 1  # remembered as absent

    client = served.client()
    started = time.monotonic()
    try:
        answers = [client.review("/validate", pod_review("registry.k8s.io/pause:3.9", namespace=f"forged-{i}"))
                    for i in range(200)]
        # Known namespaces are answered as ever in the middle of it.
        shop = client.review("/validate", pod_review("evil.io/x", namespace="shop"))
    finally:
        client.close()
    assert all(a["allowed"] is False and a["status"]["code"] == 500 for a in answers)
    assert len(lookups(apiserver)) <= 1 + 20 + 10 * (time.monotonic() - started) + 1  # burst, then 10 a second
    assert any("are being looked up" in a["status"]["message"] for a in answers)
    assert shop["status"]["message"] == DENIED_IN_SHOP
    odd = validate(served, "Not_A/Name")
    assert odd["status"]["message"].endswith("that is not a namespace name")


def test_a_slow_api_server_cannot_make_lookups_hold_the_worker(served: ServerProcess,
                                                                 apiserver: ApiServer) -> None:
    """Each lookup blocks its worker; they get a tenth of its time, a second at most at once."""
    body = json.dumps({"kind": "NamespaceList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
                       "items": []}).encode()
    slow = {"_raw": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(body), body), "_delay": 0.4}

    def answer_slowly(request: Request) -> Reply | None:
        return (200, slow) if "metadata.name=slow-" in request.query.get("fieldSelector", "") else None

    apiserver.interceptors.append(answer_slowly)
    client = served.client()
    started = time.monotonic()
    try:
        answers = [client.review("/validate", pod_review("registry.k8s.io/pause:3.9", namespace=f"slow-{i}"))
                   for i in range(15)]
        elapsed = time.monotonic() - started
        shop = client.review("/validate", pod_review("evil.io/x", namespace="shop"))
    finally:
        client.close()
    asked = len([s for s in lookups(apiserver) if s.query["fieldSelector"].startswith("metadata.name=slow-")])
    assert 2 <= asked <= 4  # a second's worth at 0.4 s each, and what a tenth of the time since adds
    assert elapsed < 0.4 * asked + 1.5  # the others were refused at once, not after their own wait
    assert all(a["status"]["code"] == 500 for a in answers)
    assert sum("are being looked up" in a["status"]["message"] for a in answers) >= 15 - asked
    assert shop["status"]["message"] == DENIED_IN_SHOP


def test_the_last_labels_stay_in_force_while_the_api_server_is_away(served: ServerProcess,
                                                                      apiserver: ApiServer) -> None:
    Outage(apiserver).start()
    assert eventually(lambda: readyz(served)[1]["checks"]["namespaces"]["error"])
    assert validate(served, "onboard")["allowed"] is True  # still onboarding: warned, not denied
    assert validate(served, "shop")["status"]["message"] == DENIED_IN_SHOP
    assert readyz(served)[0] == 200  # synced once; the labels held are in force
    gone = validate(served, "created-during-the-outage")
    assert gone["status"]["code"] == 500 and "unavailable" in gone["status"]["message"]

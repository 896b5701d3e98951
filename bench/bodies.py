"""Benchmark request bodies: AdmissionReview v1 as the API server sends them, with
managedFields, the service-account volume and the default tolerations."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "pod-create-generatename.json"


def _base() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text())


def _container(template: dict[str, Any], name: str, image: str) -> dict[str, Any]:
    item = copy.deepcopy(template)
    item["name"] = name
    item["image"] = image
    return item


def pod(images: list[str], init: list[str] | None = None) -> dict[str, Any]:
    review = _base()
    spec = review["request"]["object"]["spec"]
    template = spec["containers"][0]
    spec["containers"] = [_container(template, f"c{i}", image) for i, image in enumerate(images)]
    if init:
        spec["initContainers"] = [_container(template, f"init{i}", image) for i, image in enumerate(init)]
    review["request"]["uid"] = str(uuid.uuid4())
    return review


def deployment(images: list[str]) -> dict[str, Any]:
    review = pod(images)
    request = review["request"]
    pod_object = request["object"]
    template_meta = {"labels": pod_object["metadata"]["labels"], "creationTimestamp": None}
    request["kind"] = {"group": "apps", "version": "v1", "kind": "Deployment"}
    request["requestKind"] = request["kind"]
    request["resource"] = {"group": "apps", "version": "v1", "resource": "deployments"}
    request["requestResource"] = request["resource"]
    request["name"] = "web"
    request["userInfo"] = {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]}
    request["object"] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web", "namespace": "shop", "creationTimestamp": None, "labels": {"app": "web"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
            "managedFields": pod_object["metadata"]["managedFields"],
        },
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": template_meta, "spec": pod_object["spec"]},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
        },
        "status": {},
    }
    return review


def project(replicas: int | None = None) -> dict[str, Any]:
    review = pod(["nginx"])
    request = review["request"]
    gvk = {"group": "example.sealyun.com", "version": "v1alpha1", "kind": "Project"}
    request["kind"] = request["requestKind"] = gvk
    request["resource"] = request["requestResource"] = {
        "group": "example.sealyun.com", "version": "v1alpha1", "resource": "projects"}
    spec: dict[str, Any] = {"owner": "team-a", "description": "benchmark project"}
    if replicas is not None:
        spec["replicas"] = replicas
    request["object"] = {
        "apiVersion": "example.sealyun.com/v1alpha1",
        "kind": "Project",
        "metadata": {"name": "demo", "namespace": "shop", "creationTimestamp": None,
                     "managedFields": request["object"]["metadata"]["managedFields"]},
        "spec": spec,
    }
    request["name"] = "demo"
    return review


ALLOWED = ["registry.k8s.io/pause:3.9", "nginx:1.27", "ghcr.io/acme/api:2.1"]
DENIED = ["registry.k8s.io/pause:3.9", "evil.example.com/miner:1", "ghcr.io/acme/api:2.1"]


def pod_allowed() -> dict[str, Any]:
    return pod(ALLOWED, init=["quay.io/acme/migrate:1"])


def pod_denied() -> dict[str, Any]:
    return pod(DENIED, init=["quay.io/acme/migrate:1"])


def pod_with(count: int, registry: str = "ghcr.io") -> dict[str, Any]:
    return pod([f"{registry}/acme/service-{i}:1.{i}" for i in range(count)])


def policy_with(patterns: int) -> str:
    """A policy of ``patterns`` entries; the images used above stay allowed."""
    allow = ["registry.k8s.io", "docker.io/library/*", "ghcr.io/*", "quay.io/*"]
    allow += [f"registry{i}.example.com/team-{i}/*" for i in range(max(0, patterns - len(allow)))]
    lines = "\n".join(f"    - {p}" for p in allow)
    return f"images:\n  mode: enforce\n  allow:\n{lines}\nexemptNamespaces: [kube-system]\n"


def pod_in(namespace: str) -> dict[str, Any]:
    """The allowed Pod CREATE, in ``namespace``."""
    review = pod_allowed()
    review["request"]["namespace"] = namespace
    review["request"]["object"]["metadata"]["namespace"] = namespace
    return review


# The embedded default policy's baseline (webhook/policy/default.yaml), which the scoped
# policies below add to.
DEFAULT_LIKE = """\
images:
  mode: enforce
  allow: [registry.k8s.io, docker.io/library/*, ghcr.io/*, quay.io/*]
  requireDigest: false
exemptNamespaces: [kube-system]
defaults:
  - group: example.sealyun.com
    versions: ["*"]
    kinds: [Project]
    set: {spec: {replicas: 1}}
"""


def scope_namespace(scopes: int) -> str:
    """The namespace that the last of ``scoped_policy(scopes, ...)``'s scopes names, and only it."""
    return f"team-{scopes - 1:04}"


def _scope(i: int, last: bool) -> str:
    """One scope of a realistic mix: mostly exact namespaces; globs, kinds and object selectors
    too; and every hundredth a cluster-wide one (kinds or labels only), tried on every request."""
    team = f"team-{i:04}"
    registry = f"registry.{team}.example.com"
    if i % 100 == 50 and not last:
        match = "{kinds: [CronJob]}" if i % 200 == 50 else f"{{objectSelector: {{matchLabels: {{tier: batch-{i}}}}}}}"
        images = f"{{allow: [{registry}/batch/*]}}"
    elif last or i % 10 < 6:
        match = f"{{namespaces: [{team}, {team}-staging]}}"
        images = f"{{allow: [{registry}/*]}}"
    elif i % 10 == 6:
        match = f'{{namespaces: ["tenant-{i:04}-*", "{team}-preview-*"]}}'
        images = f"{{allow: [{registry}/*], mode: warn}}"
    elif i % 10 == 7:
        match = f"{{namespaces: [{team}-data], objectSelector: {{matchLabels: {{app: redis-{i}}}}}}}"
        images = f"{{inheritAllow: false, allow: [{registry}/redis, registry.k8s.io], requireDigest: true}}"
    elif i % 10 == 8:
        match = f"{{namespaces: [{team}-jobs], kinds: [CronJob, Job]}}"
        images = f"{{allow: [{registry}/jobs/*]}}"
    else:
        match = (f"{{namespaces: [{team}-ops], objectSelector: {{matchExpressions: "
                 f"[{{key: owner, operator: In, values: [ops-{i}]}}]}}}}")
        images = "{mode: off}"
    return f"  - name: {team}\n    match: {match}\n    images: {images}\n"


def _exception(i: int) -> str:
    """One exception: a legacy image for one team's namespace, for a while; a few have expired,
    a few use globs or apply cluster-wide to one kind."""
    team = f"team-{i:04}"
    expires = "2020-01-01T00:00:00Z" if i % 100 == 99 else "2099-01-01T00:00:00Z"
    if i % 50 == 25:
        match = f"{{kinds: [Deployment], objectSelector: {{matchLabels: {{legacy: l-{i}}}}}}}"
    elif i % 10 == 3:
        match = f'{{namespaces: ["tenant-{i:04}-*"], kinds: [Pod, Deployment]}}'
    else:
        match = f"{{namespaces: [{team}], objectSelector: {{matchLabels: {{app: legacy-{i}}}}}}}"
    return (f"  - name: legacy-{i:04}\n    reason: \"OPS-{i}: move legacy-{i} to the team registry\"\n"
            f"    expires: \"{expires}\"\n    match: {match}\n"
            f"    images: [docker.io/legacy/app-{i}, registry.old.example.com/{team}/*]\n")


def scoped_policy(scopes: int, exceptions: int) -> str:
    """The default-like baseline with ``scopes`` scopes and ``exceptions`` exceptions. The Pod of
    ``pod_in(scope_namespace(scopes))`` is decided by the last scope and allowed, and no
    namespaceSelector appears (serve refuses one until it keeps namespace labels)."""
    text = DEFAULT_LIKE
    if scopes:
        text += "scopes:\n" + "".join(_scope(i, i == scopes - 1) for i in range(scopes))
    if exceptions:
        text += "exceptions:\n" + "".join(_exception(i) for i in range(exceptions))
    return text

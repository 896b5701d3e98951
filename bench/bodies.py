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

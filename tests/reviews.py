"""AdmissionReview bodies in the shapes the API server sends (see shared/protocol.md)."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from pathlib import Path
from typing import Any

import jsonpatch

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def pod_create() -> dict[str, Any]:
    """The real-shaped Pod CREATE with generateName, managedFields and the SA volume."""
    return fixture("pod-create-generatename.json")


def container(name: str, image: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "resources": {},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
    }


def image_volume(name: str, reference: Any) -> dict[str, Any]:
    """An OCI image volume, as the API server sends it (pullPolicy defaulted)."""
    return {"name": name, "image": {"reference": reference, "pullPolicy": "IfNotPresent"}}


def pod_spec(*images: str, init: tuple[str, ...] = (), ephemeral: tuple[str, ...] = (),
             volumes: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fixture's pod spec with these containers; ``volumes`` are image volumes ``v0``, ``v1``…
    after its service-account volume, so the first is ``volumes[1]``."""
    spec = copy.deepcopy(pod_create()["request"]["object"]["spec"])
    spec["containers"] = [container(f"c{i}", image) for i, image in enumerate(images)]
    if init:
        spec["initContainers"] = [container(f"init{i}", image) for i, image in enumerate(init)]
    if ephemeral:
        spec["ephemeralContainers"] = [container(f"debug{i}", image) for i, image in enumerate(ephemeral)]
    spec["volumes"] += [image_volume(f"v{i}", reference) for i, reference in enumerate(volumes)]
    return spec


WORKLOADS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    # kind: (group, version, resource, path to the pod spec)
    "Pod": ("", "v1", "pods", ("spec",)),
    "PodTemplate": ("", "v1", "podtemplates", ("template", "spec")),
    "ReplicationController": ("", "v1", "replicationcontrollers", ("spec", "template", "spec")),
    "Deployment": ("apps", "v1", "deployments", ("spec", "template", "spec")),
    "ReplicaSet": ("apps", "v1", "replicasets", ("spec", "template", "spec")),
    "StatefulSet": ("apps", "v1", "statefulsets", ("spec", "template", "spec")),
    "DaemonSet": ("apps", "v1", "daemonsets", ("spec", "template", "spec")),
    "Job": ("batch", "v1", "jobs", ("spec", "template", "spec")),
    "CronJob": ("batch", "v1", "cronjobs", ("spec", "jobTemplate", "spec", "template", "spec")),
}

# Kinds in the other groups and versions that have served them; each is judged as its usual one.
LEGACY_VERSIONS = [
    ("Deployment", "extensions/v1beta1"), ("DaemonSet", "extensions/v1beta1"), ("ReplicaSet", "extensions/v1beta1"),
    ("Job", "extensions/v1beta1"), ("Deployment", "apps/v1beta1"), ("Deployment", "apps/v1beta2"),
    ("StatefulSet", "apps/v1beta1"), ("DaemonSet", "apps/v1beta2"), ("CronJob", "batch/v1beta1"),
    ("CronJob", "batch/v2alpha1"),
]


def workload(kind: str, spec: dict[str, Any], name: str = "web", namespace: str = "shop",
             group_version: str | None = None) -> dict[str, Any]:
    """``kind`` holding ``spec`` as its pod spec; ``group_version`` (``extensions/v1beta1``) for another version."""
    group, version, _, path = WORKLOADS[kind]
    obj: dict[str, Any] = {
        "apiVersion": group_version or (f"{group}/{version}" if group else version),
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
    }
    node = obj
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = spec
    return obj


def review(
    obj: Any,
    *,
    kind: str | None = None,
    operation: str = "CREATE",
    old: Any = None,
    namespace: str | None = "shop",
    sub_resource: str | None = None,
    api_version: str = "admission.k8s.io/v1",
    uid: str | None = None,
    group_version: str | None = None,
) -> dict[str, Any]:
    """The review of ``obj``; ``group_version`` names the kind's group and version when not the usual one."""
    source = obj if isinstance(obj, dict) else old if isinstance(old, dict) else {}
    kind = kind or source.get("kind", "Pod")
    group, version, resource, _ = WORKLOADS.get(kind, ("example.sealyun.com", "v1alpha1", "projects", ()))
    if group_version is not None:
        group, _, version = group_version.rpartition("/")
    gvk = {"group": group, "version": version, "kind": kind}
    gvr = {"group": group, "version": version, "resource": resource}
    request: dict[str, Any] = {
        "uid": uid or str(uuid.uuid4()),
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "operation": operation,
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller", "groups": []},
        "object": obj,
        "oldObject": old,
        "dryRun": False,
        "options": {"kind": f"{operation.title()}Options", "apiVersion": "meta.k8s.io/v1"},
    }
    if namespace is not None:
        request["namespace"] = namespace
    if sub_resource:
        request["subResource"] = sub_resource
        request["requestSubResource"] = sub_resource
    name = (source.get("metadata") or {}).get("name")
    if name:
        request["name"] = name
    return {"apiVersion": api_version, "kind": "AdmissionReview", "request": request}


def pod_review(*images: str, **kwargs: Any) -> dict[str, Any]:
    init = kwargs.pop("init", ())
    ephemeral = kwargs.pop("ephemeral", ())
    volumes = kwargs.pop("volumes", ())
    return review(workload("Pod", pod_spec(*images, init=init, ephemeral=ephemeral, volumes=volumes)), **kwargs)


def project(spec: Any = None, *, name: str = "docs", namespace: str = "shop", **metadata: Any) -> dict[str, Any]:
    """A Project of the example CRD, as the API server sends it to a mutating webhook."""
    obj: dict[str, Any] = {
        "apiVersion": "example.sealyun.com/v1alpha1",
        "kind": "Project",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None, **metadata},
    }
    if spec is not None:
        obj["spec"] = spec
    return obj


def decoded_patch(response: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSONPatch of a /mutate response, checked the way the API server reads it."""
    if "patch" not in response:
        assert "patchType" not in response
        return []
    assert response["patchType"] == "JSONPatch"
    raw = base64.b64decode(response["patch"], validate=True)  # standard alphabet, padded
    assert base64.b64encode(raw).decode() == response["patch"]
    operations: list[dict[str, Any]] = json.loads(raw)
    assert operations, "an empty patch must be left out"
    return operations


def applied(obj: Any, operations: list[dict[str, Any]]) -> Any:
    """Apply with jsonpatch, an RFC 6902 implementation independent of ours, as strictly as
    the API server's: ``add`` needs its parent, ``replace`` its target."""
    assert {op["op"] for op in operations} <= {"add", "replace"}, operations
    return jsonpatch.apply_patch(obj, operations, in_place=False)

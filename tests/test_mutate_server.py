"""/mutate over real TLS, as the API server calls it: decode the patch, apply it with jsonpatch,
compare with the object we expect, then hand the result to /validate as the API server would."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ApiServerClient, ServerProcess
from tests.reviews import FIXTURES, applied, decoded_patch, pod_review, pod_spec, project, review, workload

DIGEST = "sha256:" + "9c" * 32
MANAGED = {"app.kubernetes.io/managed-by": "admission-webhook"}
OWNER = {"example.com/owner~team": "platform"}


@pytest.fixture(scope="module")
def mutating_server(start_server: Any) -> Iterator[ServerProcess]:
    with start_server("--policy", str(FIXTURES / "mutating-policy.yaml")) as server:
        yield server


@pytest.fixture
def hook(mutating_server: ServerProcess) -> Iterator[ApiServerClient]:
    client = mutating_server.client()
    yield client
    client.close()


def mutated(hook: ApiServerClient, body: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The object after the API server applies our patch, and the response itself."""
    response = hook.review("/mutate", body)
    assert response["allowed"] is True
    assert "status" not in response
    return applied(body["request"]["object"], decoded_patch(response)), response


def expected_project(spec: Any, **metadata: Any) -> dict[str, Any]:
    obj = project(spec, labels=MANAGED, annotations=OWNER)
    obj["metadata"].update(metadata)
    return obj


@pytest.mark.parametrize(
    ("spec", "expected_spec"),
    [
        ({"owner": "x"}, {"owner": "x", "replicas": 1, "paused": False}),  # missing replicas
        ({"replicas": 0}, {"replicas": 0, "paused": False}),  # 0 stays 0
        ({"replicas": None}, {"replicas": 1, "paused": False}),  # null counts as absent
        ({"replicas": 2, "paused": True, "future": {"x": [None, 1.5]}},  # unknown fields survive
         {"replicas": 2, "paused": True, "future": {"x": [None, 1.5]}}),
    ],
)
@pytest.mark.parametrize("api_version", ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"])
def test_project_defaults(hook: ApiServerClient, spec: Any, expected_spec: Any, api_version: str) -> None:
    result, response = mutated(hook, review(project(spec), api_version=api_version))
    assert result == expected_project(expected_spec)
    assert "defaulted metadata.labels[\"app.kubernetes.io/managed-by\"]=\"admission-webhook\"" in response["warnings"]


def test_unknown_top_level_fields_and_metadata_survive(hook: ApiServerClient) -> None:
    obj = project({"replicas": 1}, finalizers=["x/y"], ownerReferences=[{"kind": "K", "name": "n"}])
    obj["someFieldFromKubernetes2030"] = {"nested": {"deep": [1, {"a": None}]}}
    obj["status"] = {"observedGeneration": 3}
    expected = copy.deepcopy(obj)
    expected["spec"]["paused"] = False
    expected["metadata"].update(labels=MANAGED, annotations=OWNER)
    assert mutated(hook, review(obj))[0] == expected


def test_no_labels_and_annotation_keys_with_slash_and_tilde(hook: ApiServerClient) -> None:
    annotations = {"a/b~c": "1", "~": "2", "/": "3"}
    body = review(project({"replicas": 1, "paused": False}, annotations=annotations))
    result, response = mutated(hook, body)
    assert decoded_patch(response) == [
        {"op": "add", "path": "/metadata/annotations/example.com~1owner~0team", "value": "platform"},
        {"op": "add", "path": "/metadata/labels", "value": MANAGED},
    ]
    assert result == expected_project({"replicas": 1, "paused": False}, annotations={**annotations, **OWNER})


def test_pod_with_three_containers(hook: ApiServerClient) -> None:
    spec = pod_spec("registry.k8s.io/a", "mirror.acme.io/dockerhub/library/nginx:1.27", "registry.k8s.io/c")
    spec["containers"][0]["securityContext"] = {"allowPrivilegeEscalation": True}  # left as it is
    del spec["containers"][1]["resources"]
    spec["containers"][2]["securityContext"] = {"runAsUser": 1000}
    body = review(workload("Pod", spec))
    expected = copy.deepcopy(body["request"]["object"])
    expected["spec"]["containers"][1]["securityContext"] = {"allowPrivilegeEscalation": False}
    expected["spec"]["containers"][2]["securityContext"]["allowPrivilegeEscalation"] = False
    result, response = mutated(hook, body)
    assert result == expected
    assert response["warnings"] == [
        "defaulted spec.containers[1].securityContext.allowPrivilegeEscalation=false",
        "defaulted spec.containers[2].securityContext.allowPrivilegeEscalation=false",
    ]


@pytest.mark.parametrize(
    ("image", "rewritten"),
    [
        ("nginx", "mirror.acme.io/dockerhub/library/nginx"),
        (f"docker.io/library/nginx@{DIGEST}", f"mirror.acme.io/dockerhub/library/nginx@{DIGEST}"),
        ("mirror.acme.io/dockerhub/library/nginx:1.27", None),  # already on the mirror
    ],
)
def test_image_rewriting(hook: ApiServerClient, image: str, rewritten: str | None) -> None:
    body = pod_review(image)
    body["request"]["object"]["spec"]["containers"][0]["securityContext"] = {"allowPrivilegeEscalation": False}
    result, response = mutated(hook, body)
    expected = copy.deepcopy(body["request"]["object"])
    if rewritten is None:
        assert response == {"uid": body["request"]["uid"], "allowed": True}
    else:
        expected["spec"]["containers"][0]["image"] = rewritten
        assert response["warnings"] == [f'rewrote spec.containers[0] "c0" image "{image}" to {rewritten}']
    assert result == expected


def test_mutation_first_then_validation(hook: ApiServerClient) -> None:
    """The validating webhook judges the final, rewritten images; the originals are not allowed."""
    body = pod_review("nginx:1.27", init=("bitnami/redis:7",))
    denied = hook.review("/validate", body)
    assert denied["allowed"] is False and "nginx:1.27" in denied["status"]["message"]

    result, _ = mutated(hook, body)
    assert result["spec"]["initContainers"][0]["image"] == "mirror.acme.io/bitnami/redis:7"
    final = copy.deepcopy(body)
    final["request"]["object"] = result
    assert hook.review("/validate", final) == {"uid": body["request"]["uid"], "allowed": True}


def test_reinvocation_gets_no_patch(hook: ApiServerClient) -> None:
    for body in (review(project({})), pod_review("nginx", "bitnami/redis", ephemeral=("busybox",))):
        result, response = mutated(hook, body)
        assert "patch" in response
        again = copy.deepcopy(body)
        again["request"]["object"] = result
        again["request"]["uid"] = "reinvocation-round-1"
        assert hook.review("/mutate", again) == {"uid": "reinvocation-round-1", "allowed": True}


@pytest.mark.parametrize("operation", ["DELETE", "CONNECT"])
def test_delete_and_connect_get_no_patch(hook: ApiServerClient, operation: str) -> None:
    stored = project({})
    body = review(None, old=stored, kind="Project", operation=operation)
    assert hook.review("/mutate", body) == {"uid": body["request"]["uid"], "allowed": True}
    body = pod_review("nginx", operation=operation)
    body["request"]["oldObject"], body["request"]["object"] = body["request"]["object"], None
    assert hook.review("/mutate", body) == {"uid": body["request"]["uid"], "allowed": True}
    connect = review({"kind": "PodExecOptions", "command": ["sh"]}, kind="PodExecOptions", operation=operation,
                     sub_resource="exec")
    assert hook.review("/mutate", connect) == {"uid": connect["request"]["uid"], "allowed": True}


def test_warnings_hold_no_control_characters(hook: ApiServerClient) -> None:
    body = pod_review("nginx")
    body["request"]["object"]["spec"]["containers"][0]["name"] = "evil\nname\x1b[31m"
    _, response = mutated(hook, body)
    assert all(text.isprintable() for text in response["warnings"])


def test_an_image_volume_is_rewritten_and_then_judged(hook: ApiServerClient) -> None:
    body = pod_review("registry.k8s.io/pause", volumes=("bitnami/tools:1",))
    denied = hook.review("/validate", body)
    assert denied["allowed"] is False
    message = denied["status"]["message"]
    assert message.startswith('spec.volumes[1].image.reference volume "v0": image "bitnami/tools:1"')

    result, response = mutated(hook, body)
    assert result["spec"]["volumes"][1]["image"] == {"reference": "mirror.acme.io/bitnami/tools:1",
                                                     "pullPolicy": "IfNotPresent"}
    assert 'rewrote spec.volumes[1].image.reference volume "v0" image "bitnami/tools:1" to ' \
           "mirror.acme.io/bitnami/tools:1" in response["warnings"]
    final = copy.deepcopy(body)
    final["request"]["object"] = result
    assert hook.review("/validate", final) == {"uid": body["request"]["uid"], "allowed": True}


def test_an_image_id_is_never_rewritten_into_a_reference(hook: ApiServerClient) -> None:
    """docker.io moves to the mirror, but sha256:<hex> names no repository on docker.io."""
    image_id = "sha256:" + "ab" * 32
    body = pod_review("registry.k8s.io/pause", volumes=(image_id,))
    body["request"]["object"]["spec"]["containers"][0]["securityContext"] = {"allowPrivilegeEscalation": False}
    assert hook.review("/mutate", body) == {"uid": body["request"]["uid"], "allowed": True}
    denied = hook.review("/validate", body)
    assert denied["status"]["message"] == (f'spec.volumes[1].image.reference volume "v0": image "{image_id}" is an '
                                           "image ID, not an image reference: the runtime would run whatever image "
                                           "on the node has this ID; name the image as repository@sha256:...")

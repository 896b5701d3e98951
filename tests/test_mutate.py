"""The mutating decision, on reviews decoded exactly as the server decodes them.

Every patch is applied with jsonpatch, not with our code, and the result compared with the
object we expect.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import orjson
import pytest

from tests.reviews import (
    FIXTURES,
    LEGACY_VERSIONS,
    WORKLOADS,
    applied,
    container,
    image_volume,
    pod_review,
    pod_spec,
    project,
    review,
    workload,
)
from webhook.admission.deadline import NEVER
from webhook.admission.mutate import MAX_LISTED_CHANGES, MAX_PATCH_OPERATIONS, mutate
from webhook.admission.review import Request, Response, decode_review, encode_response
from webhook.policy.model import Policy, load_policy, parse_policy

POLICY = load_policy(FIXTURES / "mutating-policy.yaml")
DIGEST = "sha256:" + "4f" * 32
MANAGED = {"app.kubernetes.io/managed-by": "admission-webhook"}
OWNER = {"example.com/owner~team": "platform"}


def decide(body: dict[str, Any], policy: Policy = POLICY) -> Response:
    return mutate(decode_review(orjson.dumps(body)), policy, NEVER)


def mutated(body: dict[str, Any], policy: Policy = POLICY) -> Any:
    """The object after the API server applies our patch; no patch means unchanged."""
    answer = decide(body, policy)
    assert answer.allowed
    return applied(body["request"]["object"], list(answer.patch))


def policy(text: str) -> Policy:
    return parse_policy(text.encode(), "test.yaml")


def expected_project(spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    obj = project(spec, labels=MANAGED, annotations=OWNER)
    obj["metadata"].update(metadata)
    return obj


# --- defaulting -------------------------------------------------------------------------

def test_integers_beyond_64_bits_in_an_object_never_reach_the_patch() -> None:
    """orjson reads them as floats (it does not refuse them), and the patch carries only what we
    change, so the API server's own exact numbers are left as they are."""
    raw = orjson.dumps(review(project({"owner": "x", "big": 0}))).replace(
        b'"big":0', b'"big":18446744073709551616,"small":-9223372036854775809,"edge":18446744073709551615')
    request = decode_review(raw)
    answer = mutate(request, POLICY, NEVER)
    assert [op["path"] for op in answer.patch] == ["/metadata/labels", "/metadata/annotations", "/spec/replicas",
                                                   "/spec/paused"]
    assert b"1844674407" not in patch_sent(request, answer) and b"e+" not in patch_sent(request, answer)


def test_a_default_at_the_edge_of_int64_is_written_exactly() -> None:
    edge = policy("images: {mode: off}\ndefaults: [{group: example.sealyun.com, versions: ['*'], kinds: [Project], "
                  "set: {spec: {replicas: 9223372036854775807, floor: -9223372036854775808}}}]")
    request = decode_review(orjson.dumps(review(project({}))))
    answer = mutate(request, edge, NEVER)
    assert [op["value"] for op in answer.patch] == [9223372036854775807, -9223372036854775808]
    assert b'"value":9223372036854775807}' in patch_sent(request, answer)


def patch_sent(request: Request, answer: Response) -> bytes:
    """The JSONPatch as the API server receives it, encoded."""
    return base64.b64decode(orjson.loads(encode_response(request, answer, mutating=True))["response"]["patch"])

def test_missing_replicas_is_defaulted() -> None:
    body = review(project({"owner": "team-docs"}))
    answer = decide(body)
    assert list(answer.patch) == [
        {"op": "add", "path": "/metadata/labels", "value": MANAGED},
        {"op": "add", "path": "/metadata/annotations", "value": OWNER},
        {"op": "add", "path": "/spec/replicas", "value": 1},
        {"op": "add", "path": "/spec/paused", "value": False},
    ]
    assert mutated(body) == expected_project({"owner": "team-docs", "replicas": 1, "paused": False})
    assert answer.warnings == (
        "defaulted spec.replicas=1",
        "defaulted spec.paused=false",
        'defaulted metadata.labels["app.kubernetes.io/managed-by"]="admission-webhook"',
        'defaulted metadata.annotations["example.com/owner~team"]="platform"',
    )


@pytest.mark.parametrize("given", [0, False, "", [], {}, "0"])
def test_a_value_the_user_gave_is_never_changed(given: Any) -> None:
    body = review(project({"replicas": given, "paused": given}))
    assert mutated(body) == expected_project({"replicas": given, "paused": given})


def test_null_counts_as_absent() -> None:
    body = review(project({"replicas": None, "paused": True}))
    answer = decide(body)
    assert {"op": "replace", "path": "/spec/replicas", "value": 1} in answer.patch
    assert mutated(body) == expected_project({"replicas": 1, "paused": True})


def test_missing_and_null_spec_are_created() -> None:
    assert mutated(review(project())) == expected_project({"replicas": 1, "paused": False})
    assert mutated(review(project(None) | {"spec": None})) == expected_project({"replicas": 1, "paused": False})


def test_a_spec_that_is_not_an_object_is_left_alone() -> None:
    assert mutated(review(project("oops"))) == expected_project("oops")


def test_unknown_fields_survive() -> None:
    obj = project(
        {"owner": "x", "futureField": {"nested": [1, {"a": None}, 2.5]}, "bigNumber": 9007199254740993},
        managedFields=[{"manager": "kubectl", "fieldsV1": {"f:spec": {".": {}}}}],
    )
    obj["status"] = {"conditions": [{"type": "Ready", "status": "True"}]}
    obj["someFieldFromKubernetes2030"] = {"x": True}
    expected = copy.deepcopy(obj)
    expected["spec"].update(replicas=1, paused=False)
    expected["metadata"].update(labels=MANAGED, annotations=OWNER)
    assert mutated(review(obj)) == expected


def test_existing_labels_get_one_key_added() -> None:
    body = review(project({"replicas": 2, "paused": False}, labels={"app": "docs"}, annotations=OWNER))
    answer = decide(body)
    assert list(answer.patch) == [
        {"op": "add", "path": "/metadata/labels/app.kubernetes.io~1managed-by", "value": "admission-webhook"}
    ]
    assert mutated(body) == expected_project({"replicas": 2, "paused": False}, labels={"app": "docs", **MANAGED})


def test_a_label_the_user_set_is_kept() -> None:
    labels = {"app.kubernetes.io/managed-by": "helm"}
    body = review(project({"replicas": 2, "paused": False}, labels=labels, annotations=OWNER))
    assert decide(body).patch == ()


def test_annotation_keys_with_slash_and_tilde_are_escaped() -> None:
    annotations = {"a/b~c": "1", "~/": "2", "example.com~1owner~0team": "a lookalike, not ours"}
    body = review(project({"replicas": 1, "paused": False}, labels=MANAGED, annotations=annotations))
    answer = decide(body)
    assert list(answer.patch) == [
        {"op": "add", "path": "/metadata/annotations/example.com~1owner~0team", "value": "platform"}
    ]
    assert mutated(body)["metadata"]["annotations"] == {**annotations, **OWNER}


def test_pod_containers_each_get_the_default() -> None:
    spec = pod_spec("registry.k8s.io/a", "registry.k8s.io/b", "registry.k8s.io/c")
    spec["containers"][0]["securityContext"] = {"allowPrivilegeEscalation": True}
    spec["containers"][2]["securityContext"] = {"runAsNonRoot": True}
    body = review(workload("Pod", spec))
    expected = copy.deepcopy(body["request"]["object"])
    containers = expected["spec"]["containers"]
    containers[1]["securityContext"] = {"allowPrivilegeEscalation": False}
    containers[2]["securityContext"] = {"runAsNonRoot": True, "allowPrivilegeEscalation": False}
    answer = decide(body)
    assert list(answer.patch) == [
        {"op": "add", "path": "/spec/containers/1/securityContext", "value": {"allowPrivilegeEscalation": False}},
        {"op": "add", "path": "/spec/containers/2/securityContext/allowPrivilegeEscalation", "value": False},
    ]
    assert mutated(body) == expected
    assert answer.warnings == (
        "defaulted spec.containers[1].securityContext.allowPrivilegeEscalation=false",
        "defaulted spec.containers[2].securityContext.allowPrivilegeEscalation=false",
    )


def test_list_defaults_never_create_the_list_and_skip_odd_elements() -> None:
    spec = pod_spec("registry.k8s.io/a")
    spec["containers"].append("not an object")
    spec["initContainers"] = [container("init", "registry.k8s.io/a")]  # the rule names containers[*] only
    body = review(workload("Pod", spec))
    result = mutated(body)
    assert result["spec"]["containers"][1] == "not an object"
    assert result["spec"]["initContainers"] == spec["initContainers"]
    body = review(workload("Pod", {"restartPolicy": "Always"}))
    assert decide(body).patch == ()


def test_update_defaults_only_fields_still_absent() -> None:
    old = project({"replicas": 3}, labels=MANAGED, annotations=OWNER)
    new = project({"replicas": 3, "owner": "y"}, labels=MANAGED, annotations=OWNER)
    body = review(new, operation="UPDATE", old=old)
    assert list(decide(body).patch) == [{"op": "add", "path": "/spec/paused", "value": False}]


@pytest.mark.parametrize("operation", ["DELETE", "CONNECT"])
def test_delete_and_connect_get_no_patch(operation: str) -> None:
    bare = project()
    body = review(None, old=bare, kind="Project", operation=operation)
    assert decide(body) == Response(True)
    body = review(bare, operation=operation)  # even with an object, which DELETE never has
    assert decide(body) == Response(True)
    body = pod_review("nginx", operation=operation)
    assert decide(body) == Response(True)


@pytest.mark.parametrize("sub_resource", ["status", "scale"])
def test_subresources_are_not_defaulted(sub_resource: str) -> None:
    body = review(project({}), operation="UPDATE", old=project({}), sub_resource=sub_resource)
    assert decide(body) == Response(True)


def test_other_kinds_groups_and_versions_are_not_defaulted() -> None:
    assert decide(review({"kind": "Widget", "spec": {}}, kind="Widget")).patch == ()
    body = review(project({}))
    body["request"]["kind"]["group"] = "example.com"
    assert decide(body).patch == ()
    pod = review(workload("Pod", pod_spec("registry.k8s.io/a")))
    pod["request"]["kind"]["version"] = "v2"  # the Pod rule names v1 only
    assert decide(pod).patch == ()


def test_exempt_namespaces_are_not_mutated() -> None:
    assert decide(review(project({}), namespace="kube-system")) == Response(True)
    assert decide(pod_review("nginx", namespace="kube-system")) == Response(True)


@pytest.mark.parametrize("obj", [None, [], "x", 5])
def test_objects_that_are_not_objects_get_no_patch(obj: Any) -> None:
    assert decide(review(obj, kind="Project")) == Response(True)


def test_versions_star_and_named_versions() -> None:
    both = policy(
        "images: {mode: off}\n"
        "defaults:\n"
        "  - {group: g.io, versions: ['*'], kinds: [K], set: {spec: {a: 1}}}\n"
        "  - {group: g.io, versions: [v2], kinds: [K], set: {spec: {b: 2}}}\n"
    )
    for version, spec in [("v1", {"a": 1}), ("v2", {"a": 1, "b": 2}), ("v3", {"a": 1})]:
        body = review({"kind": "K"}, kind="K")
        body["request"]["kind"] = {"group": "g.io", "version": version, "kind": "K"}
        assert mutated(body, both) == {"kind": "K", "spec": spec}, version


def test_two_rules_for_one_kind_both_apply() -> None:
    two = policy(
        "images: {mode: off}\n"
        "defaults:\n"
        "  - {group: g.io, versions: [v1], kinds: [K], set: {spec: {a: 1, 'list[*]': {x: 1}}}}\n"
        "  - {group: g.io, versions: [v1], kinds: [K, L], set: {spec: {b: 2, a: 1, 'list[*]': {y: 2}}}}\n"
    )
    body = review({"kind": "K", "spec": {"list": [{}, {"x": 0}]}}, kind="K")
    body["request"]["kind"] = {"group": "g.io", "version": "v1", "kind": "K"}
    assert mutated(body, two)["spec"] == {"list": [{"x": 1, "y": 2}, {"x": 0, "y": 2}], "a": 1, "b": 2}


def test_warnings_are_bounded() -> None:
    spec = pod_spec(*["registry.k8s.io/a"] * 50)
    answer = decide(review(workload("Pod", spec)))
    assert len(answer.patch) == 50
    assert len(answer.warnings) == MAX_LISTED_CHANGES + 1
    assert answer.warnings[-1] == f"and {50 - MAX_LISTED_CHANGES} more changes"


def test_a_mutation_of_more_changes_than_a_patch_may_carry_is_skipped() -> None:
    lists = policy(
        "images: {mode: off}\n"
        "defaults: [{group: '', versions: [v1], kinds: [Pod], set: {spec: {'containers[*]': {args: [a]}}}}]\n"
    )
    images = ["x"] * MAX_PATCH_OPERATIONS
    assert len(decide(review(workload("Pod", pod_spec(*images))), lists).patch) == MAX_PATCH_OPERATIONS
    answer = decide(review(workload("Pod", pod_spec(*images, "y"))), lists)
    assert answer.allowed and not answer.patch and answer.outcome == "error"
    assert answer.warnings == ("mutation skipped: it would make more than 10000 changes",)


def test_default_values_are_copied_not_shared() -> None:
    lists = policy(
        "images: {mode: off}\n"
        "defaults: [{group: '', versions: [v1], kinds: [Pod], set: {spec: {'containers[*]': {args: [a]}}}}]\n"
    )
    body = review(workload("Pod", pod_spec("x", "y")))
    answer = decide(body, lists)
    first, second = (op["value"] for op in answer.patch)
    assert first == second == ["a"] and first is not second


# --- rewriting --------------------------------------------------------------------------

MIRRORED = [
    ("nginx", "mirror.acme.io/dockerhub/library/nginx"),
    ("nginx:1.27", "mirror.acme.io/dockerhub/library/nginx:1.27"),
    (f"docker.io/library/nginx@{DIGEST}", f"mirror.acme.io/dockerhub/library/nginx@{DIGEST}"),
    (f"nginx:1.27@{DIGEST}", f"mirror.acme.io/dockerhub/library/nginx:1.27@{DIGEST}"),
    ("index.docker.io/acme/app:2", "mirror.acme.io/dockerhub/acme/app:2"),
    ("bitnami/redis:7", "mirror.acme.io/bitnami/redis:7"),  # the most specific from wins
    ("docker.io/bitnami/charts/redis", "mirror.acme.io/bitnami/charts/redis"),
    ("quay.io/acme/tools:1", "mirror.acme.io/tools:1"),  # from equals the repository
    ("quay.io/acme/tools/jq", "mirror.acme.io/tools/jq"),
]
UNCHANGED = [
    "mirror.acme.io/dockerhub/library/nginx:1.27",  # already on the mirror
    "registry.k8s.io/pause:3.9",
    "quay.io/acme/toolsmith:1",  # whole components: tools is not a prefix of toolsmith
    "quay.io/acme/app",
    "docker.io.evil.com/x",
    "Bad/Image:1",  # does not parse: left for the validating webhook to deny
]


@pytest.mark.parametrize(("image", "rewritten"), MIRRORED)
def test_images_move_to_the_mirror(image: str, rewritten: str) -> None:
    body = pod_review(image)
    body["request"]["object"]["spec"]["containers"][0]["securityContext"] = {"allowPrivilegeEscalation": False}
    answer = decide(body)
    assert list(answer.patch) == [{"op": "replace", "path": "/spec/containers/0/image", "value": rewritten}]
    assert answer.warnings == (f'rewrote spec.containers[0] "c0" image "{image}" to {rewritten}',)
    expected = copy.deepcopy(body["request"]["object"])
    expected["spec"]["containers"][0]["image"] = rewritten
    assert mutated(body) == expected


@pytest.mark.parametrize("image", UNCHANGED)
def test_images_left_alone(image: str) -> None:
    body = pod_review(image)
    body["request"]["object"]["spec"]["containers"][0]["securityContext"] = {"allowPrivilegeEscalation": False}
    assert decide(body) == Response(True)


@pytest.mark.parametrize("kind", ["Deployment", "CronJob", "PodTemplate", "Job"])
def test_every_image_site_of_workloads_is_rewritten(kind: str) -> None:
    obj = workload(kind, pod_spec("nginx", "registry.k8s.io/pause", init=("busybox",), ephemeral=("alpine",)))
    prefix = {"Deployment": "/spec/template/spec", "CronJob": "/spec/jobTemplate/spec/template/spec",
              "PodTemplate": "/template/spec", "Job": "/spec/template/spec"}[kind]
    answer = decide(review(obj))
    assert list(answer.patch) == [
        {"op": "replace", "path": f"{prefix}/containers/0/image", "value": "mirror.acme.io/dockerhub/library/nginx"},
        {"op": "replace", "path": f"{prefix}/initContainers/0/image",
         "value": "mirror.acme.io/dockerhub/library/busybox"},
        {"op": "replace", "path": f"{prefix}/ephemeralContainers/0/image",
         "value": "mirror.acme.io/dockerhub/library/alpine"},
    ]


@pytest.mark.parametrize(("kind", "group_version"), LEGACY_VERSIONS)
def test_every_group_and_version_of_a_workload_kind_is_rewritten(kind: str, group_version: str) -> None:
    obj = workload(kind, pod_spec("registry.k8s.io/pause", "nginx"), group_version=group_version)
    answer = decide(review(obj, group_version=group_version))
    prefix = "/" + "/".join(WORKLOADS[kind][3])
    assert list(answer.patch) == [{"op": "replace", "path": f"{prefix}/containers/1/image",
                                   "value": "mirror.acme.io/dockerhub/library/nginx"}]


@pytest.mark.parametrize("kind", ["Pod", "Deployment", "CronJob", "PodTemplate"])
def test_image_volumes_are_rewritten_where_they_are(kind: str) -> None:
    obj = workload(kind, pod_spec("registry.k8s.io/pause", volumes=("bitnami/tools:1", "registry.k8s.io/x")))
    obj_spec = ".".join(WORKLOADS[kind][3])
    if kind == "Pod":
        obj["spec"]["containers"][0]["securityContext"] = {"allowPrivilegeEscalation": False}
    answer = decide(review(obj))
    pointer = "/" + "/".join(WORKLOADS[kind][3]) + "/volumes/1/image/reference"
    assert list(answer.patch) == [{"op": "replace", "path": pointer, "value": "mirror.acme.io/bitnami/tools:1"}]
    assert answer.warnings == (f'rewrote {obj_spec}.volumes[1].image.reference volume "v0" image "bitnami/tools:1" '
                               "to mirror.acme.io/bitnami/tools:1",)


@pytest.mark.parametrize(("kind", "group_version"),
                         [("Deployment", "extensions/v1beta1"), ("CronJob", "batch/v1beta1")])
def test_image_volumes_are_rewritten_in_every_group_and_version(kind: str, group_version: str) -> None:
    obj = workload(kind, pod_spec("registry.k8s.io/pause", volumes=("nginx",)), group_version=group_version)
    answer = decide(review(obj, group_version=group_version))
    assert [op["value"] for op in answer.patch] == ["mirror.acme.io/dockerhub/library/nginx"]


def test_update_rewrites_only_volume_images_that_are_new_or_changed() -> None:
    old = workload("Deployment", pod_spec("registry.k8s.io/pause", volumes=("nginx:1", "redis:7")))
    scaled = copy.deepcopy(old)
    scaled["spec"]["replicas"] = 5
    assert decide(review(scaled, operation="UPDATE", old=old)) == Response(True)
    # redis:7 already runs (in a volume); busybox already runs in a container of oldObject.
    old["spec"]["template"]["spec"]["containers"].append(container("b", "busybox"))
    changed = workload("Deployment", pod_spec("registry.k8s.io/pause", "busybox",
                                              volumes=("nginx:2", "redis:7", "busybox")))
    answer = decide(review(changed, operation="UPDATE", old=old))
    assert list(answer.patch) == [{"op": "replace", "path": "/spec/template/spec/volumes/1/image/reference",
                                   "value": "mirror.acme.io/dockerhub/library/nginx:2"}]


def test_kubectl_debug_leaves_volume_images_alone() -> None:
    old = workload("Pod", pod_spec("registry.k8s.io/pause"))
    old["spec"]["containers"][0]["securityContext"] = {"allowPrivilegeEscalation": False}
    new = copy.deepcopy(old)
    new["spec"]["volumes"].append(image_volume("tools", "nginx"))
    new["spec"]["ephemeralContainers"] = [container("debugger", "busybox")]
    body = review(new, operation="UPDATE", old=old, sub_resource="ephemeralcontainers")
    assert [op["path"] for op in decide(body).patch] == ["/spec/ephemeralContainers/0/image"]


def test_malformed_volumes_are_not_rewritten_but_the_pod_is_still_defaulted() -> None:
    body = pod_review("nginx", volumes=("busybox",))
    body["request"]["object"]["spec"]["volumes"].append({"name": "odd", "image": "nginx"})
    result = mutated(body)
    assert result["spec"]["containers"][0] == {**body["request"]["object"]["spec"]["containers"][0],
                                               "securityContext": {"allowPrivilegeEscalation": False}}
    assert result["spec"]["volumes"] == body["request"]["object"]["spec"]["volumes"]


def test_pod_defaults_and_rewrites_come_in_one_patch() -> None:
    body = pod_review("nginx:1.27")
    result = mutated(body)
    assert result["spec"]["containers"][0]["image"] == "mirror.acme.io/dockerhub/library/nginx:1.27"
    assert result["spec"]["containers"][0]["securityContext"] == {"allowPrivilegeEscalation": False}


def test_update_rewrites_only_new_or_changed_images() -> None:
    old = workload("Deployment", pod_spec("nginx:1.26", "redis:7"))
    scaled = copy.deepcopy(old)
    scaled["spec"]["replicas"] = 5
    assert decide(review(scaled, operation="UPDATE", old=old)) == Response(True)

    bumped = workload("Deployment", pod_spec("nginx:1.27", "redis:7"))
    answer = decide(review(bumped, operation="UPDATE", old=old))
    assert list(answer.patch) == [{"op": "replace", "path": "/spec/template/spec/containers/0/image",
                                   "value": "mirror.acme.io/dockerhub/library/nginx:1.27"}]


def test_kubectl_debug_rewrites_only_ephemeral_containers() -> None:
    old = workload("Pod", pod_spec("nginx"))
    old["spec"]["containers"][0]["securityContext"] = {"allowPrivilegeEscalation": False}
    new = copy.deepcopy(old)
    new["spec"]["ephemeralContainers"] = [container("debugger", "busybox:1.36")]
    body = review(new, operation="UPDATE", old=old, sub_resource="ephemeralcontainers")
    assert list(decide(body).patch) == [{"op": "replace", "path": "/spec/ephemeralContainers/0/image",
                                         "value": "mirror.acme.io/dockerhub/library/busybox:1.36"}]
    # nginx in containers stays: the subresource can change ephemeral containers only,
    # and it is not new either. A new one in containers is not ours to touch here.
    new["spec"]["containers"][0]["image"] = "redis"
    body = review(new, operation="UPDATE", old=old, sub_resource="ephemeralcontainers")
    assert [op["path"] for op in decide(body).patch] == ["/spec/ephemeralContainers/0/image"]


def test_status_updates_are_not_rewritten() -> None:
    old = workload("Pod", pod_spec("nginx"))
    body = review(workload("Pod", pod_spec("redis")), operation="UPDATE", old=old, sub_resource="status")
    assert decide(body) == Response(True)


def test_malformed_pod_specs_are_not_rewritten_but_still_defaulted() -> None:
    body = pod_review("nginx", "busybox")
    body["request"]["object"]["spec"]["containers"][1]["image"] = 42
    result = mutated(body)
    assert [c["image"] for c in result["spec"]["containers"]] == ["nginx", 42]
    assert all(c["securityContext"] == {"allowPrivilegeEscalation": False} for c in result["spec"]["containers"])


def test_rewriting_applies_in_mode_off_too() -> None:
    off = policy("images: {mode: off, rewrite: [{from: docker.io, to: mirror.acme.io/hub}]}")
    assert mutated(pod_review("nginx"), off)["spec"]["containers"][0]["image"] == "mirror.acme.io/hub/library/nginx"


def test_identity_rule_keeps_a_path_below_a_broader_from() -> None:
    shielded = policy(
        "images:\n"
        "  allow: [docker.io/*]\n"
        "  rewrite:\n"
        "    - {from: docker.io, to: docker.io/mirror}\n"
        "    - {from: docker.io/mirror, to: docker.io/mirror}\n"
    )
    assert mutated(pod_review("nginx"), shielded)["spec"]["containers"][0]["image"] == \
        "docker.io/mirror/library/nginx"
    assert decide(pod_review("docker.io/mirror/library/nginx"), shielded) == Response(True)


def test_a_rewrite_too_long_for_distribution_is_skipped_with_a_warning() -> None:
    long_path = "/".join(["abcdefghij"] * 22)  # 241 characters: fits on docker.io, not on the mirror
    body = pod_review(f"docker.io/{long_path}:1")
    body["request"]["object"]["spec"]["containers"][0]["securityContext"] = {"allowPrivilegeEscalation": False}
    answer = decide(body)
    assert answer.patch == ()
    assert len(answer.warnings) == 1
    assert answer.warnings[0].startswith('not rewritten: spec.containers[0] "c0" image "docker.io/abcdefghij/')
    assert '" would become "mirror.acme.io/dockerhub/abcdefghij/' in answer.warnings[0]
    assert answer.warnings[0].endswith("repository name must not be more than 255 characters")

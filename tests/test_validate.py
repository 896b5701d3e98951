"""The validating decision, on reviews decoded exactly as the server decodes them."""

from __future__ import annotations

import copy
import gc
import logging
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import REPO
from tests.docs import doc_block
from tests.reviews import (
    LEGACY_VERSIONS,
    WORKLOADS,
    container,
    fixture,
    image_volume,
    pod_create,
    pod_review,
    pod_spec,
    review,
    workload,
)
from webhook.admission.deadline import NEVER, Deadline
from webhook.admission.review import Request, Response, clean_warnings, decode_review
from webhook.admission.validate import validate
from webhook.admission.webhook import Webhook
from webhook.policy.model import Policy, load_policy, parse_policy
from webhook.policy.podspecs import CONTAINER_LISTS, IMAGE_LISTS
from webhook.policy.references import IMAGE_ID_PROBLEM
from webhook.policy.verdicts import DEFAULT_CAPACITY, DEFAULT_MAX_BYTES

DEFAULT = load_policy(None)
ALLOWED_LIST = "allowed: registry.k8s.io, docker.io/library/*, ghcr.io/*, quay.io/*"


def decide(body: dict[str, Any], policy: Policy = DEFAULT) -> Response:
    return validate(decode_review(orjson.dumps(body)), policy, NEVER)


def policy(text: str) -> Policy:
    return parse_policy(text.encode(), "test.yaml")


@pytest.mark.parametrize("kind", sorted(WORKLOADS))
def test_every_workload_kind_is_judged(kind: str) -> None:
    good = workload(kind, pod_spec("nginx:1.27", init=("registry.k8s.io/pause:3.9",)))
    assert decide(review(good)).allowed
    bad = workload(kind, pod_spec("nginx:1.27", init=("evil.io/x:1",)))
    answer = decide(review(bad))
    assert not answer.allowed
    assert (answer.code, answer.reason) == (403, "Forbidden")
    prefix = ".".join(WORKLOADS[kind][3])
    assert answer.message == f'{prefix}.initContainers[0] "init0": image "evil.io/x:1" (evil.io/x:1) ' \
                             f"is not from an allowed registry; {ALLOWED_LIST}"


@pytest.mark.parametrize(("kind", "group_version"), LEGACY_VERSIONS)
def test_every_group_and_version_of_a_workload_kind_is_judged(kind: str, group_version: str) -> None:
    def answer(*images: str) -> Response:
        obj = workload(kind, pod_spec(*images), group_version=group_version)
        return decide(review(obj, group_version=group_version))

    assert answer("nginx:1.27").allowed
    denial = answer("nginx:1.27", "evil.io/x:1")
    assert (denial.allowed, denial.code) == (False, 403)
    prefix = ".".join(WORKLOADS[kind][3])
    assert denial.message == f'{prefix}.containers[1] "c1": image "evil.io/x:1" (evil.io/x:1) ' \
                             f"is not from an allowed registry; {ALLOWED_LIST}"


@pytest.mark.parametrize("kind", sorted(WORKLOADS))
def test_image_volumes_are_judged_in_every_workload_kind(kind: str) -> None:
    assert decide(review(workload(kind, pod_spec("nginx", volumes=("registry.k8s.io/tools:1",))))).allowed
    answer = decide(review(workload(kind, pod_spec("nginx", volumes=("registry.k8s.io/tools:1", "evil.io/x")))))
    assert (answer.allowed, answer.code, answer.registries) == (False, 403, ("evil.io",))
    prefix = ".".join(WORKLOADS[kind][3])
    assert answer.message == f'{prefix}.volumes[2].image.reference volume "v1": image "evil.io/x" (evil.io/x) ' \
                             f"is not from an allowed registry; {ALLOWED_LIST}"


@pytest.mark.parametrize(("kind", "group_version"), LEGACY_VERSIONS)
def test_image_volumes_are_judged_in_every_group_and_version(kind: str, group_version: str) -> None:
    obj = workload(kind, pod_spec("nginx", volumes=("evil.io/x",)), group_version=group_version)
    answer = decide(review(obj, group_version=group_version))
    assert not answer.allowed
    assert answer.message is not None and answer.message.startswith(
        f'{".".join(WORKLOADS[kind][3])}.volumes[1].image.reference volume "v0": image "evil.io/x"')


def test_container_and_volume_violations_are_listed_together_containers_first() -> None:
    answer = decide(pod_review("evil.io/a", volumes=("Bad/Image", IMAGE_ID), init=("nginx",)))
    assert answer.message == (
        'spec.containers[0] "c0": image "evil.io/a" (evil.io/a) is not from an allowed registry; '
        'spec.volumes[1].image.reference volume "v0": image "Bad/Image" does not parse: '
        "repository name 'Image' must be lowercase; "
        f'spec.volumes[2].image.reference volume "v1": image "{IMAGE_ID}" {IMAGE_ID_PROBLEM}; ' + ALLOWED_LIST
    )


def test_update_does_not_judge_a_volume_image_that_already_ran_anywhere() -> None:
    old = workload("Deployment", pod_spec("evil.io/app:1", volumes=("evil.io/tools:1",)))
    scaled = copy.deepcopy(old)
    scaled["spec"]["replicas"] = 3
    assert decide(review(scaled, operation="UPDATE", old=old)).allowed
    # The identical string at another image site of oldObject counts as already running.
    moved = workload("Deployment", pod_spec("evil.io/app:1", volumes=("evil.io/tools:1", "evil.io/app:1")))
    assert decide(review(moved, operation="UPDATE", old=old)).allowed
    changed = workload("Deployment", pod_spec("evil.io/app:1", volumes=("evil.io/tools:2",)))
    answer = decide(review(changed, operation="UPDATE", old=old))
    assert answer.message == 'spec.template.spec.volumes[1].image.reference volume "v0": image "evil.io/tools:2" ' \
                             f"(evil.io/tools:2) is not from an allowed registry; {ALLOWED_LIST}"
    running = workload("Deployment", pod_spec("evil.io/tools:2", "evil.io/app:1"))
    assert decide(review(changed, operation="UPDATE", old=running)).allowed


def test_volume_images_warn_in_warn_mode_and_are_not_judged_where_nothing_is() -> None:
    warn = policy("images: {mode: warn, allow: [registry.k8s.io]}")
    answer = decide(pod_review("registry.k8s.io/pause", volumes=("evil.io/x",)), warn)
    assert (answer.allowed, answer.outcome) == (True, "warned")
    assert answer.warnings == ('policy would deny (warn mode): spec.volumes[1].image.reference volume "v0": '
                               'image "evil.io/x" (evil.io/x) is not from an allowed registry',)
    assert decide(pod_review("nginx", volumes=("evil.io/x",), namespace="kube-system")) == Response(True)
    assert decide(pod_review("nginx", volumes=("evil.io/x",)), policy("images: {mode: off}")) == Response(True)


def test_volumes_of_other_types_are_not_image_sites() -> None:
    spec = pod_spec("nginx")
    spec["volumes"] += [{"name": "cache", "emptyDir": {}}, {"name": "odd", "image": None},
                        {"name": "cm", "configMap": {"name": "evil.io/x"}}]
    assert decide(review(workload("Pod", spec))) == Response(True)


def test_denial_lists_every_offending_image() -> None:
    body = pod_review("nginx", "evil.io/a", "Bad/Image:1", init=("quay.io/ok",), ephemeral=("evil.io/d@",))
    answer = decide(body)
    assert not answer.allowed
    assert answer.message == (
        'spec.containers[1] "c1": image "evil.io/a" (evil.io/a) is not from an allowed registry; '
        'spec.containers[2] "c2": image "Bad/Image:1" does not parse: repository name \'Image\' must be lowercase; '
        'spec.ephemeralContainers[0] "debug0": image "evil.io/d@" does not parse: '
        "'@' must be followed by a digest; "
        + ALLOWED_LIST
    )


def test_long_denials_are_bounded() -> None:
    answer = decide(pod_review(*[f"evil.io/x{i}" for i in range(500)]))
    assert answer.message is not None
    assert "and 480 more" in answer.message
    assert len(answer.message) < 5000


def test_a_long_allowlist_is_named_in_part_and_counted() -> None:
    patterns = [f"reg{i}.example.com/*" for i in range(1000)]
    answer = decide(pod_review("evil.io/x:1"), policy(orjson.dumps({"images": {"allow": patterns}}).decode()))
    assert answer.message is not None
    listed = ", ".join(patterns[:10])
    assert answer.message.endswith(f"; allowed: {listed} and 990 more")
    assert len(answer.message) < 600


def test_real_generatename_pod_is_allowed() -> None:
    assert decide(pod_create()).allowed


@pytest.mark.parametrize("operation", ["DELETE", "CONNECT"])
def test_delete_and_connect_are_allowed_at_once(operation: str) -> None:
    body = pod_review("evil.io/x", operation=operation)
    body["request"]["oldObject"] = body["request"]["object"]
    body["request"]["object"] = None
    assert decide(body).allowed


def test_real_delete_fixture_is_allowed() -> None:
    assert decide(fixture("configmap-delete.json")).allowed


@pytest.mark.parametrize("kind", ["ConfigMap", "Widget", "Scale", "Eviction"])
def test_kinds_not_covered_are_allowed(kind: str) -> None:
    assert decide(review({"kind": kind, "spec": {"containers": [{"image": "evil.io/x"}]}}, kind=kind)).allowed


def test_update_judges_only_new_or_changed_images() -> None:
    old = workload("Deployment", pod_spec("evil.io/legacy:1", "nginx"))
    relabelled = copy.deepcopy(old)
    relabelled["metadata"]["labels"]["tier"] = "web"
    assert decide(review(relabelled, operation="UPDATE", old=old)).allowed

    changed = workload("Deployment", pod_spec("evil.io/legacy:1", "evil.io/new:2"))
    answer = decide(review(changed, operation="UPDATE", old=old))
    assert not answer.allowed
    assert answer.message is not None
    assert "evil.io/new:2" in answer.message and "legacy" not in answer.message


def test_update_compares_exact_strings() -> None:
    old = workload("Pod", pod_spec("evil.io/x:1"))
    retagged = workload("Pod", pod_spec("evil.io/x:2"))
    assert not decide(review(retagged, operation="UPDATE", old=old)).allowed


def test_kubectl_debug_ephemeral_container_is_judged() -> None:
    old = workload("Pod", pod_spec("evil.io/legacy"))
    new = workload("Pod", pod_spec("evil.io/legacy", ephemeral=("busybox:1.36",)))
    assert decide(review(new, operation="UPDATE", old=old, sub_resource="ephemeralcontainers")).allowed
    new = workload("Pod", pod_spec("evil.io/legacy", ephemeral=("evil.io/debug",)))
    answer = decide(review(new, operation="UPDATE", old=old, sub_resource="ephemeralcontainers"))
    assert not answer.allowed
    assert answer.message is not None and answer.message.startswith('spec.ephemeralContainers[0] "debug0"')


def test_exempt_namespace_is_not_judged_even_when_malformed() -> None:
    assert decide(pod_review("evil.io/x", namespace="kube-system")).allowed
    body = pod_review("nginx", namespace="kube-system")
    body["request"]["object"]["spec"]["containers"] = {"not": "a list"}
    assert decide(body).allowed


def test_mode_off_judges_nothing() -> None:
    off = policy("images: {mode: off}")
    body = pod_review("evil.io/x")
    body["request"]["object"]["spec"]["containers"][0]["image"] = 42
    assert decide(body, off).allowed


def test_warn_mode_allows_with_clean_warnings() -> None:
    warn = policy("images: {mode: warn, allow: [registry.k8s.io]}")
    answer = decide(pod_review("evil.io/x", "registry.k8s.io/pause", "bad\nimage\x1b[31m"), warn)
    assert answer.allowed
    assert len(answer.warnings) == 2
    assert answer.warnings[0].startswith("policy would deny (warn mode): spec.containers[0]")
    assert "\\n" in answer.warnings[1] and "\\u001b" in answer.warnings[1]
    assert all(ch.isprintable() for w in answer.warnings for ch in w)


def test_warn_mode_names_as_many_images_as_a_denial_and_counts_the_rest() -> None:
    images = [f"evil.io/x{i}" for i in range(500)]
    warned = decide(pod_review(*images), policy("images: {mode: warn, allow: [registry.k8s.io]}"))
    enforced = decide(pod_review(*images), policy("images: {allow: [registry.k8s.io]}"))
    assert warned.allowed and len(warned.warnings) == 21 and len(warned.registries) == 500
    assert warned.warnings[-1] == "policy would deny (warn mode): and 480 more"
    prefix = "policy would deny (warn mode): "
    assert enforced.message == "; ".join(w.removeprefix(prefix) for w in warned.warnings) + \
        "; allowed: registry.k8s.io"


def test_warnings_are_deduplicated_in_order_in_linear_time() -> None:
    many = [f"warning {i % 50_000}" for i in range(200_000)] + ["a\nb", "a b", "a\tb "]
    started = time.monotonic()
    cleaned = clean_warnings(many)
    assert time.monotonic() - started < 1.0  # a list scan took minutes
    assert cleaned == [f"warning {i}" for i in range(50_000)] + ["a b"]


def test_quoted_names_escape_every_character_that_is_not_printable() -> None:
    # DEL is ASCII and U+2028 is no control character, but both are invisible or end a line.
    body = pod_review("bad\x7fimage", "evil.io/\U000e0001x")
    body["request"]["object"]["spec"]["containers"][1]["name"] = "a\u2028b\u202e"
    answer = decide(body)
    assert answer.message is not None and answer.message.isprintable()
    assert '"bad\\u007fimage"' in answer.message and '"a\\u2028b\\u202e"' in answer.message
    assert '"evil.io/\\udb40\\udc01x"' in answer.message  # a JSON surrogate pair, not \\ue0001


def test_require_digest() -> None:
    pinned = policy("images: {allow: [quay.io/*], requireDigest: true}")
    digest = "sha256:" + "0" * 64
    assert decide(pod_review(f"quay.io/org/app@{digest}"), pinned).allowed
    answer = decide(pod_review("quay.io/org/app:1.0"), pinned)
    assert not answer.allowed
    assert answer.message is not None and "has no digest" in answer.message


IMAGE_ID = "sha256:" + "3f" * 32


def test_an_image_id_is_denied_as_an_image_id() -> None:
    answer = decide(pod_review("nginx", IMAGE_ID))
    assert (answer.allowed, answer.code, answer.registries) == (False, 403, ("invalid",))
    assert answer.message == f'spec.containers[1] "c1": image "{IMAGE_ID}" {IMAGE_ID_PROBLEM}'
    hub = policy("images: {allow: ['docker.io/*']}")
    assert decide(pod_review("sha256:ABC", init=("redis:7", "nginx:1")), hub).message == \
        f'spec.containers[0] "c0": image "sha256:ABC" {IMAGE_ID_PROBLEM}'
    assert decide(pod_review(f"nginx@{IMAGE_ID}", "redis:7", "nginx:1")).allowed  # a digest, named


def test_an_image_id_is_warned_in_warn_mode_and_not_judged_where_nothing_is() -> None:
    warn = policy("images: {mode: warn, allow: ['docker.io/*']}")
    answer = decide(pod_review(IMAGE_ID), warn)
    assert (answer.allowed, answer.outcome) == (True, "warned")
    assert answer.warnings == (f'policy would deny (warn mode): spec.containers[0] "c0": image "{IMAGE_ID}" '
                               f"{IMAGE_ID_PROBLEM}",)
    assert decide(pod_review(IMAGE_ID, namespace="kube-system")) == Response(True)
    assert decide(pod_review(IMAGE_ID), policy("images: {mode: off}")) == Response(True)


# Hash functions digests are written with, as the OCI image spec and go-digest spell them.
HASH_NAMES = ["sha256", "sha384", "sha512", "sha1", "sha224", "sha512-256", "sha512_224", "sha3-256", "sha3_512",
              "shake128", "shake256", "md5", "md4", "blake2b", "blake2s", "blake2b-512", "blake2s256", "blake3",
              "sm3", "ripemd160", "keccak256", "sha256+b64u"]


def any_case(text: str) -> st.SearchStrategy[str]:
    flips = st.lists(st.booleans(), min_size=len(text), max_size=len(text))
    return flips.map(lambda upper: "".join(c.upper() if u else c for c, u in zip(text, upper, strict=True)))


bare_digests = st.builds("{}:{}".format, st.sampled_from(HASH_NAMES).flatmap(any_case),
                         st.text(alphabet="0123456789abcdefABCDEF", min_size=1, max_size=140))
DOCKER_HUB = policy("images: {allow: ['docker.io/*', registry.k8s.io]}")


@settings(max_examples=400, deadline=None)
@given(image=bare_digests, judge=st.sampled_from([DOCKER_HUB, DEFAULT]), kind=st.sampled_from(sorted(WORKLOADS)),
       site=st.sampled_from(IMAGE_LISTS))
def test_a_bare_digest_is_never_allowed(image: str, judge: Policy, kind: str, site: str) -> None:
    spec = pod_spec("nginx:1")
    spec[site] = [*spec.get(site, []), image_volume("id", image) if site == "volumes" else container("id", image)]
    answer = decide(review(workload(kind, spec)), judge)
    assert (answer.allowed, answer.code) == (False, 403)
    assert answer.message is not None and answer.message.endswith(f"{IMAGE_ID_PROBLEM}")


def test_empty_allowlist_denies_everything() -> None:
    assert not decide(pod_review("registry.k8s.io/pause"), policy("images: {allow: []}")).allowed


@pytest.mark.parametrize(
    ("mangle", "field"),
    [
        (lambda spec: spec["containers"][0].update(image=42), "spec.containers[0]: image is a number"),
        (lambda spec: spec["containers"][0].update(image=None), "spec.containers[0]: has no image"),
        (lambda spec: spec.update(containers={"a": container("a", "nginx")}), "spec.containers: is not a list"),
        (lambda spec: spec.update(initContainers=["nginx"]), "spec.initContainers[0]: is not an object"),
        (lambda spec: spec.update(volumes={"v": image_volume("v", "nginx")}), "spec.volumes: is not a list"),
        (lambda spec: spec["volumes"].append("nginx"), "spec.volumes[1]: is not an object"),
        (lambda spec: spec["volumes"].append({"name": "v", "image": "nginx"}),
         "spec.volumes[1].image: is a str, not an object"),
        (lambda spec: spec["volumes"].append({"name": "v", "image": {"pullPolicy": "Always"}}),
         "spec.volumes[1].image: has no reference"),
        (lambda spec: spec["volumes"].append(image_volume("v", 42)),
         "spec.volumes[1].image: reference is a number, not a string"),
        (lambda spec: spec["volumes"].append(image_volume("v", None)), "spec.volumes[1].image: has no reference"),
    ],
)
@pytest.mark.parametrize("mode", ["enforce", "warn"])
def test_malformed_objects_are_invalid_not_allowed(mangle: Any, field: str, mode: str) -> None:
    body = pod_review("nginx")
    mangle(body["request"]["object"]["spec"])
    answer = decide(body, policy(f"images: {{mode: {mode}, allow: [nginx]}}"))
    assert not answer.allowed
    assert (answer.code, answer.reason) == (422, "Invalid")
    assert answer.message is not None and field in answer.message


@pytest.mark.parametrize(
    ("obj", "field"),
    [(None, "object: is missing on CREATE"), (["a"], "object: is not a JSON object"),
     ({"kind": "Deployment", "spec": []}, "spec: is not an object")],
)
def test_unreadable_object_shapes_are_invalid(obj: Any, field: str) -> None:
    answer = decide(review(obj, kind="Deployment"))
    assert answer.code == 422
    assert answer.message is not None and field in answer.message


def test_a_failing_rule_fails_closed_and_logs_the_uid(caplog: pytest.LogCaptureFixture) -> None:
    def broken(request: Request, policy: Policy, deadline: Deadline) -> Response:
        raise KeyError("secret-value")

    request = decode_review(orjson.dumps(pod_review("nginx", uid="uid-123")))
    with caplog.at_level(logging.ERROR):
        answer = Webhook("validate", broken, mutating=False).review(request, DEFAULT, NEVER)
    assert (answer.allowed, answer.code, answer.message) == (False, 500, "internal error evaluating policy")
    assert "uid-123" in caplog.text and "KeyError" in caplog.text
    assert "secret-value" not in caplog.text

    answer = Webhook("mutate", broken, mutating=True).review(request, DEFAULT, NEVER)
    assert answer.allowed and answer.warnings == ("mutation skipped: internal error",) and not answer.patch


def test_the_readme_shows_the_real_kubectl_output() -> None:
    """No cluster runs here, so kubectl's own lines are built as kubectl words them, around what the
    webhook really answers: the denial of `kubectl run`, and the warning the deployed policy gives."""
    block = doc_block("README.md", "deploy")
    pod = workload("Pod", {"containers": [container("evil", "evil.example.com/x")]}, name="evil", namespace="default")
    answer = decide(review(pod))
    crd = yaml.safe_load((REPO / "manifests/crds/projects.example.sealyun.com.yaml").read_text())["metadata"]["name"]
    checked = subprocess.run([sys.executable, "-m", "webhook", "check", "-o", "json", "--policy",
                              "manifests/base/policy.yaml", "manifests/examples/project-defaulted.yaml"],
                             cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    (project,) = orjson.loads(checked.stdout)["results"]
    expected = {
        "kubectl run evil --image=evil.example.com/x": [
            'Error from server (Forbidden): admission webhook "validate.admission-webhook.sealyun.com" denied the '
            f"request: {answer.message}"],
        "kubectl apply -f manifests/crds/ && kubectl wait --for condition=established -f manifests/crds/": [
            f"customresourcedefinition.apiextensions.k8s.io/{crd} created",
            f"customresourcedefinition.apiextensions.k8s.io/{crd} condition met"],
        "kubectl apply -f manifests/examples/project-defaulted.yaml": [
            *(f"Warning: {warning}" for warning in project["warnings"]),
            f"project.example.sealyun.com/{project['name']} created"],
    }
    assert {step.command: list(step.output) for step in block.steps if step.output} == expected
    assert project["warnings"] == ["defaulted spec.replicas=1"]  # the deployed policy defaults it


def held_mib(work: Callable[[], object]) -> float:
    """MiB still allocated after ``work``, as tracemalloc counts them."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        work()
        gc.collect()
        return (tracemalloc.get_traced_memory()[0] - before) / 2**20
    finally:
        tracemalloc.stop()


def test_the_verdict_cache_is_bounded_by_the_size_of_its_keys() -> None:
    judge = policy("images: {allow: [quay.io/*]}").images
    kept = 0

    def flood() -> None:
        nonlocal kept
        for i in range(2000):
            for image in (f"quay.io/org/app-{i}:1", f"evil.io/{i}/" + "x" * 4000, f"Bad/{i}" + "Y" * 4000,
                          f"evil.io/{i}" + "z" * 20_000):
                assert judge.fault(image) is not None or image.startswith("quay.io")
                assert judge.cached_bytes <= DEFAULT_MAX_BYTES
        kept = len(judge._seen)

    held = held_mib(flood)
    assert held < 2.5 * DEFAULT_MAX_BYTES / 2**20, f"{held:.1f} MiB held"  # keys, and their verdicts' reasons
    assert kept < DEFAULT_CAPACITY  # the size bound cleared it before the count bound would have
    assert judge.fault("quay.io/org/app-1999:1") is None  # still judged right, from the cache or afresh


IMAGE_POOL = ["nginx", "nginx:1.27", "quay.io/app/x:1", "ghcr.io/acme/api@sha256:" + "a" * 64, "evil.io/miner:1",
              "docker.io/acmeevil/x", "Bad/Image:1", "", "registry.k8s.io.evil.com/pause"]
odd_container = st.sampled_from([{"name": "odd"}, {"name": "odd", "image": 5}, {"name": "odd", "image": ["x"]}, "x"])
some_containers = st.lists(st.one_of(st.sampled_from(IMAGE_POOL).map(lambda image: container("c", image)),
                                     odd_container), max_size=4)
odd_volume = st.sampled_from([{"name": "cache", "emptyDir": {}}, {"name": "odd", "image": None}, {"image": {}},
                              {"image": "x"}, image_volume("odd", 5), "x"])
some_volumes = st.lists(st.one_of(st.sampled_from(IMAGE_POOL).map(lambda image: image_volume("v", image)),
                                  odd_volume), max_size=3)


def site_images(spec: dict[str, Any]) -> list[Any] | None:
    """Read independently of podspecs: each site's image, or None when a site is malformed."""
    images: list[Any] = []
    for name in CONTAINER_LISTS:
        for c in spec.get(name, []):
            if type(c) is not dict or type(c.get("image")) is not str:
                return None
            images.append(c["image"])
    for v in spec.get("volumes", []):
        if type(v) is not dict:
            return None
        source = v.get("image")
        if source is None:
            continue
        if type(source) is not dict or type(source.get("reference")) is not str:
            return None
        images.append(source["reference"])
    return images


@settings(max_examples=300, deadline=None)
@given(specs=st.lists(st.fixed_dictionaries({}, optional={"containers": some_containers,
                                                          "initContainers": some_containers,
                                                          "ephemeralContainers": some_containers,
                                                          "volumes": some_volumes}),
                      min_size=1, max_size=6),
       operation=st.sampled_from(["CREATE", "UPDATE"]))
def test_images_judged_before_get_the_answer_they_got_then(specs: list[dict[str, Any]], operation: str) -> None:
    """A policy remembers verdicts, and a Pod whose images it all allowed before skips judging:
    every answer must equal a fresh policy's, and allow exactly when no image has a fault."""
    warm = policy("images: {allow: [nginx, quay.io/*, ghcr.io/acme/*]}")
    for spec in specs:
        old = workload("Pod", {}) if operation == "UPDATE" else None
        body = review(workload("Pod", spec), operation=operation, old=old)
        fresh = policy("images: {allow: [nginx, quay.io/*, ghcr.io/acme/*]}")
        answer = decide(body, warm)
        assert answer == decide(body, fresh)
        assert answer == decide(body, warm)  # now every well-formed image has a verdict
        images = site_images(spec)
        if images is not None:
            assert answer.allowed == all(fresh.images.fault(image) is None for image in images)
        else:
            assert (answer.allowed, answer.code) == (False, 422)

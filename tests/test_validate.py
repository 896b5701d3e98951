"""The validating decision, on reviews decoded exactly as the server decodes them."""

from __future__ import annotations

import copy
import logging
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.reviews import WORKLOADS, container, fixture, pod_create, pod_review, pod_spec, review, workload
from webhook.admission.deadline import NEVER, Deadline
from webhook.admission.review import Request, Response, decode_review
from webhook.admission.validate import validate
from webhook.admission.webhook import Webhook
from webhook.policy.model import Policy, load_policy, parse_policy
from webhook.policy.podspecs import CONTAINER_LISTS

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


def test_empty_allowlist_denies_everything() -> None:
    assert not decide(pod_review("registry.k8s.io/pause"), policy("images: {allow: []}")).allowed


@pytest.mark.parametrize(
    ("mangle", "field"),
    [
        (lambda spec: spec["containers"][0].update(image=42), "spec.containers[0]: image is a number"),
        (lambda spec: spec["containers"][0].update(image=None), "spec.containers[0]: has no image"),
        (lambda spec: spec.update(containers={"a": container("a", "nginx")}), "spec.containers: is not a list"),
        (lambda spec: spec.update(initContainers=["nginx"]), "spec.initContainers[0]: is not an object"),
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


def test_the_readme_shows_the_real_kubectl_run_denial() -> None:
    from tests.conftest import REPO  # noqa: PLC0415

    readme = (REPO / "README.md").read_text()
    shown = readme.split('admission webhook "validate.admission-webhook.sealyun.com" denied the request: ', 1)[1]
    shown = shown.split("\n", 1)[0]
    pod = workload("Pod", {"containers": [container("evil", "evil.example.com/x")]}, name="evil", namespace="default")
    answer = decide(review(pod))
    assert answer.message == shown


IMAGE_POOL = ["nginx", "nginx:1.27", "quay.io/app/x:1", "ghcr.io/acme/api@sha256:" + "a" * 64, "evil.io/miner:1",
              "docker.io/acmeevil/x", "Bad/Image:1", "", "registry.k8s.io.evil.com/pause"]
odd_container = st.sampled_from([{"name": "odd"}, {"name": "odd", "image": 5}, {"name": "odd", "image": ["x"]}, "x"])
some_containers = st.lists(st.one_of(st.sampled_from(IMAGE_POOL).map(lambda image: container("c", image)),
                                     odd_container), max_size=4)


@settings(max_examples=300, deadline=None)
@given(specs=st.lists(st.fixed_dictionaries({}, optional={"containers": some_containers,
                                                          "initContainers": some_containers,
                                                          "ephemeralContainers": some_containers}),
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
        containers = [c for name in CONTAINER_LISTS for c in spec.get(name, [])]
        if all(type(c) is dict and type(c.get("image")) is str for c in containers):
            images = [c["image"] for c in containers]
            assert answer.allowed == all(fresh.images.fault(image) is None for image in images)
        else:
            assert (answer.allowed, answer.code) == (False, 422)

"""Properties of mutation over random objects and random policies.

- The patch, applied by jsonpatch, gives what a naive reference defaulting of the raw
  ``set:`` trees gives, and holds only ``add`` and ``replace``.
- Mutation is idempotent: mutating the patched object gives no patch (the API server may
  reinvoke us on our own output).
- Rewritten images are what a brute-force scan of the rules predicts.
"""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any

import jsonpatch
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.reviews import applied, container, image_volume, review
from webhook.admission.deadline import NEVER
from webhook.admission.mutate import mutate
from webhook.admission.patch import PatchError, apply, diff, pointer_parts
from webhook.admission.review import decode_review
from webhook.policy.model import Policy, PolicyError, PolicySpec
from webhook.policy.references import InvalidReference, parse_reference
from webhook.policy.rewrite import parse_prefix

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
# Few names, so that defaults and objects often meet; "/" and "~" exercise pointer escaping.
NAMES = ["spec", "a", "items", "x.io/y", "t~0", "n"]
VALUES = st.booleans() | st.integers(-2, 2) | st.sampled_from(["", "s", "0"]) | st.just(1.5)
SCALARS = st.none() | VALUES
LEAVES = VALUES | st.lists(SCALARS, max_size=2) | st.just({})  # a default is never null
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(NAMES), inner, max_size=4),
    max_leaves=15,
)
OBJECTS = st.dictionaries(st.sampled_from(NAMES), JSON, max_size=4)


@st.composite
def set_trees(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name in draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True)):
        shape = draw(st.sampled_from(["leaf", "branch", "each"] if depth < 3 else ["leaf"]))
        if shape == "leaf":
            tree[name] = draw(LEAVES)
        elif shape == "branch":
            tree[name] = draw(set_trees(depth + 1))
        else:
            tree[f"{name}[*]"] = draw(set_trees(depth + 1))
    return tree


RULES = st.lists(
    st.fixed_dictionaries({"versions": st.sampled_from([["*"], ["v1"], ["v1", "v2"]]), "set": set_trees()}),
    min_size=1, max_size=3,
)


def load(document: dict[str, Any]) -> Policy:
    """Compile as parse_policy does, minus reading YAML (most of its time); refused policies are skipped."""
    try:
        return Policy.compile(PolicySpec.model_validate(document), "random.yaml", json.dumps(document).encode())
    except (PolicyError, ValidationError):
        assume(False)
        raise


def reference_defaults(tree: dict[str, Any], obj: dict[str, Any]) -> None:
    """The meaning of a ``set:`` tree, written directly against the YAML, for comparison."""
    for key, value in tree.items():
        if key.endswith("[*]"):
            items = obj.get(key[:-3])
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict):
                    reference_defaults(value, item)
        elif isinstance(value, dict) and value:
            if obj.get(key) is None:
                fresh: dict[str, Any] = {}
                reference_defaults(value, fresh)
                if fresh:
                    obj[key] = fresh
            elif isinstance(obj[key], dict):
                reference_defaults(value, obj[key])
        elif obj.get(key) is None:
            obj[key] = copy.deepcopy(value)


def run(body: dict[str, Any], policy: Policy) -> list[dict[str, Any]]:
    answer = mutate(decode_review(orjson.dumps(body)), policy, NEVER)
    assert answer.allowed
    return [dict(op) for op in answer.patch]


def again(body: dict[str, Any], obj: Any) -> dict[str, Any]:
    """The review the API server sends when it reinvokes us on the patched object."""
    body = copy.deepcopy(body)
    body["request"]["object"] = obj
    body["request"]["uid"] += "-round-1"
    return body


@SETTINGS
@given(
    rules=RULES,
    obj=OBJECTS,
    old=st.none() | OBJECTS,
    version=st.sampled_from(["v1", "v2", "v3"]),
    operation=st.sampled_from(["CREATE", "UPDATE"]),
)
def test_defaults_match_the_reference_and_are_idempotent(
    rules: list[dict[str, Any]], obj: dict[str, Any], old: Any, version: str, operation: str
) -> None:
    policy = load({
        "images": {"mode": "off"},
        "defaults": [{"group": "g.io", "kinds": ["K"], **rule} for rule in rules],
    })
    body = review(obj, kind="K", operation=operation, old=old if operation == "UPDATE" else None)
    body["request"]["kind"] = {"group": "g.io", "version": version, "kind": "K"}

    result = applied(obj, run(body, policy))
    expected = copy.deepcopy(obj)
    for rule in rules:
        if "*" in rule["versions"] or version in rule["versions"]:
            reference_defaults(rule["set"], expected)
    # Exact JSON, so 1, 1.0 and true differ; key order is not part of a JSON object's meaning.
    assert orjson.dumps(result, option=orjson.OPT_SORT_KEYS) == orjson.dumps(expected, option=orjson.OPT_SORT_KEYS)
    assert run(again(body, result), policy) == []


IMAGES = [
    "nginx", "nginx:1.27", "docker.io/library/nginx@sha256:" + "ab" * 32, "bitnami/redis:7", "quay.io/acme/app",
    "quay.io/acme", "ghcr.io/acme/tools:1", "ghcr.io/acme/tools/jq", "localhost:5000/a", "REGISTRY-1.docker.io/x/y",
    "mirror.acme.io/hub/library/nginx", "m2.io/x/quay/acme/app", "registry.k8s.io/pause", "Bad/Image", "a@b",
]
FROMS = ["docker.io", "docker.io/library", "index.docker.io/bitnami", "quay.io", "quay.io/acme",
         "ghcr.io/acme/tools", "localhost:5000", "mirror.acme.io", "m2.io/x"]
TOS = ["mirror.acme.io/hub", "mirror.acme.io", "m2.io/x", "m2.io/x/quay", "docker.io/acme/mirror", "quay.io/acme"]
CONTAINERS = st.lists(st.builds(container, st.sampled_from(["a", "b"]), st.sampled_from(IMAGES)), max_size=3)
VOLUMES = st.lists(st.builds(image_volume, st.sampled_from(["v", "w"]), st.sampled_from(IMAGES))
                   | st.just({"name": "cache", "emptyDir": {}}), max_size=3)


def site_image(list_name: str, item: dict[str, Any]) -> str | None:
    """The image at a site: a container's image, an image volume's reference; None for other volumes."""
    return item.get("image", {}).get("reference") if list_name == "volumes" else item["image"]


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    for list_name in ("containers", "initContainers", "ephemeralContainers"):
        if draw(st.booleans()):
            spec[list_name] = draw(CONTAINERS)
            for item in spec[list_name]:
                if draw(st.booleans()):
                    item["securityContext"] = draw(st.sampled_from([{}, {"allowPrivilegeEscalation": True}, None]))
    if draw(st.booleans()):
        spec["volumes"] = draw(VOLUMES)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "shop"}, "spec": spec}


def brute_force_rewrite(image: str, pairs: list[tuple[str, str]]) -> str:
    try:
        ref = parse_reference(image)
    except InvalidReference:
        return image
    matching = [(parse_prefix(a), parse_prefix(b)) for a, b in pairs]
    matching = [(a, b) for a, b in matching if a.registry == ref.registry and ref.path[: len(a.path)] == a.path]
    if not matching:
        return image
    source, target = max(matching, key=lambda pair: len(pair[0].path))
    if source == target:
        return image
    moved = "/".join((target.registry, *target.path, *ref.path[len(source.path):]))
    return moved + (f":{ref.tag}" if ref.tag else "") + (f"@{ref.digest}" if ref.digest else "")


@SETTINGS
@given(
    pairs=st.lists(st.tuples(st.sampled_from(FROMS), st.sampled_from(TOS)), max_size=4, unique_by=lambda p: p[0]),
    pod=pods(),
    old=st.none() | pods(),
    sub_resource=st.sampled_from([None, None, "ephemeralcontainers", "status"]),
)
def test_pod_mutation_is_idempotent_and_rewrites_as_predicted(
    pairs: list[tuple[str, str]], pod: dict[str, Any], old: Any, sub_resource: str | None
) -> None:
    policy = load({
        "images": {"mode": "off", "rewrite": [{"from": a, "to": b} for a, b in pairs]},
        "defaults": [{"group": "", "versions": ["v1"], "kinds": ["Pod"],
                      "set": {"spec": {"containers[*]": {"securityContext": {"allowPrivilegeEscalation": False}}}}}],
    })
    operation = "UPDATE" if old is not None or sub_resource else "CREATE"
    body = review(pod, operation=operation, old=old, sub_resource=sub_resource)

    result = applied(pod, run(body, policy))
    assert run(again(body, result), policy) == []

    kept = {site_image(name, item) for name, items in (old or {}).get("spec", {}).items() for item in items}
    lists = {None: ("containers", "initContainers", "ephemeralContainers", "volumes"),
             "ephemeralcontainers": ("ephemeralContainers",)}.get(sub_resource, ())
    for list_name, items in pod["spec"].items():
        for before, after in zip(items, result["spec"][list_name], strict=True):
            image = site_image(list_name, before)
            if image is None:
                assert after == before
                continue
            expected = image if list_name not in lists or image in kept else brute_force_rewrite(image, pairs)
            assert site_image(list_name, after) == expected


def additive_change(value: Any, data: st.DataObject) -> Any:
    """A change of the kind mutation makes: fill nulls, add keys, replace strings; never remove."""
    if value is None:
        return data.draw(st.sampled_from([0, False, {}, [1]]))
    if isinstance(value, str):
        return data.draw(st.sampled_from([value, value + "!"]))
    if isinstance(value, dict):
        changed = {key: additive_change(item, data) for key, item in value.items()}
        for key in data.draw(st.lists(st.sampled_from(["new", "a/b", "c~d"]), max_size=2)):
            changed.setdefault(key, data.draw(JSON))
        return changed
    if isinstance(value, list):
        return [additive_change(item, data) for item in value]
    return value


@SETTINGS
@given(original=OBJECTS, data=st.data())
def test_diff_holds_only_add_and_replace_and_jsonpatch_reproduces_the_change(
    original: dict[str, Any], data: st.DataObject
) -> None:
    changed = additive_change(original, data)
    operations = diff(original, changed)
    assert orjson.dumps(applied(original, operations)) == orjson.dumps(changed)
    for index in range(len(operations)):  # minimal: without any one operation the result is wrong
        rest = operations[:index] + operations[index + 1 :]
        with contextlib.suppress(jsonpatch.JsonPatchException):  # a later operation needed this one's parent
            assert orjson.dumps(applied(original, rest)) != orjson.dumps(changed)


@SETTINGS
@given(original=OBJECTS, data=st.data())
def test_our_apply_agrees_with_jsonpatch_on_our_patches(original: dict[str, Any], data: st.DataObject) -> None:
    """`webhook check` applies the mutating webhook's patch itself; it must land where the API server's would."""
    changed = additive_change(original, data)
    operations = diff(original, changed)
    before = orjson.dumps(original)
    assert orjson.dumps(apply(original, operations)) == orjson.dumps(applied(original, operations))
    assert orjson.dumps(original) == before  # untouched: apply works on a copy


def test_apply_is_as_strict_as_the_api_server() -> None:
    assert apply({"a": [1]}, [{"op": "add", "path": "/a/1", "value": 2}, {"op": "add", "path": "/a/-", "value": 3},
                              {"op": "replace", "path": "/a/0", "value": 0}, {"op": "add", "path": "/x~1y", "value": 4},
                              {"op": "add", "path": "/t~0", "value": 5}]) == {"a": [0, 2, 3], "x/y": 4, "t~": 5}
    for operation in ({"op": "add", "path": "/missing/b", "value": 1},  # add needs its parent
                      {"op": "replace", "path": "/b", "value": 1},  # replace needs its target
                      {"op": "replace", "path": "/a/1", "value": 1},
                      {"op": "add", "path": "/a/01", "value": 1},
                      {"op": "add", "path": "/a/3", "value": 1},
                      {"op": "remove", "path": "/a"},
                      {"op": "add", "path": "a", "value": 1}):
        with pytest.raises(PatchError):
            apply({"a": [1]}, [operation])
    assert pointer_parts({"a": [{"b/c": 1}]}, "/a/0/b~1c") == ["a", 0, "b/c"]
    assert pointer_parts({"a": {"0": 1}}, "/a/0") == ["a", "0"]  # a key that looks like an index


def test_diff_refuses_removals_and_length_changes() -> None:
    with pytest.raises(PatchError, match="/a~1b was removed"):
        diff({"a/b": 1}, {})
    with pytest.raises(PatchError, match="/l changed length"):
        diff({"l": [1]}, {"l": [1, 2]})
    with pytest.raises(PatchError, match="whole object"):
        diff(1, 2)


def test_diff_tells_json_types_apart() -> None:
    assert diff({"a": 1}, {"a": True}) == [{"op": "replace", "path": "/a", "value": True}]
    assert diff({"a": [1]}, {"a": [1.0]}) == [{"op": "replace", "path": "/a/0", "value": 1.0}]
    assert diff({"a": {"b": 0}}, {"a": {"b": False}}) == [{"op": "replace", "path": "/a/b", "value": False}]
    assert diff({"a": 1}, {"a": 1}) == []
    assert diff(1, 1) == [] and diff([{"a": 1}], [{"a": 1}]) == []
    assert diff({"a": {}}, {"a": []}) == [{"op": "replace", "path": "/a", "value": []}]

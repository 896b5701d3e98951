"""The ``defaults:`` section: what it means, and every refusal at load, with file, key and problem."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from webhook.policy.defaults import Branch, Each, Leaf, apply, compile_tree, render_path
from webhook.policy.model import PolicyError, parse_policy

PROJECT = "group: example.sealyun.com\n    versions: ['*']\n    kinds: [Project]"


def load(text: str):  # type: ignore[no-untyped-def]
    return parse_policy(text.encode(), "policy.yaml")


def defaults_policy(set_yaml: str, head: str = PROJECT, images: str = "images: {mode: off}") -> str:
    return f"{images}\ndefaults:\n  - {head}\n    set:\n{set_yaml}"


def test_compile_tree_shapes() -> None:
    tree = compile_tree({"spec": {"containers[*]": {"a": 1}, "empty": {}, "list": [1, None]}})
    assert tree == Branch((("spec", Branch((
        ("containers", Each(Branch((("a", Leaf(1)),)))),
        ("empty", Leaf({})),
        ("list", Leaf([1, None])),
    ))),))


def test_apply_sets_absent_and_null_only() -> None:
    tree = compile_tree({"a": 1, "b": 2, "c": 3, "m": {"x": {"y": True}}, "l[*]": {"k": "v"}})
    obj: dict[str, Any] = {"a": None, "b": 0, "l": [{}, {"k": None}, {"k": ""}, 7, None]}
    done = apply(tree, obj)
    assert obj == {"a": 1, "b": 0, "c": 3, "m": {"x": {"y": True}}, "l": [{"k": "v"}, {"k": "v"}, {"k": ""}, 7, None]}
    assert [str(d) for d in done] == [
        "defaulted a=1", "defaulted c=3", "defaulted m.x.y=true", "defaulted l[0].k=\"v\"", "defaulted l[1].k=\"v\"",
    ]
    again = copy.deepcopy(obj)
    assert apply(tree, again) == [] and again == obj


def test_a_branch_holding_only_list_defaults_creates_nothing() -> None:
    obj: dict[str, Any] = {}
    assert apply(compile_tree({"spec": {"containers[*]": {"a": 1}}}), obj) == []
    assert obj == {}


def test_a_branch_is_not_forced_onto_a_value_of_another_type() -> None:
    tree = compile_tree({"spec": {"a": 1}, "items[*]": {"b": 2}})
    for spec in ("text", 5, [1], True):
        obj = {"spec": spec, "items": {"not": "a list"}}
        assert apply(tree, obj) == []
        assert obj == {"spec": spec, "items": {"not": "a list"}}


def test_render_path() -> None:
    assert render_path(["spec", "containers", 2, "securityContext"]) == "spec.containers[2].securityContext"
    assert render_path(["metadata", "labels", "app.kubernetes.io/name"]) == 'metadata.labels["app.kubernetes.io/name"]'
    assert render_path(["containers[*]", "x"]) == "containers[*].x"
    assert render_path(["a b"]) == '["a b"]'


@pytest.mark.parametrize(
    ("set_yaml", "key", "problem"),
    [
        ("      {}\n", "defaults[0].set", "must set at least one field"),
        ("      spec: {replicas: null}\n", "defaults[0].set.spec.replicas", "cannot be null"),
        ("      spec: {when: !!binary aGk=}\n", "defaults[0].set.spec.when", "is a YAML !!binary value, not a JSON"),
        ("      spec: {when: !!set {a}}\n", "defaults[0].set.spec.when", "is a YAML !!set, not a JSON value"),
        ("      spec: {x: .inf}\n", "defaults[0].set.spec.x", "not a JSON number"),
        # orjson reads such numbers in a request as floats, but cannot write them: refused at load.
        ("      spec: {replicas: 9223372036854775808}\n", "defaults[0].set.spec.replicas", "too large for the API"),
        ("      spec: {x: -9223372036854775809}\n", "defaults[0].set.spec.x", "too large for the API"),
        ("      spec: {x: [1, 99999999999999999999]}\n", "defaults[0].set.spec.x", "too large for the API"),
        ("      spec: {'a[*]': 1}\n", "defaults[0].set.spec.a[*]", "takes a mapping of defaults"),
        ("      spec: {'a[*]': {}}\n", "defaults[0].set.spec.a[*]", "takes a mapping of defaults"),
        ("      spec: {'a[0]': 1}\n", 'defaults[0].set.spec["a[0]"]', "'[*]' may only end a key"),
        ("      spec: {'a[*].b': 1}\n", 'defaults[0].set.spec["a[*].b"]', "'[*]' may only end a key"),
        ("      spec: {'*': 1}\n", 'defaults[0].set.spec["*"]', "'[*]' may only end a key"),
        ("      spec: {'[*]': {a: 1}}\n", 'defaults[0].set.spec["[*]"]', "'[*]' may only end a key"),
        ("      spec: {'': 1}\n", 'defaults[0].set.spec[""]', "non-empty strings"),
        ("      spec: {1: a}\n", 'defaults[0].set.spec["1"]', "non-empty strings"),
        ("      spec: {x: {1: a}}\n", 'defaults[0].set.spec.x["1"]', "non-empty strings"),
        ("      spec: {x: [{1: a}]}\n", "defaults[0].set.spec.x", "keys must be strings"),
        ("      spec:\n        c: [1]\n        c[*]: {a: 1}\n", "defaults[0].set.spec.c[*]", "cannot both"),
        ("      metadata: {name: x}\n", "defaults[0].set.metadata.name", "cannot be defaulted"),
        ("      metadata: {namespace: x}\n", "defaults[0].set.metadata.namespace", "cannot be defaulted"),
        ("      metadata: {generateName: x-}\n", "defaults[0].set.metadata.generateName", "cannot be defaulted"),
        ("      metadata: x\n", "defaults[0].set.metadata", "must be a mapping"),
        ("      kind: Other\n", "defaults[0].set.kind", "cannot be defaulted"),
        ("      status: {phase: x}\n", "defaults[0].set.status", "cannot be defaulted"),
        ("      metadata: {labels: {a: 1}}\n", "defaults[0].set.metadata.labels.a", "must be strings"),
        ("      metadata: {annotations: {a: true}}\n", "defaults[0].set.metadata.annotations.a", "must be strings"),
        ("      metadata: {labels: [a]}\n", "defaults[0].set.metadata.labels", "mapping of keys to string"),
    ],
)
def test_set_refusals(set_yaml: str, key: str, problem: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load(defaults_policy(set_yaml))
    assert (caught.value.source, caught.value.key) == ("policy.yaml", key)
    assert problem in caught.value.problem


def test_an_unquoted_date_is_the_text_written_as_kubectl_would_send_it() -> None:
    """sigs.k8s.io/yaml hands a timestamp on as the string written, so that is what the API server stores."""
    dates = "since: 2024-01-01, at: 2024-01-01 10:00:00, tagged: !!timestamp 2001-12-14"
    policy = load(defaults_policy(f"      spec: {{{dates}}}\n"))
    (rule,) = policy.defaults.rules
    assert rule.tree == compile_tree({"spec": {"since": "2024-01-01", "at": "2024-01-01 10:00:00",
                                               "tagged": "2001-12-14"}})


@pytest.mark.parametrize(
    ("head", "key", "problem"),
    [
        ("group: g\n    versions: []\n    kinds: [K]", "defaults[0].versions", "at least 1"),
        ("group: g\n    versions: [v1]\n    kinds: []", "defaults[0].kinds", "at least 1"),
        ("group: g\n    versions: ['']\n    kinds: [K]", "defaults[0].versions[0]", "at least 1"),
        ("group: g\n    versions: [v1]\n    kinds: ['*']", "defaults[0].kinds[0]", "only in versions"),
        ("group: '*'\n    versions: [v1]\n    kinds: [K]", "defaults[0].group", "only in versions"),
        ("group: g\n    versions: [v1]\n    kinds: [1]", "defaults[0].kinds[0]", "string"),
        ("versions: [v1]\n    kinds: [K]", "defaults[0].group", "is required"),
        ("group: g\n    versions: [v1]\n    kinds: [K]\n    verbs: [CREATE]", "defaults[0].verbs", "unknown key"),
    ],
)
def test_rule_refusals(head: str, key: str, problem: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load(defaults_policy("      spec: {a: 1}\n", head=head))
    assert caught.value.key == key
    assert problem in caught.value.problem


def test_a_rule_without_set_is_refused() -> None:
    with pytest.raises(PolicyError) as caught:
        load("images: {mode: off}\ndefaults: [{group: g, versions: [v1], kinds: [K]}]")
    assert (caught.value.key, caught.value.problem) == ("defaults[0].set", "is required")


@pytest.mark.parametrize(
    ("second", "key", "problem"),
    [
        ("{spec: {a: 2}}", "defaults[1].set.spec.a", "conflicts with defaults[0], which sets it to 1"),
        ("{spec: {a: {b: 1}}}", "defaults[1].set.spec.a", "a value in one rule"),
        ("{spec: {'l': [1]}}", "defaults[1].set.spec.l", "a value in one rule"),
        ("{spec: {'l[*]': {x: 1}, 'm': {'n[*]': {y: 2}}, 'a': true}}", "defaults[1].set.spec.a", "sets it to 1"),
    ],
)
def test_rules_that_disagree_on_one_kind_are_refused(second: str, key: str, problem: str) -> None:
    text = (
        "images: {mode: off}\n"
        "defaults:\n"
        "  - {group: g, versions: ['*'], kinds: [K], set: {spec: {a: 1, 'l[*]': {x: 1}}}}\n"
        f"  - {{group: g, versions: [v2], kinds: [K], set: {second}}}\n"
    )
    with pytest.raises(PolicyError) as caught:
        load(text)
    assert caught.value.key == key
    assert problem in caught.value.problem and "(both apply to g/v2 K)" in caught.value.problem


def test_rules_that_never_meet_may_differ() -> None:
    policy = load(
        "images: {mode: off}\n"
        "defaults:\n"
        "  - {group: g, versions: [v1], kinds: [K], set: {spec: {a: 1}}}\n"
        "  - {group: g, versions: [v2], kinds: [K], set: {spec: {a: 2}}}\n"
        "  - {group: h, versions: [v1], kinds: [K], set: {spec: {a: 3}}}\n"
        "  - {group: g, versions: [v1], kinds: [L], set: {spec: {a: 4}}}\n"
        "  - {group: g, versions: [v1], kinds: [K], set: {spec: {a: 1}}}\n"  # agrees: fine
    )
    assert policy.defaults.tree_for("g", "v2", "K") == Branch((("spec", Branch((("a", Leaf(2)),))),))
    assert policy.defaults.tree_for("g", "v3", "K") is None


# --- defaults that would break the policy's own rules --------------------------------------

IMAGES = "images: {allow: [registry.k8s.io, ghcr.io/acme/*]}"
POD = "group: ''\n    versions: [v1]\n    kinds: [Pod]"
DEPLOYMENT = "group: apps\n    versions: [v1]\n    kinds: [Deployment]"
LEGACY = "group: extensions\n    versions: [v1beta1]\n    kinds: [DaemonSet]"


@pytest.mark.parametrize(
    ("head", "set_yaml", "problem"),
    [
        (POD, "      spec:\n        containers[*]: {image: evil.io/x}\n",
         "would give a Pod the image 'evil.io/x' at spec.containers[0], which its image rules refuse: "
         "evil.io/x is not allowed by images.allow (registry.k8s.io, ghcr.io/acme/*)"),
        (POD, "      spec:\n        initContainers: [{name: a, image: registry.k8s.io/a}, {name: b, image: nginx}]\n",
         "the image 'nginx' at spec.initContainers[1]"),
        (DEPLOYMENT, "      spec:\n        template: {spec: {'ephemeralContainers[*]': {image: 'Bad/Image'}}}\n",
         "at spec.template.spec.ephemeralContainers[0], which its image rules refuse: does not parse"),
        (POD, "      spec:\n        containers[*]: {image: 5}\n", "would make a Pod unreadable: spec.containers[0]"),
        (POD, "      spec:\n        initContainers: [{name: a}]\n",
         "would make a Pod unreadable: spec.initContainers[0]: has no image"),
        (POD, "      spec:\n        initContainers: x\n", "unreadable: spec.initContainers: is not a list"),
        (DEPLOYMENT, "      spec:\n        template: {spec: 5}\n", "unreadable: spec.template.spec: is not an object"),
        (POD, "      spec:\n        volumes[*]: {image: {reference: evil.io/x}}\n",
         "would give a Pod the image 'evil.io/x' at spec.volumes[0].image.reference, which its image rules refuse"),
        (DEPLOYMENT, "      spec:\n        template: {spec: {volumes: [{name: t, image: {reference: 'sha256:ab'}}]}}\n",
         "at spec.template.spec.volumes[0].image.reference, which its image rules refuse: is an image ID"),
        (LEGACY, "      spec:\n        template: {spec: {'containers[*]': {image: evil.io/x}}}\n",
         "would give a DaemonSet the image 'evil.io/x' at spec.template.spec.containers[0]"),
        (POD, "      spec:\n        volumes[*]: {image: {pullPolicy: Always}}\n",  # every volume an image volume
         "would make a Pod unreadable: spec.volumes[0].image: has no reference"),
    ],
)
def test_defaults_producing_refused_images_fail_load(head: str, set_yaml: str, problem: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load(defaults_policy(set_yaml, head=head, images=IMAGES))
    assert caught.value.key == "defaults[0].set"
    assert problem in caught.value.problem


def test_defaults_with_allowed_images_load() -> None:
    text = defaults_policy("      spec:\n        containers[*]: {image: ghcr.io/acme/app}\n", head=POD, images=IMAGES)
    assert load(text).defaults.tree_for("", "v1", "Pod") is not None
    text = defaults_policy("      spec:\n        volumes[*]: {image: {reference: ghcr.io/acme/tools}}\n", head=POD,
                           images=IMAGES)
    assert load(text).defaults.tree_for("", "v1", "Pod") is not None
    # With mode off nothing is judged, so nothing can fail.
    assert load(defaults_policy("      spec:\n        containers[*]: {image: evil.io/x}\n", head=POD))


def test_default_images_are_judged_after_rewriting() -> None:
    images = "images:\n  allow: [mirror.acme.io/*]\n  rewrite: [{from: docker.io, to: mirror.acme.io/hub}]"
    text = defaults_policy("      spec:\n        containers[*]: {image: nginx}\n", head=POD, images=images)
    assert load(text)
    digest = "images: {allow: [registry.k8s.io], requireDigest: true}"
    with pytest.raises(PolicyError, match=re.escape("has no digest, and images.requireDigest is true")):
        load(defaults_policy("      spec:\n        containers[*]: {image: registry.k8s.io/a}\n", head=POD,
                             images=digest))


def test_image_checks_only_concern_kinds_with_pod_specs() -> None:
    # A Project has no pod spec: an "image" field there is just data.
    assert load(defaults_policy("      spec: {containers: [{image: evil.io/x}]}\n", images=IMAGES))

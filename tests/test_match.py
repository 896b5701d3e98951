"""The match block of scopes and exceptions: each key, AND across keys, OR within a list,
label selectors as Kubernetes reads them, and what is refused at load."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.reviews import pod_spec, review, workload
from webhook.admission.review import Request, decode_review
from webhook.policy.match import LabelSelector, Match, MatchSpec
from webhook.policy.model import PolicyError, parse_policy

NS_LABELS = {"shop": {"env": "prod", "tier": "gold"}, "dev": {"env": "dev"}}


def request(*, namespace: str | None = "shop", kind: str = "Pod", user: str = "alice",
            groups: Any = ("devs",), labels: Any = None, operation: str = "CREATE",
            old_labels: Any = None) -> Request:
    obj = workload(kind, pod_spec("nginx"), namespace=namespace or "")
    obj["metadata"]["labels"] = labels if labels is not None else {"app": "web"}
    old = None
    if operation == "UPDATE":
        old = workload(kind, pod_spec("nginx"), namespace=namespace or "")
        old["metadata"]["labels"] = old_labels or {}
    body = review(obj, namespace=namespace, operation=operation, old=old)
    body["request"]["userInfo"] = {"username": user, "groups": list(groups) if groups is not None else None}
    return decode_review(orjson.dumps(body))


def selects(match: dict[str, Any], req: Request) -> bool:
    return Match.compile(MatchSpec.model_validate(match)).selects(req, NS_LABELS.get)


@pytest.mark.parametrize(("match", "req", "expected"), [
    ({"namespaces": ["shop"]}, request(), True),
    ({"namespaces": ["dev", "shop"]}, request(), True),  # OR within a list
    ({"namespaces": ["dev"]}, request(), False),
    ({"namespaces": ["sh*"]}, request(), True),
    ({"namespaces": ["*op"]}, request(), True),
    ({"namespaces": ["s*p"]}, request(), True),
    ({"namespaces": ["*"]}, request(), True),
    ({"namespaces": ["*"]}, request(namespace=None), False),  # a cluster-scoped request has no namespace
    ({"namespaces": ["team-a-*"]}, request(namespace="team-a-web"), True),
    ({"namespaces": ["team-a-*"]}, request(namespace="team-ab"), False),
    ({"namespaces": ["sho"]}, request(), False),  # whole names, not prefixes
    ({"kinds": ["Pod"]}, request(), True),
    ({"kinds": ["Deployment", "CronJob"]}, request(kind="CronJob"), True),
    ({"kinds": ["pod"]}, request(), False),  # exactly
    ({"users": ["alice"]}, request(), True),
    ({"users": ["bob"]}, request(), False),
    ({"groups": ["admins", "devs"]}, request(), True),  # any of the request's groups
    ({"groups": ["admins"]}, request(), False),
    ({"groups": ["admins"]}, request(groups=None), False),
    ({"objectSelector": {"matchLabels": {"app": "web"}}}, request(), True),
    ({"objectSelector": {"matchLabels": {"app": "db"}}}, request(), False),
    ({"objectSelector": {}}, request(labels={}), True),  # the empty selector matches everything
    ({"namespaceSelector": {}}, request(namespace="unknown"), True),
    ({"namespaceSelector": {"matchLabels": {"env": "prod"}}}, request(), True),
    ({"namespaceSelector": {"matchLabels": {"env": "prod"}}}, request(namespace="dev"), False),
    ({"namespaceSelector": {"matchLabels": {"env": "prod"}}}, request(namespace="unknown"), False),
    # AND across keys
    ({"namespaces": ["shop"], "kinds": ["Pod"], "users": ["alice"]}, request(), True),
    ({"namespaces": ["shop"], "kinds": ["Deployment"]}, request(), False),
    ({"namespaces": ["dev"], "kinds": ["Pod"]}, request(), False),
    ({"kinds": ["Pod"], "objectSelector": {"matchLabels": {"app": "db"}}}, request(), False),
    ({"namespaceSelector": {"matchLabels": {"env": "prod"}}, "groups": ["devs"]}, request(), True),
    ({"namespaceSelector": {"matchLabels": {"env": "prod"}}, "groups": ["ops"]}, request(), False),
])
def test_each_key_and_how_keys_combine(match: dict[str, Any], req: Request, expected: bool) -> None:
    assert selects(match, req) is expected


@pytest.mark.parametrize(("expression", "labels", "expected"), [
    ({"key": "tier", "operator": "In", "values": ["gold", "silver"]}, {"tier": "gold"}, True),
    ({"key": "tier", "operator": "In", "values": ["silver"]}, {"tier": "gold"}, False),
    ({"key": "tier", "operator": "In", "values": ["gold"]}, {}, False),
    ({"key": "tier", "operator": "NotIn", "values": ["silver"]}, {"tier": "gold"}, True),
    ({"key": "tier", "operator": "NotIn", "values": ["gold"]}, {"tier": "gold"}, False),
    ({"key": "tier", "operator": "NotIn", "values": ["gold"]}, {}, True),  # as Kubernetes: absent is not in
    ({"key": "tier", "operator": "Exists"}, {"tier": ""}, True),
    ({"key": "tier", "operator": "Exists"}, {}, False),
    ({"key": "tier", "operator": "DoesNotExist"}, {}, True),
    ({"key": "tier", "operator": "DoesNotExist"}, {"tier": "gold"}, False),
])
def test_every_selector_operator(expression: dict[str, Any], labels: dict[str, str], expected: bool) -> None:
    assert LabelSelector.model_validate({"matchExpressions": [expression]}).matches(labels) is expected


def test_match_labels_and_expressions_are_anded() -> None:
    selector = LabelSelector.model_validate({"matchLabels": {"env": "prod"},
                                             "matchExpressions": [{"key": "tier", "operator": "Exists"}]})
    assert selector.matches({"env": "prod", "tier": "x"})
    assert not selector.matches({"env": "prod"})
    assert not selector.matches({"tier": "x"})


def test_update_uses_the_new_objects_labels() -> None:
    match = {"objectSelector": {"matchLabels": {"app": "redis"}}}
    assert selects(match, request(operation="UPDATE", labels={"app": "redis"}, old_labels={"app": "web"}))
    assert not selects(match, request(operation="UPDATE", labels={"app": "web"}, old_labels={"app": "redis"}))


def test_odd_labels_and_groups_are_read_as_none() -> None:
    req = request(labels={"app": 3, "ok": "1"}, groups=None)
    assert req.labels == {"ok": "1"}
    assert req.groups == []


@given(st.text(alphabet="ab-*", min_size=1, max_size=6), st.text(alphabet="ab-", min_size=1, max_size=8))
@settings(max_examples=300, deadline=None)
def test_a_glob_is_star_for_any_run_of_characters(pattern: str, namespace: str) -> None:
    import fnmatch  # noqa: PLC0415 - the reference: fnmatch's '*' means the same, and there is no '?' or '['

    expected = fnmatch.fnmatchcase(namespace, pattern)
    assert Match.compile(MatchSpec(namespaces=[pattern])).namespace_holds(namespace, NS_LABELS.get) is expected


POLICY_HEAD = "images: {allow: [registry.k8s.io]}\n"


@pytest.mark.parametrize(("text", "key", "problem"), [
    ("scopes: [{name: a, match: {}}]", "scopes[0].match", "must not be empty"),
    ("exceptions: [{name: a, reason: r, expires: '2030-01-01T00:00:00Z', match: {}, images: [x]}]",
     "exceptions[0].match", "must not be empty"),
    ("scopes: [{name: a, images: {}}]", "scopes[0].match", "is required"),
    ("scopes: [{name: a, match: {namespace: [x]}}]", "scopes[0].match.namespace",
     "unknown key (did you mean 'namespaces'?)"),
    ("scopes: [{name: a, match: {namespaceSelector: {matchExpressions: [{key: k, operator: Has}]}}}]",
     "scopes[0].match.namespaceSelector.matchExpressions[0].operator", "Input should be"),
    ("scopes: [{name: a, match: {objectSelector: {matchExpressions: [{key: k, operator: In}]}}}]",
     "scopes[0].match.objectSelector.matchExpressions[0]", "operator In needs a non-empty 'values'"),
    ("scopes: [{name: a, match: {objectSelector: {matchExpressions: [{key: k, operator: NotIn, values: []}]}}}]",
     "scopes[0].match.objectSelector.matchExpressions[0]", "operator NotIn needs a non-empty 'values'"),
    ("scopes: [{name: a, match: {objectSelector: {matchExpressions: [{key: k, operator: Exists, values: [v]}]}}}]",
     "scopes[0].match.objectSelector.matchExpressions[0]", "operator Exists takes no 'values'"),
    ("scopes: [{name: a, match: {objectSelector: {matchExpressions: [{key: k, operator: DoesNotExist, "
     "values: [v]}]}}}]",
     "scopes[0].match.objectSelector.matchExpressions[0]", "operator DoesNotExist takes no 'values'"),
    ("scopes: [{name: a, match: {namespaces: [Team_A]}}]", "scopes[0].match.namespaces",
     "'Team_A' is not a namespace pattern"),
    ("scopes: [{name: a, match: {namespaces: ['a?']}}]", "scopes[0].match.namespaces", "is not a namespace pattern"),
    ("scopes: [{name: a, match: {namespaces: []}}]", "scopes[0].match.namespaces", "at least 1 item"),
    ("scopes: [{name: a, match: {kinds: [Pod]}, images: {rewrite: []}}]", "scopes[0].images.rewrite",
     "unknown key"),
    ("scopes: [{name: 'a*', match: {kinds: [Pod]}}]", "scopes[0].name", "must be a DNS-1123 label"),
    ("scopes: [{name: Team, match: {kinds: [Pod]}}]", "scopes[0].name", "must be a DNS-1123 label"),
])
def test_load_refusals_name_the_file_and_key(text: str, key: str, problem: str) -> None:
    with pytest.raises(PolicyError) as refused:
        parse_policy((POLICY_HEAD + text).encode(), "team.yaml")
    assert refused.value.source == "team.yaml"
    assert refused.value.key == key
    assert problem in refused.value.problem
    assert str(refused.value).startswith(f"policy file team.yaml: {key}: ")


def test_a_match_spec_alone_refuses_an_empty_block() -> None:
    with pytest.raises(ValidationError):
        MatchSpec.model_validate({})

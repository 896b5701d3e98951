"""``defaults`` rules with ``match``: which requests each rule selects, file order with the first
setter winning, which rules are still conflict-checked, every refusal at load with its key, the
same answer from `webhook check`, and idempotence over random rules."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import ApiServerClient, ServerProcess
from tests.docs import Sandbox, doc_block, run_block
from tests.reviews import applied, decoded_patch, pod_review, project, review
from tests.test_check import check
from tests.test_mutate_properties import OBJECTS, SETTINGS, again, load, reference_defaults, run, set_trees
from webhook.admission.deadline import NEVER
from webhook.admission.mutate import mutate
from webhook.admission.review import Response, decode_review
from webhook.policy.model import Policy, PolicyError, parse_policy

PROJECT = "group: example.sealyun.com, versions: ['*'], kinds: [Project]"
NS_LABELS = {"payments": {"env": "prod"}, "shop": {"env": "dev"}}
# The issue's example: three replicas for Projects in production namespaces, one elsewhere.
REPLICAS = f"""\
images: {{mode: off}}
defaults:
  - {{{PROJECT}, match: {{namespaceSelector: {{matchLabels: {{env: prod}}}}}}, set: {{spec: {{replicas: 3}}}}}}
  - {{{PROJECT}, set: {{spec: {{replicas: 1, paused: false}}}}}}
"""


def policy(text: str) -> Policy:
    return parse_policy(text.encode(), "policy.yaml").seen_from(namespace_labels=NS_LABELS.get)


def rules(*lines: str) -> Policy:
    """A policy of Project defaults, one rule per line: its match (or "") and its set."""
    body = "".join(f"  - {{{PROJECT}, {line}}}\n" for line in lines)
    return policy(f"images: {{mode: off}}\ndefaults:\n{body}")


def mutated(p: Policy, body: dict[str, Any]) -> tuple[Any, Response]:
    answer = mutate(decode_review(orjson.dumps(body)), p, NEVER)
    assert answer.allowed
    return applied(body["request"]["object"], [dict(op) for op in answer.patch]), answer


def spec_after(p: Policy, spec: Any = None, *, namespace: str = "shop", user: str = "alice",
               groups: tuple[str, ...] = (), labels: dict[str, str] | None = None, kind: str = "Project",
               operation: str = "CREATE", old_labels: dict[str, str] | None = None) -> Any:
    obj = project(copy.deepcopy(spec) if spec is not None else {}, namespace=namespace, labels=labels or {})
    obj["kind"] = kind
    old = None
    if operation == "UPDATE":
        old = project({}, namespace=namespace, labels=old_labels or {})
    body = review(obj, kind=kind, namespace=namespace, operation=operation, old=old)
    body["request"]["kind"]["group"] = "example.sealyun.com"
    body["request"]["userInfo"] = {"username": user, "groups": list(groups)}
    return mutated(p, body)[0]["spec"]


# --- which rules apply, and in what order -------------------------------------------------------

def test_the_issues_example_three_replicas_in_production_one_elsewhere() -> None:
    p = policy(REPLICAS)
    assert spec_after(p, namespace="payments") == {"replicas": 3, "paused": False}
    assert spec_after(p, namespace="shop") == {"replicas": 1, "paused": False}
    assert spec_after(p, namespace="unlabelled") == {"replicas": 1, "paused": False}
    assert spec_after(p, {"replicas": 5}, namespace="payments") == {"replicas": 5, "paused": False}  # never overwritten


@pytest.mark.parametrize(("lines", "namespace", "expected"), [
    # The first rule that sets a field wins, whether it has match or not.
    (["match: {namespaces: [shop]}, set: {spec: {replicas: 3}}", "set: {spec: {replicas: 1}}"],
     "shop", {"replicas": 3}),
    (["match: {namespaces: [shop]}, set: {spec: {replicas: 3}}", "set: {spec: {replicas: 1}}"],
     "dev", {"replicas": 1}),
    (["set: {spec: {replicas: 1}}", "match: {namespaces: [shop]}, set: {spec: {replicas: 3}}"],
     "shop", {"replicas": 1}),
    # Two matched rules that both select: the earlier one's value, and both rules' other fields.
    (["match: {namespaces: ['sh*']}, set: {spec: {replicas: 2, owner: a}}",
      "match: {namespaces: [shop]}, set: {spec: {replicas: 4, paused: true}}"],
     "shop", {"replicas": 2, "owner": "a", "paused": True}),
    (["match: {namespaces: ['sh*']}, set: {spec: {replicas: 2, owner: a}}",
      "match: {namespaces: [shop]}, set: {spec: {replicas: 4, paused: true}}"],
     "shore", {"replicas": 2, "owner": "a"}),
    # A rule without match between two matched ones keeps its place in file order.
    (["match: {namespaces: [dev]}, set: {spec: {replicas: 2}}", "set: {spec: {replicas: 1, paused: false}}",
      "match: {namespaces: [shop]}, set: {spec: {replicas: 4, paused: true, owner: b}}"],
     "shop", {"replicas": 1, "paused": False, "owner": "b"}),
    (["match: {namespaces: [dev]}, set: {spec: {replicas: 2}}", "set: {spec: {replicas: 1, paused: false}}",
      "match: {namespaces: [shop]}, set: {spec: {replicas: 4, paused: true, owner: b}}"],
     "dev", {"replicas": 2, "paused": False}),
    # Only matched rules, none selecting: nothing is set.
    (["match: {namespaces: [dev]}, set: {spec: {replicas: 2}}"], "shop", {}),
    # Within each element of a list too.
    (["match: {namespaces: [shop]}, set: {spec: {'items[*]': {size: 3}}}", "set: {spec: {'items[*]': {size: 1}}}"],
     "shop", {"items": [{"size": 3}, {"size": 9}]}),
])
def test_file_order_and_the_first_setter_wins(lines: list[str], namespace: str, expected: Any) -> None:
    spec = {"items": [{}, {"size": 9}]} if "items" in expected else None
    assert spec_after(rules(*lines), spec, namespace=namespace) == expected


@pytest.mark.parametrize(("match", "request_args", "selected"), [
    ("{namespaceSelector: {matchLabels: {env: prod}}}", {"namespace": "payments"}, True),
    ("{namespaceSelector: {matchLabels: {env: prod}}}", {"namespace": "shop"}, False),
    ("{namespaceSelector: {matchExpressions: [{key: env, operator: NotIn, values: [prod]}]}}",
     {"namespace": "unlabelled"}, True),  # a namespace with no known labels has none
    ("{objectSelector: {matchLabels: {app: redis}}}", {"labels": {"app": "redis"}}, True),
    ("{objectSelector: {matchLabels: {app: redis}}}", {"labels": {"app": "web"}}, False),
    # On UPDATE the labels are the new object's, not the old one's.
    ("{objectSelector: {matchLabels: {app: redis}}}",
     {"operation": "UPDATE", "labels": {"app": "redis"}, "old_labels": {"app": "web"}}, True),
    ("{objectSelector: {matchLabels: {app: redis}}}",
     {"operation": "UPDATE", "labels": {"app": "web"}, "old_labels": {"app": "redis"}}, False),
    ("{users: [alice]}", {"user": "alice"}, True),
    ("{users: [alice]}", {"user": "bob"}, False),
    ("{groups: [ops, admins]}", {"groups": ("devs", "admins")}, True),
    ("{groups: [ops]}", {"groups": ("devs",)}, False),
    ("{kinds: [Project, Other]}", {}, True),
    ("{namespaces: [shop], users: [alice]}", {"user": "bob"}, False),  # keys are AND-ed
])
def test_each_key_of_match_selects(match: str, request_args: dict[str, Any], selected: bool) -> None:
    p = rules(f"match: {match}, set: {{spec: {{replicas: 3}}}}", "set: {spec: {replicas: 1}}")
    assert spec_after(p, **request_args) == {"replicas": 3 if selected else 1}


def test_exempt_namespaces_get_no_defaults_matched_or_not() -> None:
    p = policy(REPLICAS.replace("images: {mode: off}", "images: {mode: off}\nexemptNamespaces: [payments]"))
    assert spec_after(p, namespace="payments") == {}


def test_a_selection_is_merged_once_and_remembered() -> None:
    p = policy(REPLICAS)
    subject = decode_review(orjson.dumps(review(project({}, namespace="payments"), namespace="payments")))
    first = p.defaults.for_request("example.sealyun.com", "v1alpha1", "Project", subject, p.namespace_labels)
    again_ = p.defaults.for_request("example.sealyun.com", "v1alpha1", "Project", subject, p.namespace_labels)
    assert first is again_ and first is not None
    assert first != p.defaults.tree_for("example.sealyun.com", "v1alpha1", "Project")  # the rules without match


def test_a_policy_without_match_merges_as_before() -> None:
    p = rules("set: {spec: {replicas: 1}}", "set: {spec: {paused: false}}")
    subject = decode_review(orjson.dumps(review(project({}))))
    tree = p.defaults.tree_for("example.sealyun.com", "v1", "Project")
    assert p.defaults.for_request("example.sealyun.com", "v1", "Project", subject, p.namespace_labels) is tree


# --- what loads and what is refused -----------------------------------------------------------

def test_matched_rules_may_set_different_values() -> None:
    p = rules("match: {namespaces: [a]}, set: {spec: {replicas: 3}}",
              "match: {namespaces: [b]}, set: {spec: {replicas: 2}}",
              "set: {spec: {replicas: 1}}")
    assert [rule.match is not None for rule in p.defaults.rules] == [True, True, False]


@pytest.mark.parametrize(("lines", "key", "problem"), [
    # Rules without match keep today's check among themselves, matched rules around them or not.
    (["set: {spec: {replicas: 1}}", "match: {namespaces: [a]}, set: {spec: {replicas: 3}}",
      "set: {spec: {replicas: 2}}"],
     "defaults[2].set.spec.replicas", "conflicts with defaults[0], which sets it to 1 (both apply to "
     "example.sealyun.com/* Project)"),
    # Shapes must agree with every rule, or the rules a request selects would not make one tree.
    (["match: {namespaces: [a]}, set: {spec: {replicas: 3}}", "set: {spec: {replicas: {min: 1}}}"],
     "defaults[1].set.spec.replicas", "is a value in one rule and a mapping or list of defaults in another "
     "(both can apply to example.sealyun.com/* Project)"),
    (["set: {spec: {'items[*]': {size: 1}}}", "match: {namespaces: [a]}, set: {spec: {items: []}}"],
     "defaults[1].set.spec.items", "is a value in one rule and a mapping or list of defaults in another"),
    (["match: {namespaces: [a]}, set: {spec: {x: {}}}", "match: {namespaces: [b]}, set: {spec: {x: {y: 1}}}"],
     "defaults[1].set.spec.x", "is a value in one rule and a mapping or list of defaults in another"),
    # Selecting on a label that a default sets would select differently on the mutated object.
    (["set: {metadata: {labels: {tier: gold}}}", "match: {objectSelector: {matchLabels: {tier: gold}}}, "
      "set: {spec: {replicas: 3}}"],
     "defaults[1].match.objectSelector", "reads the label 'tier', which defaults[0] sets"),
    (["match: {objectSelector: {matchExpressions: [{key: tier, operator: DoesNotExist}]}}, "
      "set: {metadata: {labels: {tier: gold}}}"],
     "defaults[0].match.objectSelector", "reads the label 'tier', which defaults[0] sets"),
    (["match: {kinds: [Pod]}, set: {spec: {replicas: 3}}"],
     "defaults[0].match.kinds", "names none of the rule's kinds (Project), so the rule would never apply"),
    # The match block's own refusals, under the rule's key.
    (["match: {}, set: {spec: {replicas: 3}}"], "defaults[0].match", "must not be empty"),
    (["match: {namespace: [a]}, set: {spec: {replicas: 3}}"], "defaults[0].match.namespace",
     "unknown key (did you mean 'namespaces'?)"),
    (["match: {namespaces: [Team_A]}, set: {spec: {replicas: 3}}"], "defaults[0].match.namespaces",
     "'Team_A' is not a namespace pattern"),
    (["match: {kinds: []}, set: {spec: {replicas: 3}}"], "defaults[0].match.kinds", "at least 1 item"),
    (["match: {namespaceSelector: {matchExpressions: [{key: k, operator: Has}]}}, set: {spec: {replicas: 3}}"],
     "defaults[0].match.namespaceSelector.matchExpressions[0].operator", "Input should be"),
    (["match: {objectSelector: {matchExpressions: [{key: k, operator: Exists, values: [v]}]}}, "
      "set: {spec: {replicas: 3}}"],
     "defaults[0].match.objectSelector.matchExpressions[0]", "operator Exists takes no 'values'"),
])
def test_refusals_at_load_name_the_file_and_key(lines: list[str], key: str, problem: str) -> None:
    with pytest.raises(PolicyError) as refused:
        rules(*lines)
    assert (refused.value.source, refused.value.key) == ("policy.yaml", key)
    assert problem in refused.value.problem
    assert str(refused.value).startswith(f"policy file policy.yaml: {key}: ")


def test_rules_for_other_versions_never_meet() -> None:
    """The shape check, like the conflict check, only concerns rules that can apply to one version."""
    p = policy("images: {mode: off}\ndefaults:\n"
               "  - {group: g, versions: [v1], kinds: [K], match: {namespaces: [a]}, set: {spec: {x: 1}}}\n"
               "  - {group: g, versions: [v2], kinds: [K], set: {spec: {x: {y: 1}}}}\n")
    assert len(p.defaults.rules) == 2


def test_a_defaults_namespace_selector_needs_namespace_labels() -> None:
    p = policy(REPLICAS)
    assert p.needs_namespace_labels
    assert p.namespace_selector_key == "defaults[0].match.namespaceSelector"
    plain = policy(REPLICAS.replace("namespaceSelector: {matchLabels: {env: prod}}", "namespaces: [payments]"))
    assert not plain.needs_namespace_labels
    assert plain.namespace_selector_key is None


IMAGES = """\
images: {allow: [registry.k8s.io, ghcr.io/acme/*]}
scopes:
  - name: production
    match: {namespaces: [payments]}
    images: {inheritAllow: false, allow: [ghcr.io/acme/*]}
"""
POD = "group: '', versions: [v1], kinds: [Pod]"


@pytest.mark.parametrize(("image", "problem"), [
    ("ghcr.io/acme/sidecar", None),
    # A matched default is judged under every rule set: here the scope refuses it, though the
    # rule names another namespace, because validation picks the scope from the mutated object.
    ("registry.k8s.io/pause", 'registry.k8s.io/pause is not allowed by images.allow in scope "production"'),
    ("evil.io/x", "evil.io/x is not allowed by images.allow ("),
])
def test_matched_defaults_get_the_image_check_under_every_scope(image: str, problem: str | None) -> None:
    text = IMAGES + f"defaults:\n  - {{{POD}, match: {{namespaces: [shop]}}, " \
                    f"set: {{spec: {{'containers[*]': {{image: {image}}}}}}}}}\n"
    if problem is None:
        assert policy(text)
        return
    with pytest.raises(PolicyError) as refused:
        policy(text)
    assert refused.value.key == "defaults[0].set"
    assert problem in refused.value.problem


# --- `webhook check`: namespace labels from its inputs ------------------------------------------

MANIFESTS = """\
apiVersion: example.sealyun.com/v1alpha1
kind: Project
metadata: {name: ledger, namespace: payments}
spec: {}
---
apiVersion: example.sealyun.com/v1alpha1
kind: Project
metadata: {name: cart, namespace: shop}
spec: {}
---
apiVersion: v1
kind: Namespace
metadata: {name: payments, labels: {env: prod}}
"""


def test_check_reads_namespace_labels_from_its_inputs(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(REPLICAS)
    (tmp_path / "all.yaml").write_text(MANIFESTS)
    result = check("--policy", str(tmp_path / "policy.yaml"), "-o", "json", str(tmp_path / "all.yaml"))
    assert result.returncode == 0, result.stderr
    ledger, cart, _ = json.loads(result.stdout)["results"]
    assert ledger["patch"] == [{"op": "add", "path": "/spec/replicas", "value": 3},
                               {"op": "add", "path": "/spec/paused", "value": False}]
    assert cart["patch"] == [{"op": "add", "path": "/spec/replicas", "value": 1},
                             {"op": "add", "path": "/spec/paused", "value": False}]
    assert result.stderr == ("webhook: note: namespace 'shop' has no known labels (no Namespace object among the "
                             "inputs); namespaceSelector judges it as having none\n")


# --- the real server ---------------------------------------------------------------------------

SERVED = f"""\
images: {{allow: [registry.k8s.io]}}
defaults:
  - {{{PROJECT}, match: {{namespaces: [payments, "prod-*"]}}, set: {{spec: {{replicas: 3}}}}}}
  - {{{PROJECT}, set: {{spec: {{replicas: 1, paused: false}}}}}}
  - {{group: "", versions: [v1], kinds: [Pod], match: {{namespaces: [payments]}},
     set: {{metadata: {{labels: {{tier: gold}}}}}}}}
"""


@pytest.fixture(scope="module")
def served(start_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerClient]:
    path = tmp_path_factory.mktemp("defaults-match") / "policy.yaml"
    path.write_text(SERVED)
    server: ServerProcess
    with start_server("--policy", str(path)) as server:
        client = server.client()
        yield client
        client.close()


@pytest.mark.parametrize(("namespace", "replicas"), [("payments", 3), ("prod-eu", 3), ("shop", 1)])
def test_the_server_mutates_by_namespace(served: ApiServerClient, namespace: str, replicas: int) -> None:
    body = review(project({}, namespace=namespace), namespace=namespace)
    response = served.review("/mutate", body)
    assert response["allowed"] is True
    result = applied(body["request"]["object"], decoded_patch(response))
    assert result["spec"] == {"replicas": replicas, "paused": False}
    assert response["warnings"] == [f"defaulted spec.replicas={replicas}", "defaulted spec.paused=false"]
    final = copy.deepcopy(body)
    final["request"]["object"] = result
    assert "patch" not in served.review("/mutate", final)  # reinvoked on its own output: nothing more


@pytest.mark.parametrize(("namespace", "labels"), [("payments", {"app": "c0", "tier": "gold"}), ("shop", None)])
def test_the_server_defaults_pods_only_where_the_match_selects(served: ApiServerClient, namespace: str,
                                                               labels: dict[str, str] | None) -> None:
    body = pod_review("registry.k8s.io/pause", namespace=namespace)
    body["request"]["object"]["metadata"]["labels"] = {"app": "c0"}
    response = served.review("/mutate", body)
    assert response["allowed"] is True
    if labels is None:
        assert response == {"uid": body["request"]["uid"], "allowed": True}
    else:
        assert applied(body["request"]["object"], decoded_patch(response))["metadata"]["labels"] == labels


# --- idempotence, and the meaning of file order, over random rules -------------------------------

@st.composite
def agreeing_trees(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    """Trees in which each name always has one shape, so that rules meet on fields far more often
    than random trees do, and a policy is seldom refused for shapes that disagree."""
    names = ["spec", "items", "a", "n"] if depth < 2 else ["a", "n"]
    tree: dict[str, Any] = {}
    for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True)):
        if name == "spec":
            tree[name] = draw(agreeing_trees(depth + 1))
        elif name == "items":
            tree["items[*]"] = draw(agreeing_trees(depth + 1))
        else:
            tree[name] = draw(st.sampled_from([1, 2, "s", True, [1], {"k": 1}]))
    return tree


MATCHED_RULES = st.lists(
    st.fixed_dictionaries({
        "versions": st.sampled_from([["*"], ["v1"]]),
        "set": agreeing_trees() | set_trees(),
        "namespaces": st.none() | st.lists(st.sampled_from(["a", "b", "a*"]), min_size=1, max_size=2),
    }),
    min_size=1, max_size=4,
)


def selects(namespaces: list[str] | None, namespace: str) -> bool:
    return namespaces is None or any(n == namespace or (n.endswith("*") and namespace.startswith(n[:-1]))
                                     for n in namespaces)


@SETTINGS
@given(rules_=MATCHED_RULES, obj=OBJECTS, namespace=st.sampled_from(["a", "ab", "b"]),
       version=st.sampled_from(["v1", "v2"]))
def test_rules_apply_in_file_order_and_mutation_is_idempotent(
    rules_: list[dict[str, Any]], obj: dict[str, Any], namespace: str, version: str
) -> None:
    """The patch gives what applying each selected rule's raw ``set:`` in file order gives, and
    mutating the result again gives no patch."""
    p = load({
        "images": {"mode": "off"},
        "defaults": [{"group": "g.io", "kinds": ["K"], "versions": rule["versions"], "set": rule["set"],
                      **({"match": {"namespaces": rule["namespaces"]}} if rule["namespaces"] else {})}
                     for rule in rules_],
    })
    body = review(obj, kind="K", namespace=namespace)
    body["request"]["kind"] = {"group": "g.io", "version": version, "kind": "K"}
    result = applied(obj, run(body, p))
    expected = copy.deepcopy(obj)
    for rule in rules_:
        if ("*" in rule["versions"] or version in rule["versions"]) and selects(rule["namespaces"], namespace):
            reference_defaults(rule["set"], expected)
    assert orjson.dumps(result, option=orjson.OPT_SORT_KEYS) == orjson.dumps(expected, option=orjson.OPT_SORT_KEYS)
    assert run(again(body, result), p) == []


# --- the docs ------------------------------------------------------------------------------------

def test_the_docs_show_defaults_by_namespace(tmp_path: Path) -> None:
    sandbox = Sandbox.make(tmp_path)
    (sandbox.cwd / "policy.yaml").write_text(doc_block("docs/policy.md", "defaults-match-policy").text)
    (sandbox.cwd / "projects.yaml").write_text(doc_block("docs/policy.md", "defaults-match-projects").text)
    run_block(doc_block("docs/policy.md", "defaults-match-check"), sandbox)

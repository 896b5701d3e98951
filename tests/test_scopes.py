"""Scopes and exceptions, decided by the validating webhook on reviews decoded as the server
decodes them, with a fixed clock."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.reviews import pod_review, pod_spec, review, workload
from webhook.admission.chain import Target, admit
from webhook.admission.deadline import NEVER
from webhook.admission.review import Response, decode_review
from webhook.admission.validate import validate
from webhook.policy.model import Policy, PolicyError, parse_policy
from webhook.policy.references import parse_reference

BASELINE = """\
images:
  allow: [registry.k8s.io, docker.io/library/*]
"""
SCOPED = BASELINE + """\
scopes:
  - name: team-a
    match: {namespaces: ["team-a-*"]}
    images: {allow: [ghcr.io/team-a/*]}
  - name: never-reached
    match: {namespaces: [team-a-prod]}
    images: {allow: [evil.io]}
  - name: production
    match: {namespaces: [prod, team-a-prod, other-prod]}
    images: {inheritAllow: false, allow: [registry.acme.io/*], requireDigest: true, mode: enforce}
  - name: onboarding
    match: {namespaces: [onboard]}
    images: {mode: warn}
  - name: quiet
    match: {namespaces: [quiet]}
    images: {mode: off}
  - name: locked
    match: {namespaces: [locked]}
    images: {inheritAllow: false, allow: []}
  - name: by-kind
    match: {kinds: [CronJob]}
    images: {allow: [quay.io/cron/*]}
"""
DIGEST = "@sha256:" + "a" * 64
EXPIRES = dt.datetime(2027, 1, 31, tzinfo=dt.UTC)
EXCEPTED = """\
images:
  allow: [registry.k8s.io, docker.io/library/*, mirror.acme.io]
  rewrite: [{from: docker.io/bitnami, to: mirror.acme.io/bitnami}]
scopes:
  - name: production
    match: {namespaces: [payments]}
    images: {inheritAllow: false, allow: [registry.acme.io/*, mirror.acme.io/*], requireDigest: true}
exceptions:
  - name: legacy-redis
    reason: "OPS-1234: move redis to the internal mirror"
    expires: "2027-01-31T00:00:00Z"
    match: {namespaces: [payments, shop, onboard], kinds: [Pod], objectSelector: {matchLabels: {app: web}}}
    images: [quay.io/bitnami/redis, mirror.acme.io/bitnami/redis]
  - name: old-tools
    reason: "OPS-9"
    expires: 2026-01-01 00:00:00+01:00
    match: {namespaces: [shop]}
    images: [quay.io/tools/*]
"""


def policy(text: str) -> Policy:
    return parse_policy(text.encode(), "team.yaml")


def at(p: Policy, moment: dt.datetime) -> Policy:
    return p.seen_from(clock=moment.timestamp)


def decide(body: dict[str, Any], p: Policy) -> Response:
    return validate(decode_review(orjson.dumps(body)), p, NEVER)


def pod(*images: str, namespace: str = "shop") -> dict[str, Any]:
    return pod_review(*images, namespace=namespace)


def test_no_scope_matching_means_todays_messages_byte_for_byte() -> None:
    plain, scoped = policy(BASELINE), policy(SCOPED)
    for body in (pod("evil.io/x:1", "nginx"), pod("nginx", "Bad//Ref"), pod("quay.io/a/b")):
        assert decide(body, scoped) == decide(body, plain)
    assert decide(pod("evil.io/x:1"), scoped).message == (
        'spec.containers[0] "c0": image "evil.io/x:1" (evil.io/x:1) is not from an allowed registry; '
        "allowed: registry.k8s.io, docker.io/library/*")


def test_first_match_wins_in_file_order() -> None:
    scoped = policy(SCOPED)
    answer = decide(pod("ghcr.io/team-a/app:1", namespace="team-a-prod"), scoped)
    assert answer.allowed and answer.scope == "team-a"  # team-a-* comes before never-reached and production
    assert not decide(pod("evil.io/x", namespace="team-a-prod"), scoped).allowed
    assert decide(pod("registry.acme.io/app" + DIGEST, namespace="other-prod"), scoped).scope == "production"


def test_a_scope_adds_to_the_baseline_and_names_itself() -> None:
    scoped = policy(SCOPED)
    assert decide(pod("nginx", "ghcr.io/team-a/x", namespace="team-a-web"), scoped).allowed
    answer = decide(pod("ghcr.io/team-b/x", namespace="team-a-web"), scoped)
    assert not answer.allowed
    assert answer.message == (
        'in scope "team-a": spec.containers[0] "c0": image "ghcr.io/team-b/x" (ghcr.io/team-b/x) is not from '
        "an allowed registry; allowed: ghcr.io/team-a/*, registry.k8s.io, docker.io/library/*")
    assert answer.scope == "team-a"
    assert not decide(pod("ghcr.io/team-a/x"), scoped).allowed  # outside the scope, the baseline


def test_inherit_allow_false_replaces_the_patterns_and_require_digest_applies() -> None:
    scoped = policy(SCOPED)
    assert decide(pod("registry.acme.io/app" + DIGEST, namespace="prod"), scoped).allowed
    no_digest = decide(pod("registry.acme.io/app:1", namespace="prod"), scoped)
    assert not no_digest.allowed and "has no digest" in (no_digest.message or "")
    assert no_digest.message and no_digest.message.startswith('in scope "production": ')
    baseline_image = decide(pod("nginx" + DIGEST, namespace="prod"), scoped)
    assert not baseline_image.allowed
    assert (baseline_image.message or "").endswith("allowed: registry.acme.io/*")
    assert decide(pod("nginx:1"), scoped).allowed  # the baseline requires no digest


def test_empty_allow_without_inheriting_denies_everything() -> None:
    assert not decide(pod("nginx", namespace="locked"), policy(SCOPED)).allowed


def test_mode_per_scope() -> None:
    scoped = policy(SCOPED)
    warned = decide(pod("evil.io/x", namespace="onboard"), scoped)
    assert warned.allowed and warned.outcome == "warned" and warned.scope == "onboarding"
    assert warned.warnings == (
        'policy would deny (warn mode) in scope "onboarding": spec.containers[0] "c0": image "evil.io/x" '
        "(evil.io/x) is not from an allowed registry",)
    quiet = decide(pod("evil.io/x", "Bad//Ref", namespace="quiet"), scoped)
    assert quiet.allowed and not quiet.warnings and quiet.scope == "quiet"


def test_kinds_select_a_scope() -> None:
    scoped = policy(SCOPED)
    cron = review(workload("CronJob", pod_spec("quay.io/cron/job:1")))
    assert decide(cron, scoped).allowed and decide(cron, scoped).scope == "by-kind"
    assert not decide(pod("quay.io/cron/job:1"), scoped).allowed


def test_exempt_namespaces_come_before_any_scope() -> None:
    text = SCOPED.replace("scopes:", "exemptNamespaces: [locked]\nscopes:", 1)
    answer = decide(pod("evil.io/x", namespace="locked"), policy(text))
    assert answer.allowed and answer.scope is None


@pytest.mark.parametrize(("scope", "key", "problem"), [
    ("{name: mirror, match: {namespaces: [m]}, images: {inheritAllow: false, allow: [quay.io/*]}}",
     "images.rewrite[0].to", 'would not be allowed by images.allow in scope "mirror" (quay.io/*)'),
    ("{name: mirror, match: {namespaces: [m]}, images: {mode: 'off', inheritAllow: false, allow: []}}", None, None),
    # a rewrite keeps the tag and digest: requireDigest plays no part in the check
    ("{name: pinned, match: {namespaces: [m]}, images: {requireDigest: true}}", None, None),
    ("{name: a, match: {kinds: [Pod]}}, {name: a, match: {kinds: [Job]}}", "scopes[1].name", "named twice"),
])
def test_the_load_check_runs_for_every_scope(scope: str, key: str | None, problem: str | None) -> None:
    text = BASELINE + "  rewrite: [{from: docker.io/bitnami, to: registry.k8s.io/bitnami}]\n" + f"scopes: [{scope}]\n"
    if key is None:
        policy(text)
        return
    with pytest.raises(PolicyError) as refused:
        policy(text)
    assert (refused.value.source, refused.value.key) == ("team.yaml", key)
    assert problem in refused.value.problem


def test_the_load_check_looks_at_defaults_per_scope() -> None:
    text = BASELINE + """\
defaults: [{group: "", versions: [v1], kinds: [Pod], set: {spec: {containers: [{image: registry.k8s.io/pause}]}}}]
scopes: [{name: strict, match: {namespaces: [s]}, images: {requireDigest: true}}]
"""
    with pytest.raises(PolicyError) as refused:
        policy(text)
    assert refused.value.key == "defaults[0].set"
    assert 'requireDigest is true in scope "strict"' in refused.value.problem


# Exceptions, with a fixed clock.

def redis(namespace: str = "shop", image: str = "quay.io/bitnami/redis:7") -> dict[str, Any]:
    return pod(image, namespace=namespace)


def test_before_expiry_an_exception_admits_with_its_warning() -> None:
    p = at(policy(EXCEPTED), dt.datetime(2026, 6, 1, tzinfo=dt.UTC))
    answer = decide(redis(), p)
    assert answer.allowed and answer.outcome == "allowed"
    assert answer.exceptions == ("legacy-redis",)
    assert answer.warnings == (
        'spec.containers[0] "c0": image "quay.io/bitnami/redis:7" admitted by exception "legacy-redis" '
        "(OPS-1234: move redis to the internal mirror) until 2027-01-31T00:00:00Z",)


def test_under_mode_off_nothing_is_judged_so_no_exception_is_used() -> None:
    text = EXCEPTED.replace("    match: {namespaces: [payments]}\n    images: {inheritAllow: false,",
                            "    match: {namespaces: [payments]}\n    images: {mode: 'off', inheritAllow: false,")
    answer = decide(redis("payments"), at(policy(text), dt.datetime(2026, 6, 1, tzinfo=dt.UTC)))
    assert answer.allowed and not answer.warnings and not answer.exceptions and answer.scope == "production"


def test_an_exception_is_used_only_when_the_rules_would_refuse() -> None:
    p = at(policy(EXCEPTED), dt.datetime(2026, 6, 1, tzinfo=dt.UTC))
    answer = decide(pod("nginx"), p)
    assert answer.allowed and not answer.warnings and not answer.exceptions


def test_in_every_mode_and_with_require_digest() -> None:
    p = at(policy(EXCEPTED), dt.datetime(2026, 6, 1, tzinfo=dt.UTC))
    scoped = decide(redis("payments"), p)  # requireDigest and other patterns in this scope
    assert scoped.allowed and scoped.exceptions == ("legacy-redis",) and scoped.scope == "production"
    warn = at(policy(EXCEPTED.replace("allow: [registry.k8s.io", "mode: warn\n  allow: [registry.k8s.io")),
              dt.datetime(2026, 6, 1, tzinfo=dt.UTC))
    answer = decide(pod("quay.io/bitnami/redis:7", "evil.io/x"), warn)
    assert answer.outcome == "warned"
    assert answer.warnings[0].endswith("until 2027-01-31T00:00:00Z")  # the exception's, not "would deny"
    assert answer.warnings[1].startswith('policy would deny (warn mode): spec.containers[1] "c1"')
    assert len(answer.warnings) == 2


@pytest.mark.parametrize(("left", "note"), [
    (dt.timedelta(days=14), "; expires in 14 days"),
    (dt.timedelta(days=3), "; expires in 3 days"),
    (dt.timedelta(days=2, hours=1), "; expires in 3 days"),  # rounded up
    (dt.timedelta(hours=23), "; expires in 1 day"),
    (dt.timedelta(seconds=1), "; expires in 1 day"),
    (dt.timedelta(days=14, seconds=1), ""),
])
def test_the_warning_window(left: dt.timedelta, note: str) -> None:
    answer = decide(redis(), at(policy(EXCEPTED), EXPIRES - left))
    assert answer.warnings[0].endswith("until 2027-01-31T00:00:00Z" + note)


def test_exception_warning_days_changes_the_window() -> None:
    p = at(policy(EXCEPTED + "exceptionWarningDays: 30\n"), EXPIRES - dt.timedelta(days=20))
    assert decide(redis(), p).warnings[0].endswith("; expires in 20 days")


@pytest.mark.parametrize("after", [dt.timedelta(0), dt.timedelta(days=1)])
def test_at_and_after_expiry_the_exception_is_gone_and_the_denial_says_so(after: dt.timedelta) -> None:
    answer = decide(redis(), at(policy(EXCEPTED), EXPIRES + after))
    assert not answer.allowed and not answer.exceptions
    assert answer.message == (
        'spec.containers[0] "c0": image "quay.io/bitnami/redis:7" (quay.io/bitnami/redis:7) is not from an '
        'allowed registry (exception "legacy-redis" expired 2027-01-31T00:00:00Z); '
        "allowed: registry.k8s.io, docker.io/library/*, mirror.acme.io")


def test_the_expired_note_needs_the_match_and_the_image() -> None:
    p = at(policy(EXCEPTED), EXPIRES + dt.timedelta(days=1))
    other_ns = decide(redis("elsewhere"), p)
    assert "exception" not in (other_ns.message or "")
    other_image = decide(redis(image="quay.io/bitnami/postgres:1"), p)
    assert "exception" not in (other_image.message or "")
    tools = decide(pod("quay.io/tools/x:1"), p)  # written as a YAML timestamp with an offset
    assert '(exception "old-tools" expired 2025-12-31T23:00:00Z)' in (tools.message or "")


def test_an_exception_never_waives_a_malformed_object_or_an_unparseable_image() -> None:
    p = at(policy(EXCEPTED.replace("images: [quay.io/bitnami/redis", "images: [quay.io/*, quay.io/bitnami/redis")),
           dt.datetime(2026, 6, 1, tzinfo=dt.UTC))
    malformed = decide(pod_review(42), p)  # type: ignore[arg-type]
    assert (malformed.allowed, malformed.code) == (False, 422)
    unparseable = decide(pod("quay.io/Bad//x", "quay.io/bitnami/redis:7"), p)
    assert not unparseable.allowed and unparseable.exceptions == ("legacy-redis",)
    assert "quay.io/Bad//x" in (unparseable.message or "")
    image_id = decide(pod("quay.io/bitnami/redis@sha256:abc"), p)
    assert not image_id.allowed


def test_an_exception_composes_with_rewrites() -> None:
    """The rewritten image is what /validate judges; an exception naming the mirror admits it."""
    p = at(policy(EXCEPTED), dt.datetime(2026, 6, 1, tzinfo=dt.UTC))
    obj = workload("Pod", pod_spec("bitnami/redis:7"), namespace="payments")  # requireDigest there
    result = admit(obj, Target("", "v1", "Pod", "pods"), "payments", p, username="u")
    assert result.patch  # the rewrite still applies
    assert result.final["spec"]["containers"][0]["image"] == "mirror.acme.io/bitnami/redis:7"
    assert result.validation.allowed and result.validation.exceptions == ("legacy-redis",)
    assert 'image "mirror.acme.io/bitnami/redis:7" admitted by exception "legacy-redis"' in result.warnings[-1]


def test_an_expired_exception_still_loads_and_is_listed() -> None:
    p = policy(EXCEPTED)
    assert p.exceptions.expired(EXPIRES.timestamp()) == ["legacy-redis", "old-tools"]
    assert p.exceptions.expired(dt.datetime(2025, 1, 1, tzinfo=dt.UTC).timestamp()) == []


@pytest.mark.parametrize(("exception", "key", "problem"), [
    ("{name: a, reason: r, expires: '2030-01-01T00:00:00', match: {kinds: [Pod]}, images: [x]}",
     "exceptions[0].expires", "has no time zone"),
    ("{name: a, reason: r, expires: 2030-01-01, match: {kinds: [Pod]}, images: [x]}",
     "exceptions[0].expires", "is not an RFC 3339 time"),
    ("{name: a, reason: r, expires: soon, match: {kinds: [Pod]}, images: [x]}",
     "exceptions[0].expires", "is not an RFC 3339 time"),
    ("{name: a, reason: ' ', expires: '2030-01-01T00:00:00Z', match: {kinds: [Pod]}, images: [x]}",
     "exceptions[0].reason", "must say why"),
    ("{name: a, expires: '2030-01-01T00:00:00Z', match: {kinds: [Pod]}, images: [x]}",
     "exceptions[0].reason", "is required"),
    ("{name: a, reason: r, expires: '2030-01-01T00:00:00Z', match: {kinds: [Pod]}, images: []}",
     "exceptions[0].images", "at least 1 item"),
    ("{name: a, reason: r, expires: '2030-01-01T00:00:00Z', match: {kinds: [Pod]}, images: ['acme-*']}",
     "exceptions[0].images[0]", "'*'"),
    ("{name: a, reason: r, expires: '2030-01-01T00:00:00Z', images: [x]}", "exceptions[0].match", "is required"),
    ("{name: a, reason: r, expires: '2030-01-01T00:00:00Z', match: {kinds: [Pod]}, images: [x]}, "
     "{name: a, reason: r, expires: '2030-01-01T00:00:00Z', match: {kinds: [Pod]}, images: [x]}",
     "exceptions[1].name", "named twice"),
])
def test_exception_load_refusals(exception: str, key: str, problem: str) -> None:
    with pytest.raises(PolicyError) as refused:
        policy(BASELINE + f"exceptions: [{exception}]\n")
    assert (refused.value.source, refused.value.key) == ("team.yaml", key)
    assert problem in refused.value.problem


def test_a_scope_and_an_exception_may_share_a_name() -> None:
    policy(BASELINE + "scopes: [{name: a, match: {kinds: [Pod]}}]\n"
           "exceptions: [{name: a, reason: r, expires: '2030-01-01T00:00:00Z', match: {kinds: [Pod]}, images: [x]}]\n")


def test_unquoted_off_and_unquoted_timestamps_load() -> None:
    p = policy(BASELINE + "scopes: [{name: q, match: {namespaces: [q]}, images: {mode: off}}]\n"
               "exceptions: [{name: e, reason: r, expires: 2027-01-31T00:00:00Z, match: {kinds: [Pod]}, "
               "images: [x]}]\n")
    assert p.scopes.scopes[0].rules.mode == "off"
    assert p.exceptions.items[0].expires_text == "2027-01-31T00:00:00Z"


SCOPE_MATCHES = st.fixed_dictionaries({}, optional={
    "namespaces": st.lists(st.sampled_from(["a", "b", "a-*", "*-x", "*", "b-x"]), min_size=1, max_size=3),
    "kinds": st.lists(st.sampled_from(["Pod", "Deployment"]), min_size=1, max_size=2),
    "objectSelector": st.sampled_from([{}, {"matchLabels": {"app": "web"}},
                                       {"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}]),
    "users": st.lists(st.sampled_from(["alice", "bob"]), min_size=1, max_size=2),
    "groups": st.lists(st.sampled_from(["dev", "ops"]), min_size=1, max_size=2),
}).filter(bool)


@given(st.lists(SCOPE_MATCHES, min_size=1, max_size=8))
@settings(max_examples=150, deadline=None)
def test_the_scope_index_gives_the_answer_of_trying_in_file_order(matches: list[dict[str, Any]]) -> None:
    """Every request against one policy, twice over: the second round is answered from the memo
    (of namespace and kind), and in it the conditions on the user, groups and labels per request."""
    scopes = [{"name": f"s{i}", "match": m} for i, m in enumerate(matches)]
    p = policy(BASELINE + "scopes: " + orjson.dumps(scopes).decode() + "\n")
    users = [("alice", ["dev"]), ("bob", ["ops", "dev"]), ("carol", [])]
    for _ in range(2):
        for namespace, kind, labels, (user, groups) in itertools.product(
                ["a", "b", "a-x", "b-x", "c"], ["Pod", "Deployment"], [{}, {"app": "web"}], users):
            obj = workload(kind, pod_spec("nginx"), namespace=namespace)
            obj["metadata"]["labels"] = labels
            body = review(obj, namespace=namespace)
            body["request"]["userInfo"] = {"username": user, "groups": groups}
            request = decode_review(orjson.dumps(body))
            in_order = next((s.rules for s in p.scopes.scopes if s.match.selects(request, p.namespace_labels)),
                            p.baseline)
            assert p.rules_for(request) is in_order


EXCEPTION_IMAGES = st.lists(st.sampled_from(["docker.io/bitnami/redis", "quay.io/old/*", "evil.io", "ghcr.io/a/*",
                                             "registry.k8s.io/pause", "docker.io/library/*"]), min_size=1, max_size=3)
REFERENCES = ["bitnami/redis:7", "redis:7", "quay.io/old/x:1", "evil.io/x", "ghcr.io/a/b", "ghcr.io/b/a",
              "registry.k8s.io/pause:3.9", "localhost:5000/x"]


@given(st.lists(st.tuples(EXCEPTION_IMAGES, st.sampled_from(["2001-01-01T00:00:00Z", "2999-01-01T00:00:00Z"]),
                          st.sampled_from([["shop"], ["shop", "team"], ["team"]])), min_size=1, max_size=8))
@settings(max_examples=150, deadline=None)
def test_the_exception_index_gives_the_answer_of_trying_in_file_order(
    specs: list[tuple[list[str], str, list[str]]]
) -> None:
    """Exceptions are looked up by the image's registry host; the answer is the file-order scan's."""
    exceptions = [{"name": f"e{i}", "reason": "r", "expires": expires, "match": {"namespaces": namespaces},
                   "images": images} for i, (images, expires, namespaces) in enumerate(specs)]
    p = policy(BASELINE + "exceptions: " + orjson.dumps(exceptions).decode() + "\n")
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
    for namespace, image in itertools.product(["shop", "team"], REFERENCES):
        request = decode_review(orjson.dumps(pod_review(image, namespace=namespace)))
        ref = parse_reference(image)
        lapsed = [e for e in p.exceptions.items if e.covers(request, ref, p.namespace_labels) and e.expired(now)]
        live = next((e for e in p.exceptions.items if e.covers(request, ref, p.namespace_labels)
                     and not e.expired(now)), None)
        assert p.exceptions.waiver(request, ref, now, p.namespace_labels) == (
            (live, ()) if live else (None, lapsed))

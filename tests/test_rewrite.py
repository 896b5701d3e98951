"""``images.rewrite``: prefixes on whole components, the most specific wins, and load refusals."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from webhook.policy.model import Policy, PolicyError, PolicySpec, parse_policy
from webhook.policy.patterns import Allowlist, parse_pattern
from webhook.policy.references import InvalidReference, parse_reference
from webhook.policy.rewrite import Prefix, Rewriter, RewriteRule, parse_prefix, shortest_rest

SHA = "sha256:" + "e3" * 32


def load(text: str):  # type: ignore[no-untyped-def]
    return parse_policy(text.encode(), "policy.yaml")


def rewriter(*pairs: tuple[str, str]) -> Rewriter:
    return Rewriter([RewriteRule(parse_prefix(a), parse_prefix(b), i) for i, (a, b) in enumerate(pairs)])


def rewritten(r: Rewriter, image: str) -> str | None:
    result = r.rewrite(parse_reference(image))
    return None if result is None else str(result)


@pytest.mark.parametrize(
    ("text", "prefix"),
    [
        ("docker.io", Prefix("docker.io", ())),
        ("index.docker.io/library", Prefix("docker.io", ("library",))),  # host aliases fold
        ("registry-1.docker.io", Prefix("docker.io", ())),
        ("Quay.IO/acme", Prefix("quay.io", ("acme",))),  # host case folds
        ("docker.io/nginx", Prefix("docker.io", ("nginx",))),  # never gets library/
        ("localhost:5000/a/b", Prefix("localhost:5000", ("a", "b"))),
        ("localhost/a", Prefix("localhost", ("a",))),
    ],
)
def test_prefixes_normalise_only_the_host(text: str, prefix: Prefix) -> None:
    assert parse_prefix(text) == prefix


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("bitnami/redis", "must begin with a registry host (for Docker Hub write docker.io/bitnami/redis"),
        ("nginx", "must begin with a registry host"),
        ("Harbor/x", "must begin with a registry host"),
        ("docker.io/*", "'*' is not allowed"),
        ("quay.io/*/charts", "'*' is not allowed"),
        ("*.acme.io/x", "'*' is not allowed"),
        ("docker.io/Library", "must be lowercase"),
        ("docker.io/library/nginx:1.27", "has a tag"),
        ("docker.io/library/nginx@" + SHA, "has a digest"),
        ("docker.io/", "empty path component"),
        ("docker.io//x", "empty path component"),
        ("docker.io/a-", "not a valid repository path component"),
        ("reg_istry.io/x", "not a valid registry host"),
        ("", "non-empty string"),
        ("docker.io /x", "white space"),
    ],
)
def test_prefix_refusals(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_prefix(text)
    assert problem in str(caught.value)


def test_rewriting_keeps_tag_and_digest_and_adds_no_latest() -> None:
    r = rewriter(("docker.io", "mirror.acme.io/dockerhub"))
    assert rewritten(r, "nginx") == "mirror.acme.io/dockerhub/library/nginx"
    assert rewritten(r, "nginx:1.27") == "mirror.acme.io/dockerhub/library/nginx:1.27"
    assert rewritten(r, f"docker.io/library/nginx@{SHA}") == f"mirror.acme.io/dockerhub/library/nginx@{SHA}"
    assert rewritten(r, f"nginx:1@{SHA}") == f"mirror.acme.io/dockerhub/library/nginx:1@{SHA}"
    assert rewritten(r, "registry-1.docker.io/acme/app") == "mirror.acme.io/dockerhub/acme/app"
    assert rewritten(r, "mirror.acme.io/dockerhub/library/nginx") is None
    assert rewritten(r, "quay.io/x") is None


def test_from_matches_whole_components_including_equality() -> None:
    r = rewriter(("quay.io/acme", "mirror.io/acme"), ("reg.io", "mirror.io/reg"))
    assert rewritten(r, "quay.io/acme:1") == "mirror.io/acme:1"
    assert rewritten(r, "quay.io/acme/app") == "mirror.io/acme/app"
    assert rewritten(r, "quay.io/acmeevil/app") is None
    assert rewritten(r, "quay.io/acme-evil/app") is None
    assert rewritten(r, "reg.io.evil.com/x") is None
    assert rewritten(r, "reg.io:5000/x") is None  # a port is part of the registry
    assert rewritten(r, "REG.io/x") == "mirror.io/reg/x"


def test_the_most_specific_from_wins_whatever_the_order() -> None:
    pairs = [("docker.io", "m.io/hub"), ("docker.io/bitnami", "m.io/bitnami"), ("docker.io/bitnami/charts", "m.io/c")]
    for order in (pairs, pairs[::-1]):
        r = rewriter(*order)
        assert rewritten(r, "bitnami/redis") == "m.io/bitnami/redis"
        assert rewritten(r, "docker.io/bitnami/charts/redis:1") == "m.io/c/redis:1"
        assert rewritten(r, "nginx") == "m.io/hub/library/nginx"


def test_docker_io_library_catches_only_official_images() -> None:
    r = rewriter(("docker.io/library", "m.io/official"))
    assert rewritten(r, "nginx") == "m.io/official/nginx"
    assert rewritten(r, "bitnami/redis") is None


def test_a_policy_with_rewrite_compiles() -> None:
    policy = load(
        "images:\n"
        "  allow: [mirror.acme.io/*]\n"
        "  rewrite:\n"
        "    - {from: docker.io, to: mirror.acme.io/dockerhub}\n"
        "    - {from: 'index.docker.io/bitnami', to: mirror.acme.io/bitnami}\n"
    )
    assert [str(rule.source) for rule in policy.rewriter.rules] == ["docker.io", "docker.io/bitnami"]


ALLOW_MIRROR = "  allow: [mirror.acme.io/*]\n"
LONG = "/".join(["abcdefghij"] * 23)


@pytest.mark.parametrize(
    ("rules", "key", "problem"),
    [
        ("[{from: bitnami/redis, to: mirror.acme.io/x}]", "images.rewrite[0].from", "must begin with a registry host"),
        ("[{from: nginx, to: mirror.acme.io/x}]", "images.rewrite[0].from", "must begin with a registry host"),
        ("[{from: 'docker.io/*', to: mirror.acme.io/x}]", "images.rewrite[0].from", "'*' is not allowed"),
        ("[{from: docker.io, to: 'mirror.acme.io/*'}]", "images.rewrite[0].to", "'*' is not allowed"),
        ("[{from: docker.io, to: mirror/x}]", "images.rewrite[0].to", "must begin with a registry host"),
        ("[{from: docker.io}]", "images.rewrite[0].to", "is required"),
        ("[{from: docker.io, to: mirror.acme.io/x, when: always}]", "images.rewrite[0].when", "unknown key"),
        ("{from: docker.io, to: mirror.acme.io/x}", "images.rewrite", "valid list"),
        ("[{from: docker.io, to: mirror.acme.io/a}, {from: index.docker.io, to: mirror.acme.io/b}]",
         "images.rewrite[1].from", "'index.docker.io' is already images.rewrite[0].from"),
        # Results must be allowed (the table under test_every_result_must_be_allowed has the rest).
        ("[{from: docker.io, to: other.io/hub}]", "images.rewrite[0].to",
         "rewritten images such as 'other.io/hub/x/x' (from 'docker.io/x/x') would not be allowed "
         "by images.allow (mirror.acme.io/*)"),
        ("[{from: docker.io, to: registry.k8s.io}]", "images.rewrite[0].to",
         "rewritten images such as 'registry.k8s.io/x/x' (from 'docker.io/x/x') would not be allowed"),
        ("[{from: quay.io/acme, to: mirror.acme.io}]", "images.rewrite[0].to",
         "'mirror.acme.io' is a bare registry, so 'quay.io/acme' itself would become no image"),
        (f"[{{from: docker.io, to: 'mirror.acme.io/{LONG}'}}]", "images.rewrite[0].to",
         "would not be valid references: repository name must not be more than 255 characters"),
        # Idempotence: a result must not be rewritten again.
        ("[{from: docker.io, to: docker.io/mirror}]", "images.rewrite[0].to", "rewritten again by this same rule"),
        ("[{from: quay.io, to: mirror.acme.io/quay}, {from: mirror.acme.io, to: mirror.acme.io/other}]",
         "images.rewrite[0].to", "rewritten again by images.rewrite[1] ('mirror.acme.io')"),
        ("[{from: quay.io, to: mirror.acme.io/quay}, {from: mirror.acme.io/quay/x, to: mirror.acme.io/y}]",
         "images.rewrite[0].to", "rewritten again by images.rewrite[1] ('mirror.acme.io/quay/x')"),
    ],
)
def test_rewrite_refusals(rules: str, key: str, problem: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load(f"images:\n{ALLOW_MIRROR}  rewrite: {rules}\n")
    assert (caught.value.source, caught.value.key) == ("policy.yaml", key)
    assert problem in caught.value.problem


@pytest.mark.parametrize(
    ("source", "shortest"),
    [("quay.io", 1), ("docker.io", 2), ("docker.io/library", 1), ("quay.io/acme", 0), ("docker.io/acme/app", 0)],
)
def test_how_short_an_image_under_from_can_be(source: str, shortest: int) -> None:
    # docker.io/library as an image is docker.io/library/library; nginx is docker.io/library/nginx.
    assert shortest_rest(parse_prefix(source)) == shortest


M = "mirror.acme.io"


@pytest.mark.parametrize(
    ("allow", "rule", "example"),
    [
        # A bare registry allows everything a rule can produce there, and only there.
        ([M], "{from: quay.io/acme, to: mirror.acme.io/acme}", None),
        ([M + ":5000"], "{from: quay.io, to: mirror.acme.io/q}", "'mirror.acme.io/q/x' (from 'quay.io/x')"),
        # Exact repositories allow `to` itself, never what lies beneath it, whatever they name there.
        ([f"{M}/hub", f"{M}/hub/x"], "{from: docker.io/library, to: mirror.acme.io/hub}",
         "'mirror.acme.io/hub/x0' (from 'docker.io/library/x0')"),
        ([f"{M}/hub", f"{M}/hub/library/nginx"], "{from: docker.io, to: mirror.acme.io/hub}",
         "'mirror.acme.io/hub/x/x' (from 'docker.io/x/x')"),
        # A trailing /* allows the subtree; `to` itself is produced only when an image can equal `from`.
        ([f"{M}/hub/*"], "{from: docker.io, to: mirror.acme.io/hub}", None),
        ([f"{M}/hub/*"], "{from: docker.io/library, to: mirror.acme.io/hub}", None),
        ([f"{M}/acme/*"], "{from: quay.io/acme, to: mirror.acme.io/acme}",
         "'mirror.acme.io/acme' (from 'quay.io/acme')"),
        ([f"{M}/acme", f"{M}/acme/*"], "{from: quay.io/acme, to: mirror.acme.io/acme}", None),
        ([f"{M}/*"], "{from: quay.io/acme, to: mirror.acme.io/a/b/c}", None),
        # ... and it must reach up to the shallowest result: Docker Hub images have two components.
        ([f"{M}/hub/*/*"], "{from: docker.io, to: mirror.acme.io/hub}", None),
        ([f"{M}/hub/*/*"], "{from: docker.io/library, to: mirror.acme.io/hub}",
         "'mirror.acme.io/hub/x' (from 'docker.io/library/x')"),
        ([f"{M}/hub/library/*", f"{M}/hub/acme/*"], "{from: docker.io, to: mirror.acme.io/hub}",
         "'mirror.acme.io/hub/x/x' (from 'docker.io/x/x')"),
        ([f"{M}/hub/x/*"], "{from: quay.io, to: mirror.acme.io/hub}",
         "'mirror.acme.io/hub/x0' (from 'quay.io/x0')"),
        # A middle * stands for one component: along `to` it may stand for any of them ...
        ([f"{M}/*/q/*"], "{from: quay.io, to: mirror.acme.io/mirror/q}", None),
        ([f"{M}/*/app", f"{M}/team/app/*"], "{from: quay.io/team/app, to: mirror.acme.io/team/app}", None),
        ([f"{M}/*/*"], "{from: quay.io/acme, to: mirror.acme.io/acme}", "'mirror.acme.io/acme' (from 'quay.io/acme')"),
        # ... but a pattern that ends in a literal never allows the open set of names beneath `to`.
        ([f"{M}/*/q/x"], "{from: quay.io, to: mirror.acme.io/mirror/q}",
         "'mirror.acme.io/mirror/q/x0' (from 'quay.io/x0')"),
        ([f"{M}/q/*/x"], "{from: quay.io, to: mirror.acme.io/q}", "'mirror.acme.io/q/x0' (from 'quay.io/x0')"),
        # The example is an image this rule itself would rewrite: no other `from` names its components.
        ([f"{M}/q"], "{from: quay.io, to: mirror.acme.io/q}, {from: quay.io/x, to: mirror.acme.io/qx}",
         "'mirror.acme.io/q/x0' (from 'quay.io/x0')"),
    ],
)
def test_every_result_must_be_allowed(allow: list[str], rule: str, example: str | None) -> None:
    text = f"images:\n  allow: {allow}\n  rewrite: [{rule}]\n"
    if example is None:
        assert load(text)
        return
    with pytest.raises(PolicyError) as caught:
        load(text)
    assert caught.value.key == "images.rewrite[0].to"
    assert caught.value.problem.startswith(f"rewritten images such as {example} would not be allowed by images.allow")
    result, image = re.findall(r"'([^']+)'", example)
    policy = load(text.replace("images:\n", "images:\n  mode: off\n"))  # the same rules, unchecked
    assert rewritten(policy.rewriter, image) == result
    assert not Allowlist([parse_pattern(p) for p in allow]).allows(parse_reference(result))


@pytest.mark.parametrize(
    ("rule", "refused"),
    [
        ("{from: quay.io, to: docker.io}", True),  # quay.io/app would become docker.io/app = library/app
        ("{from: quay.io/acme, to: docker.io/acme}", True),  # quay.io/acme itself -> docker.io/acme
        ("{from: quay.io, to: docker.io/acme}", False),
        ("{from: quay.io/acme, to: docker.io/acme/quay}", False),
        ("{from: docker.io/library, to: docker.io/acme}", False),  # nginx becomes docker.io/acme/nginx
    ],
)
def test_one_component_docker_hub_results_are_refused(rule: str, refused: bool) -> None:
    text = f"images:\n  mode: off\n  rewrite: [{rule}]\n"
    if refused:
        with pytest.raises(PolicyError, match="one-component Docker Hub name"):
            load(text)
    else:
        assert load(text)


def test_identity_rules_are_allowed_and_change_nothing() -> None:
    policy = load("images:\n  mode: off\n  rewrite:\n    - {from: docker.io, to: docker.io/mirror}\n"
                  "    - {from: docker.io/mirror, to: docker.io/mirror}\n")
    assert rewritten(policy.rewriter, "docker.io/mirror/library/nginx") is None
    assert rewritten(policy.rewriter, "nginx") == "docker.io/mirror/library/nginx"


def test_mode_off_skips_the_allow_check_but_not_the_others() -> None:
    assert load("images:\n  mode: off\n  rewrite: [{from: docker.io, to: other.io/hub}]\n")
    with pytest.raises(PolicyError, match="rewritten again"):
        load("images:\n  mode: off\n  rewrite: [{from: docker.io, to: docker.io/hub}]\n")


# Few names, so that patterns, prefixes and images often meet; "x" is the first fresh name tried.
HOSTS = ["m.io", "docker.io", "quay.io"]
NAMES = ["a", "b", "x", "library"]
PREFIXES = st.builds(lambda host, path: "/".join([host, *path]),
                     st.sampled_from(HOSTS), st.lists(st.sampled_from(NAMES), max_size=3))
PROPERTY_SETTINGS = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])


def patterns(near: list[str]) -> st.SearchStrategy[str]:
    """Patterns of every kind, most of them at or beneath a ``to``, where they nearly cover it."""
    start = st.sampled_from([*HOSTS, *near, *near, *near])
    return st.builds(lambda head, path, beneath: "/".join([head, *path] + (["*"] if beneath else [])),
                     start, st.lists(st.sampled_from([*NAMES, "*"]), max_size=2), st.booleans())


def loadable(pair: tuple[str, str]) -> bool:
    """Leave out the rules that other tests show are refused whatever the allowlist."""
    source, target = pair
    depth = target.count("/")
    return (depth > 0 or "/" not in source) and not (target.startswith("docker.io") and depth == 1)


def compiled(allow: list[str], pairs: list[tuple[str, str]], mode: str) -> Policy:
    document = {"images": {"mode": mode, "allow": allow, "rewrite": [{"from": a, "to": b} for a, b in pairs]}}
    return Policy.compile(PolicySpec.model_validate(document), "random.yaml", repr(document).encode())


@PROPERTY_SETTINGS
@given(
    pairs=st.lists(st.tuples(PREFIXES, PREFIXES).filter(loadable), min_size=1, max_size=3,
                   unique_by=lambda pair: pair[0]),
    data=st.data(),
)
def test_a_policy_loads_exactly_when_every_rewritten_image_is_allowed(
    pairs: list[tuple[str, str]], data: st.DataObject
) -> None:
    allow = data.draw(st.lists(patterns([to for _, to in pairs]), max_size=5))
    try:
        policy = compiled(allow, pairs, "enforce")
    except (PolicyError, ValidationError) as exc:
        refusal = exc.problem if isinstance(exc, PolicyError) else ""
        assume("would not be allowed" in refusal)  # the other refusals have tests of their own
        # Refused: the example is an image under `from` that this policy really rewrites to a denied one.
        event("refused")
        result, image = re.findall(r"'([^']+)'", refusal)[:2]
        assert rewritten(compiled(allow, pairs, "off").rewriter, image) == result
        assert not Allowlist([parse_pattern(p) for p in allow]).allows(parse_reference(result))
        return
    # Loaded: every image under any `from`, in any shape, is allowed once rewritten.
    event("loaded")
    for _ in range(20):
        source = data.draw(st.sampled_from(pairs))[0]
        rest = data.draw(st.lists(st.sampled_from([*NAMES, "y", "x0"]), max_size=3))
        tag = data.draw(st.sampled_from(["", ":1", "@" + SHA]))
        for image in ("/".join([source, *rest]) + tag, "/".join(rest) + tag):  # also Docker Hub short names
            try:
                result = policy.rewriter.rewrite(parse_reference(image))
            except InvalidReference:
                continue
            if result is not None:
                assert policy.allowlist.allows(result), (image, str(result))

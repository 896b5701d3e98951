"""``images.rewrite``: prefixes on whole components, the most specific wins, and load refusals."""

from __future__ import annotations

import re

import pytest

from webhook.policy.model import PolicyError, parse_policy
from webhook.policy.references import parse_reference
from webhook.policy.rewrite import Prefix, Rewriter, RewriteRule, parse_prefix

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
        # Results must be allowed: both `to` itself and `to/x` are tried.
        ("[{from: docker.io, to: other.io/hub}]", "images.rewrite[0].to",
         "rewritten images such as 'other.io/hub' would not be allowed by images.allow (mirror.acme.io/*)"),
        ("[{from: docker.io, to: registry.k8s.io}]", "images.rewrite[0].to",  # a bare host: only to/x
         "rewritten images such as 'registry.k8s.io/x' would not be allowed"),
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


def test_both_to_and_to_slash_x_are_tried() -> None:
    # to itself is allowed, but nothing beneath it: refused for to/x.
    with pytest.raises(PolicyError, match=re.escape("'mirror.acme.io/hub/x' would not be allowed")):
        load("images:\n  allow: [mirror.acme.io/hub]\n  rewrite: [{from: docker.io, to: mirror.acme.io/hub}]")
    # Everything beneath it is allowed, but not to itself: refused for to.
    with pytest.raises(PolicyError, match=re.escape("'mirror.acme.io/hub' would not be allowed")):
        load("images:\n  allow: [mirror.acme.io/hub/*]\n  rewrite: [{from: docker.io, to: mirror.acme.io/hub}]")
    assert load("images:\n  allow: [mirror.acme.io/hub, mirror.acme.io/hub/*]\n"
                "  rewrite: [{from: docker.io, to: mirror.acme.io/hub}]")


@pytest.mark.parametrize(
    ("rule", "refused"),
    [
        ("{from: quay.io, to: docker.io}", True),  # quay.io/app would become docker.io/app = library/app
        ("{from: quay.io/acme, to: docker.io/acme}", True),  # quay.io/acme itself -> docker.io/acme
        ("{from: quay.io, to: docker.io/acme}", False),
        ("{from: quay.io/acme, to: docker.io/acme/quay}", False),
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

"""The policy file: every refusal names the file, the key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from webhook.policy.model import DEFAULT_POLICY_SOURCE, PolicyError, load_policy, parse_policy
from webhook.policy.references import parse_reference


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return load_policy(path)


def test_embedded_default_is_as_documented() -> None:
    policy = load_policy(None)
    assert policy.source == DEFAULT_POLICY_SOURCE
    assert policy.mode == "enforce"
    assert [str(p) for p in policy.allowlist.patterns] == [
        "registry.k8s.io", "docker.io/library/*", "ghcr.io/*", "quay.io/*",
    ]
    assert policy.exempt_namespaces == {"kube-system"}
    assert not policy.require_digest


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("images: {allow: [acme-*]}", "images.allow[0]", "whole path component"),
        ("images: {allow: [reg.io, '*']}", "images.allow[1]", "bare"),
        ("images: {allow: ['nginx:1.27']}", "images.allow[0]", "tag"),
        ("images: {allow: [x], mod: warn}", "images.mod", "unknown key"),
        ("images: {allow: [x]}\nexemptNamespace: [a]", "exemptNamespace", "unknown key"),
        ("images: {mode: block, allow: [x]}", "images.mode", "'enforce', 'warn' or 'off'"),
        ("images: {mode: on, allow: [x]}", "images.mode", "'enforce', 'warn' or 'off'"),
        ("images: {mode: null, allow: [x]}", "images.mode", "'enforce', 'warn' or 'off'"),
        ("images: {allow: reg.io}", "images.allow", "valid list"),
        ("images: {allow: [1]}", "images.allow[0]", "string"),
        ("images: {allow: [x], requireDigest: maybe}", "images.requireDigest", "boolean"),
        ("images: {mode: warn}", "images", "'allow' is required"),
        ("exemptNamespaces: []", "images", "is required"),
        ("images: {allow: [x]}\nexemptNamespaces: kube-system", "exemptNamespaces", "valid list"),
    ],
)
def test_refusals_name_file_key_and_problem(tmp_path: Path, text: str, key: str, problem: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load(tmp_path, text)
    error = caught.value
    assert error.source == str(tmp_path / "policy.yaml")
    assert error.key == key
    assert problem in error.problem
    assert str(error).startswith(f"policy file {tmp_path / 'policy.yaml'}: {key}: ")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("images: [", "not valid YAML"),
        ("images: {allow: [a]}\nimages: {allow: [b]}", "duplicate key 'images'"),
        ("- images", "top level must be a mapping"),
        ("", "top level must be a mapping"),
    ],
)
def test_unreadable_files_are_refused(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(PolicyError, match=problem):
        load(tmp_path, text)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot be read"):
        load_policy(tmp_path / "absent.yaml")


@pytest.mark.parametrize("word", ["off", "no", "false", "Off"])
def test_yaml_false_means_off(tmp_path: Path, word: str) -> None:
    assert load(tmp_path, f"images: {{mode: {word}}}").mode == "off"


def test_empty_allow_list_denies_everything(tmp_path: Path) -> None:
    policy = load(tmp_path, "images: {allow: []}")
    assert not policy.allowlist.allows(parse_reference("registry.k8s.io/pause"))


def test_policy_hash_tracks_content() -> None:
    first = parse_policy(b"images: {allow: [a]}", "x")
    assert first.sha256 == parse_policy(b"images: {allow: [a]}", "y").sha256
    assert first.sha256 != parse_policy(b"images: {allow: [b]}", "x").sha256


# --- what a newcomer meets ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("image:\n  allow: [ghcr.io/*]\n", "image", "unknown key (did you mean 'images'?)"),
        ("images: {alow: [x]}", "images.alow", "unknown key (did you mean 'allow'?)"),
        ("images: {allow: [x], rewrite: [{form: a.io, to: b.io}]}", "images.rewrite[0].form",
         "unknown key (did you mean 'from'?)"),
        ("images: {allow: [x]}\nzzz: 1", "zzz",
         "unknown key (the keys here are images, exemptNamespaces, failureMode, defaults, scopes, exceptions, "
         "exceptionWarningDays)"),
    ],
)
def test_an_unknown_key_is_named_before_what_it_leaves_missing(tmp_path: Path, text: str, key: str,
                                                              problem: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load(tmp_path, text)
    assert (caught.value.key, caught.value.problem) == (key, problem)


def test_an_unquoted_star_says_where_and_to_quote_it_and_that_it_would_not_do(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as caught:
        load(tmp_path, "images:\n  allow:\n  - ghcr.io/*\n  - *\n")
    assert str(caught.value) == (
        f"policy file {tmp_path / 'policy.yaml'}: not valid YAML: while scanning an alias: expected alphabetic or "
        "numeric character, but found '\\n' (line 4, column 6); an unquoted * starts a YAML alias: quote it, as in "
        "- \"*\"; but a '*' alone is not a valid pattern either (images.allow[1]: a bare '*' would allow every "
        "image; list the registries instead)")


def test_an_unquoted_star_where_a_quoted_one_is_fine_gets_only_the_hint(tmp_path: Path) -> None:
    text = ("images: {mode: off}\ndefaults:\n  - group: example.sealyun.com\n    versions:\n      - *\n"
            "    kinds: [Project]\n    set: {spec: {replicas: 1}}\n")
    with pytest.raises(PolicyError) as caught:
        load(tmp_path, text)
    assert caught.value.problem.endswith("(line 5, column 10); an unquoted * starts a YAML alias: quote it, as in "
                                         "- \"*\"")
    assert load(tmp_path, text.replace("- *", "- '*'")).defaults.rules[0].versions == {"*"}


def test_a_policy_may_use_merge_keys_and_utf16(tmp_path: Path) -> None:
    text = ("x-project: &project {group: example.sealyun.com, versions: ['*'], kinds: [Project]}\n"
            "images: {allow: [ghcr.io/*]}\n")
    with pytest.raises(PolicyError, match="x-project: unknown key"):
        load(tmp_path, text)
    text = ("images: {allow: [ghcr.io/*]}\ndefaults:\n  - &project {group: example.sealyun.com, versions: ['*'], "
            "kinds: [Project], set: {spec: {replicas: 1}}}\n  - {<<: *project, set: {spec: {paused: false}}}\n")
    (tmp_path / "policy.yaml").write_bytes("\ufeff".encode("utf-16-le") + text.encode("utf-16-le"))
    policy = load_policy(tmp_path / "policy.yaml")
    assert [rule.kinds for rule in policy.defaults.rules] == [{"Project"}, {"Project"}]


def test_the_newcomers_messages_from_the_command(tmp_path: Path) -> None:
    from tests.test_cli import webhook  # noqa: PLC0415

    policy = tmp_path / "policy.yaml"
    policy.write_text("image:\n  allow: [ghcr.io/*]\n")
    result = webhook("check", "--policy", str(policy), "manifests/examples")
    assert (result.returncode, result.stderr) == (
        2, f"webhook: error: policy file {policy}: image: unknown key (did you mean 'images'?)\n")

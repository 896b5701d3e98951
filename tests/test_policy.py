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

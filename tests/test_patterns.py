"""Allowlist patterns: whole-component matching, the known bypasses, and load-time refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webhook.policy.patterns import Allowlist, PatternError, parse_pattern
from webhook.policy.references import parse_reference

SHA = "sha256:" + "c" * 64

# (pattern, image, allowed?)
MATCHES = [
    ("registry.k8s.io", "registry.k8s.io/pause:3.9", True),
    ("registry.k8s.io", "registry.k8s.io/a/b/c", True),
    ("registry.k8s.io", "registry.k8s.io.evil.com/pause", False),
    ("reg.io", "reg.io.evil.com/x", False),
    ("reg.io", "evilreg.io/x", False),
    ("reg.io", "reg.io:5000/x", False),  # a port is part of the registry
    ("reg.io:5000", "reg.io:5000/x", True),
    ("reg.io:5000", "reg.io/x", False),
    ("REG.IO", "reg.io/x", True),  # hosts compare case-insensitively
    ("reg.io", "Reg.Io/x", True),
    ("localhost:5000", "localhost:5000/app", True),
    ("nginx:5000", "nginx:5000/app", True),  # a single component with a port is a host
    ("ghcr.io/acme/*", "ghcr.io/acme/app", True),
    ("ghcr.io/acme/*", "ghcr.io/acme/team/app:1", True),
    ("ghcr.io/acme/*", "ghcr.io/acme", False),  # beneath, not the prefix itself
    ("ghcr.io/acme/*", "ghcr.io/acmeevil/x", False),
    ("ghcr.io/acme/*", "ghcr.io/acme-evil/x", False),
    ("docker.io/acme/*", "acme/app", True),
    ("docker.io/acme/*", "docker.io/acmeevil/app", False),
    ("acme/*", "acme/app", True),
    ("docker.io/acme", "docker.io/acmeevil", False),
    ("docker.io/library/*", "nginx", True),
    ("docker.io/library/*", "nginx@" + SHA, True),
    ("docker.io/library/*", "index.docker.io/library/nginx", True),
    ("docker.io/library/*", "registry-1.docker.io/nginx", True),
    ("docker.io/library/*", "acme/nginx", False),
    ("nginx", "nginx:1.27", True),
    ("nginx", "docker.io/library/nginx", True),
    ("nginx", "docker.io/library/nginx/sub", False),
    ("nginx", "nginxx", False),
    ("docker.io/nginx", "nginx", True),
    ("docker.io/*", "nginx", True),
    ("docker.io/*", "acme/app", True),
    ("docker.io/*", "quay.io/acme/app", False),
    ("quay.io/org/app", "quay.io/org/app:1", True),
    ("quay.io/org/app", "quay.io/org/app@" + SHA, True),
    ("quay.io/org/app", "quay.io/org/app2", False),
    ("quay.io/org/app", "quay.io/org/app/sub", False),
    ("quay.io/*/charts/*", "quay.io/team/charts/redis", True),
    ("quay.io/*/charts/*", "quay.io/team/charts/redis/x", True),
    ("quay.io/*/charts/*", "quay.io/team/charts", False),
    ("quay.io/*/charts/*", "quay.io/a/b/charts/redis", False),  # one component, not several
    ("quay.io/*/charts/*", "quay.io/team/chartsx/redis", False),
    ("quay.io/*/charts", "quay.io/team/charts", True),
    ("quay.io/*/charts", "quay.io/team/charts/x", False),
]

LOAD_ERRORS = [
    ("", "non-empty"),
    ("*", "bare"),
    ("*/charts", "registry"),
    ("*.example.com", "registry host"),
    ("reg.*.io/x", "registry host"),
    ("acme-*", "whole path component"),
    ("ghcr.io/acme-*/x", "whole path component"),
    ("nginx:1.27", "tag"),
    ("docker.io/nginx:1.27", "tag"),
    ("quay.io/org/app@" + SHA, "digest"),
    ("Harbor", "lowercase"),
    ("reg.io/Team/app", "lowercase"),
    ("reg.io/", "empty path component"),
    ("reg.io//x", "empty path component"),
    ("reg.io/a b", "white space"),
    ("reg_io.com:x/y", "host"),
]


@pytest.mark.parametrize(("pattern", "image", "expected"), MATCHES)
def test_matching_is_on_whole_components(pattern: str, image: str, expected: bool) -> None:
    assert Allowlist([parse_pattern(pattern)]).allows(parse_reference(image)) is expected


@pytest.mark.parametrize(("pattern", "reason"), LOAD_ERRORS)
def test_ambiguous_patterns_are_refused(pattern: str, reason: str) -> None:
    with pytest.raises(PatternError, match=reason):
        parse_pattern(pattern)


def test_an_empty_allowlist_allows_nothing() -> None:
    assert not Allowlist([]).allows(parse_reference("nginx"))


def test_patterns_display_as_written() -> None:
    assert str(Allowlist([parse_pattern("ghcr.io/*"), parse_pattern("nginx")])) == "ghcr.io/*, nginx"


# --- properties: an index must answer exactly what a linear scan answers ---------------------

label = st.from_regex(r"[a-z][a-z0-9]{0,4}", fullmatch=True)
hosts = st.sampled_from(["reg.io", "reg.io:5000", "docker.io", "quay.io", "localhost"])
paths = st.lists(st.sampled_from(["a", "b", "ab", "c"]), min_size=0, max_size=3)


@st.composite
def patterns(draw: st.DrawFn) -> str:
    host = draw(hosts)
    path = draw(paths)
    if path and draw(st.booleans()):
        path[draw(st.integers(0, len(path) - 1))] = "*"
    if draw(st.booleans()):
        path.append("*")
    return "/".join([host, *path])


@st.composite
def images(draw: st.DrawFn) -> str:
    return "/".join([draw(hosts), *draw(st.lists(st.sampled_from(["a", "b", "ab", "c", "d"]), min_size=1, max_size=4))])


@given(st.lists(patterns(), max_size=12), images())
def test_index_agrees_with_a_linear_scan(texts: list[str], image: str) -> None:
    compiled = [parse_pattern(t) for t in texts]
    ref = parse_reference(image)
    assert Allowlist(compiled).allows(ref) == any(p.matches(ref) for p in compiled)


@given(patterns(), images(), label)
def test_no_suffix_bypass(pattern_text: str, image: str, suffix: str) -> None:
    """Characters appended to the registry or to a literal path component always break the match."""
    pattern = parse_pattern(pattern_text)
    ref = parse_reference(image)
    if not pattern.matches(ref):
        return
    evil_host = parse_reference(f"{ref.registry.split(':')[0]}.{suffix}.com/{'/'.join(ref.path)}")
    assert not pattern.matches(evil_host)
    literal = [i for i, p in enumerate(pattern.path) if p != "*"]
    for i in literal:
        path = list(ref.path)
        path[i] += suffix
        assert not pattern.matches(parse_reference(f"{ref.registry}/{'/'.join(path)}"))

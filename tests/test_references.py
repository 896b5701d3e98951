"""Image references: a table of the grammar's cases, plus properties checked against an
independent implementation (docker-image-py) so our parser cannot drift from distribution's."""

from __future__ import annotations

import contextlib
import gc
import tracemalloc

import pytest
from docker_image import reference as oracle
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from webhook.policy.references import (
    IMAGE_ID_PROBLEM,
    PARSE_CACHE_LENGTH_MAX,
    PARSE_CACHE_SIZE,
    ImageID,
    InvalidReference,
    _parse_cached,
    parse_reference,
)

SHA = "sha256:" + "a" * 64

NORMALISED = [
    ("nginx", "docker.io/library/nginx"),
    ("nginx:1.27", "docker.io/library/nginx:1.27"),
    ("library/nginx", "docker.io/library/nginx"),
    ("docker.io/nginx", "docker.io/library/nginx"),
    ("index.docker.io/nginx", "docker.io/library/nginx"),
    ("registry-1.docker.io/nginx:1", "docker.io/library/nginx:1"),
    ("Index.Docker.IO/acme/app", "docker.io/acme/app"),
    ("acme/app", "docker.io/acme/app"),
    ("docker.io/acme/app/sub", "docker.io/acme/app/sub"),
    ("localhost/app", "localhost/app"),
    ("localhost:5000/app:dev", "localhost:5000/app:dev"),
    ("reg.io:5000/team/app", "reg.io:5000/team/app"),
    ("REG.io/team/app", "reg.io/team/app"),
    ("Foo/bar", "foo/bar"),  # an upper-case first component is a registry host
    ("[::1]:5000/app", "[::1]:5000/app"),
    ("quay.io/org/app@" + SHA, "quay.io/org/app@" + SHA),
    ("quay.io/org/app:v1@" + SHA, "quay.io/org/app:v1@" + SHA),
    ("nginx@sha512:" + "b" * 128, "docker.io/library/nginx@sha512:" + "b" * 128),
    ("a__b/c-d---e.f_g", "docker.io/a__b/c-d---e.f_g"),
    ("x:" + "t" * 128, "docker.io/library/x:" + "t" * 128),
    # Shaped like algorithm:hex, but the name is no hash function's: a repository and a tag.
    ("redis:7", "docker.io/library/redis:7"),
    ("nginx:1", "docker.io/library/nginx:1"),
    ("cafe:beef", "docker.io/library/cafe:beef"),
    ("sha:5000", "docker.io/library/sha:5000"),
    ("sha256:latest", "docker.io/library/sha256:latest"),  # not hex
    ("cafe", "docker.io/library/cafe"),  # bare hex, but not 64 characters
    ("docker.io/library/sha256:abc", "docker.io/library/sha256:abc"),  # not bare
    ("sha256:abc@" + SHA, "docker.io/library/sha256:abc@" + SHA),
]

INVALID = [
    ("", "empty"),
    (" nginx", "white space"),
    ("nginx ", "white space"),
    ("Nginx", "lowercase"),
    ("foo.io/Bar", "lowercase"),
    ("nginx:", "tag"),
    (":tag", "empty component"),
    ("nginx:bad tag", "white space"),
    ("x:" + "t" * 129, "tag"),
    ("x:-bad", "tag"),
    ("x//y", "empty component"),
    ("x/", "empty component"),
    ("reg.io:port/x", "not a valid host"),
    ("-reg.io/x", "not a valid host"),
    ("foo___bar", "not valid"),
    ("foo-/bar", "not valid"),
    ("a" * 64, "image ID"),
    ("nginx@", "digest"),
    ("nginx@sha256:" + "a" * 63, "64 hex"),
    ("ghcr.io/acme/app@sha256:abc", "sha256 digest must have 64 hex characters, not 3"),
    ("nginx@sha512:" + "a" * 64, "sha512 digest must have 128 hex characters, not 64"),
    ("nginx@md5:abc", "algorithm 'md5' is not supported"),
    ("nginx@sha256:" + "A" * 64, "lowercase hex"),
    ("nginx@md5:" + "a" * 32, "not supported"),
    ("nginx@sha256", "algorithm:hex"),
    ("nginx@sha256:" + "a" * 64 + "@x", "algorithm:hex"),
    ("ngïnx", "non-ASCII"),
    ("a/" + "b" * 260, "255"),
    ("x" * 5000, "limit"),
    ("reg.io:5000:1/x", "not a valid host"),
    ("reg.io/a:b/c", "':' outside the tag"),
    ("a:b/c", "not a valid host"),
]


@pytest.mark.parametrize(("text", "expected"), NORMALISED)
def test_normalises_like_distribution(text: str, expected: str) -> None:
    assert str(parse_reference(text)) == expected


@pytest.mark.parametrize(("text", "reason"), INVALID)
def test_refuses_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(InvalidReference, match=reason):
        parse_reference(text)


@pytest.mark.parametrize("text", [
    SHA, "sha256:" + "A" * 64, "SHA256:abc", "sha256:0", "sha512:" + "f" * 128, "sha384:1", "sha1:da39a3ee",
    "md5:d41d8cd9", "sha3-256:ab", "sha512_256:ab", "shake128:0", "blake2b:ff", "blake2s-256:ff", "blake3:af13",
    "sm3:1", "sha256+b64u:abc", "a" * 64, "F" * 64,
])
def test_image_ids_are_refused_as_image_ids(text: str) -> None:
    with pytest.raises(ImageID) as caught:
        parse_reference(text)
    assert caught.value.problem == IMAGE_ID_PROBLEM
    assert "does not parse" not in caught.value.problem


def test_keeps_tag_and_digest_and_adds_no_latest() -> None:
    ref = parse_reference("quay.io/org/app")
    assert (ref.tag, ref.digest) == (None, None)
    assert str(ref) == "quay.io/org/app"


def test_the_parse_cache_keeps_only_short_strings_and_a_bounded_number() -> None:
    _parse_cached.cache_clear()
    gc.collect()
    tracemalloc.start()
    try:
        for i in range(5000):
            for text in (f"a{i}/" + "B" * 2000, f"c{i}/" + "D" * (PARSE_CACHE_LENGTH_MAX - 8), f"e{i}/f:1"):
                with contextlib.suppress(InvalidReference):
                    parse_reference(text)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] / 2**20
    finally:
        tracemalloc.stop()
    assert _parse_cached.cache_info().currsize == PARSE_CACHE_SIZE
    assert held < 4, f"{held:.1f} MiB held"


# --- properties ---------------------------------------------------------------------------

component = st.from_regex(r"[a-z0-9]{1,6}(?:(?:[._]|__|-{1,2})[a-z0-9]{1,6}){0,2}", fullmatch=True)
host_label = st.from_regex(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?", fullmatch=True)
host = st.one_of(
    st.builds(".".join, st.lists(host_label, min_size=2, max_size=3)),
    st.just("localhost"),
).flatmap(lambda h: st.sampled_from([h, f"{h}:5000", f"{h}:443"]))
tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
digest = st.sampled_from(["sha256:" + "0123456789abcdef" * 4, "sha512:" + "f" * 128])


@st.composite
def references(draw: st.DrawFn) -> str:
    components = draw(st.lists(component, min_size=1, max_size=4))
    registry = draw(st.none() | host)
    if registry is None and len(components) > 1:
        components[0] = components[0].replace(".", "-")  # a dotted first component is a host
    name = "/".join(components)
    text = f"{registry}/{name}" if registry else name
    if draw(st.booleans()):
        text += ":" + draw(tag)
    if draw(st.booleans()):
        text += "@" + draw(digest)
    return text


def oracle_name(text: str) -> str | None:
    try:
        ref = oracle.Reference.parse_normalized_named(text)
    except Exception:  # noqa: BLE001 - the oracle raises several unrelated types
        return None
    name = ref["name"]
    host, _, rest = name.partition("/")
    host = host.lower()
    if host in ("index.docker.io", "registry-1.docker.io"):  # fine-print: both aliases fold
        host = "docker.io"
        rest = rest if "/" in rest else f"library/{rest}"
    out = f"{host}/{rest}"
    if ref["tag"]:
        out += f":{ref['tag']}"
    if ref["digest"]:
        out += f"@{ref['digest']}"
    return out


def image_id(text: str) -> bool:
    """We refuse image IDs where distribution reads a repository and a tag (``sha256:abc``)."""
    try:
        parse_reference(text)
    except ImageID:
        return True
    except InvalidReference:
        pass
    return False


def ours(text: str) -> str | None:
    try:
        return str(parse_reference(text))
    except InvalidReference:
        return None


@settings(max_examples=400)
@given(references())
def test_valid_references_agree_with_the_oracle(text: str) -> None:
    assume(not image_id(text))
    assert ours(text) is not None
    assert ours(text) == oracle_name(text)


@settings(max_examples=400)
@given(st.text(alphabet="abcAB09.:/@_-[]", max_size=24) | references().map(lambda t: t[:-1]))
@example("registry-1.docker.io/x/y")
@example("a.b/c:d/e")
def test_arbitrary_text_agrees_with_the_oracle(text: str) -> None:
    assume(not image_id(text))
    assert ours(text) == oracle_name(text)


@given(references())
def test_normalisation_is_idempotent(text: str) -> None:
    assume(not image_id(text))
    once = parse_reference(text)
    assert parse_reference(str(once)) == once

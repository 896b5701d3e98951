"""Container image references, parsed and normalised as distribution/reference does.

We write our own parser rather than wrap docker-image-py because a denial has to say
*why* a reference is invalid, digests must be checked the way go-digest checks them,
and the hot path wants an immutable, cached, typed value. docker-image-py stays in the
test suite as an independent oracle for differential property tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

DEFAULT_REGISTRY = "docker.io"
OFFICIAL_PREFIX = "library"
DOCKER_HUB_ALIASES = frozenset({"index.docker.io", "registry-1.docker.io"})
NAME_TOTAL_LENGTH_MAX = 255
# Anything longer is rejected before a regex ever sees it.
REFERENCE_LENGTH_MAX = 4096

# The grammar of github.com/distribution/reference (regexp.go), ASCII only.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]+"  # lengths: _check_digest

PATH_COMPONENT_RE = re.compile(_PATH_COMPONENT, re.ASCII)
REGISTRY_RE = re.compile(rf"{_HOST}(?::[0-9]+)?", re.ASCII)
_TAG_RE = re.compile(_TAG, re.ASCII)
_DIGEST_RE = re.compile(_DIGEST, re.ASCII)
# An image ID where a reference belongs. The runtime reads a bare ``algorithm:hex`` (and a bare
# 64-character hex string) as the ID of an image it already holds, and runs that image without
# pulling anything, so no registry rule can speak for it. ``redis:7`` has the same shape, so
# the algorithm is recognised by name, not as any word: the hash families digests are written
# with (SHA-1/2/3 as sha1, sha256, sha3-256, sha512_256; SHAKE; BLAKE2 and BLAKE3; MD4/MD5; SM3;
# RIPEMD; Keccak), in any case, extended as the OCI image spec allows (``sha256+b64u``). No
# Docker Hub official image has such a name. Any hex length and case: runtimes differ in what
# they resolve (prefixes, upper case), and none of these strings is a name anyone means.
# Shorter bare hex strings are left alone: ``cafe`` is a valid repository name.
_HASH_FAMILY = r"(?:sha[0-9]+|shake[0-9]*|blake[0-9][bs]?[0-9]*|md[45]|sm3|ripemd[0-9]*|keccak[0-9]*)"
_IMAGE_ID_RE = re.compile(rf"{_HASH_FAMILY}(?:[+._-][a-z0-9]+)*:[0-9a-f]+|[0-9a-f]{{64}}", re.ASCII | re.IGNORECASE)
IMAGE_ID_PROBLEM = (
    "is an image ID, not an image reference: the runtime would run whatever image on the node has this ID; "
    "name the image as repository@sha256:..."
)
# go-digest: the algorithms distribution accepts, with their hex lengths.
_DIGEST_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}
_LOWER_HEX_RE = re.compile(r"[a-f0-9]+", re.ASCII)
# What str.isspace() calls white space, found in C: a generator over the characters cost a
# quarter of the parse.
_SPACE_RE = re.compile(r"\s")


class InvalidReference(ValueError):
    """A reference that does not parse; the message says why, for a human."""

    @property
    def problem(self) -> str:
        """What a denial says after the image."""
        return f"does not parse: {self}"


class ImageID(InvalidReference):
    """An image ID (``sha256:<hex>``) where a reference belongs; ``problem`` says so plainly."""

    def __init__(self) -> None:
        super().__init__(IMAGE_ID_PROBLEM)

    @property
    def problem(self) -> str:
        return IMAGE_ID_PROBLEM


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A normalised reference: ``registry`` is lower-cased and Docker Hub aliases are folded."""

    registry: str
    path: tuple[str, ...]
    tag: str | None = None
    digest: str | None = None

    @property
    def repository(self) -> str:
        return f"{self.registry}/{'/'.join(self.path)}"

    def __str__(self) -> str:
        text = self.repository
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def looks_like_registry(component: str) -> bool:
    """distribution's test: a first component is a host when it has '.' or ':', or is localhost."""
    return "." in component or ":" in component or component == "localhost"


def split_registry(name: str) -> tuple[str | None, str]:
    """Split off the registry as ``splitDockerDomain`` does; None means Docker Hub."""
    first, slash, rest = name.partition("/")
    if slash and (looks_like_registry(first) or first.lower() != first):
        return first, rest
    return None, name


def normalise_registry(host: str) -> str:
    host = host.lower()
    return DEFAULT_REGISTRY if host in DOCKER_HUB_ALIASES else host


def _parse_or_reason(text: str) -> ImageRef | str:
    try:
        return _parse(text)
    except InvalidReference as exc:
        return str(exc)


# Parsed references are cached, but only strings a real reference fits in: a long one may
# keep its own text twice (key and reason), and 8192 strings of 4 KiB held 68 MiB. Capped so,
# the cache holds at most about 3 MiB; a longer string is parsed each time (a few µs).
PARSE_CACHE_SIZE = 4096
PARSE_CACHE_LENGTH_MAX = 256
_parse_cached = lru_cache(maxsize=PARSE_CACHE_SIZE)(_parse_or_reason)


def parse_reference(text: str) -> ImageRef:
    """Parse and normalise, like ``ParseNormalizedNamed``; raise InvalidReference with a reason."""
    if len(text) > REFERENCE_LENGTH_MAX:
        raise InvalidReference(f"reference is {len(text)} characters long; the limit is {REFERENCE_LENGTH_MAX}")
    if _IMAGE_ID_RE.fullmatch(text):
        raise ImageID
    result = _parse_cached(text) if len(text) <= PARSE_CACHE_LENGTH_MAX else _parse_or_reason(text)
    if isinstance(result, str):
        raise InvalidReference(result)
    return result


def _parse(text: str) -> ImageRef:
    if not text:
        raise InvalidReference("the reference is empty")
    if _SPACE_RE.search(text):
        raise InvalidReference("the reference contains white space")
    if not text.isascii():
        raise InvalidReference("the reference contains non-ASCII characters")

    name, at, digest = text.partition("@")
    if at and not digest:
        raise InvalidReference("'@' must be followed by a digest")
    registry, remainder = split_registry(name)
    if registry is not None and not REGISTRY_RE.fullmatch(registry):
        raise InvalidReference(f"registry {registry!r} is not a valid host[:port]")

    remote, colon, tag = remainder.rpartition(":") if ":" in remainder else (remainder, "", "")
    if colon and "/" in tag:  # a colon in an earlier component: not a tag separator
        raise InvalidReference(f"path {remainder!r} contains ':' outside the tag")
    if colon and not _TAG_RE.fullmatch(tag):
        raise InvalidReference(f"tag {tag!r} is not valid (letters, digits, '_', '.', '-'; at most 128)")

    host = DEFAULT_REGISTRY if registry is None else normalise_registry(registry)
    components = remote.split("/")
    if host == DEFAULT_REGISTRY and len(components) == 1:
        components = [OFFICIAL_PREFIX, *components]
    for component in components:
        if not component:
            raise InvalidReference(f"repository path {remote!r} has an empty component")
        if component.lower() != component:
            raise InvalidReference(f"repository name {remote!r} must be lowercase")
        if not PATH_COMPONENT_RE.fullmatch(component):
            raise InvalidReference(
                f"path component {component!r} is not valid "
                "(lowercase letters and digits, joined by '.', '_', '__' or dashes)"
            )
    full_name_length = len(registry or DEFAULT_REGISTRY) + 1 + len("/".join(components))
    if full_name_length > NAME_TOTAL_LENGTH_MAX:
        raise InvalidReference(f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")
    if at:
        _check_digest(digest)
    return ImageRef(host, tuple(components), tag if colon else None, digest if at else None)


def _check_digest(digest: str) -> None:
    if not _DIGEST_RE.fullmatch(digest):
        raise InvalidReference(f"digest {digest!r} is not of the form algorithm:hex")
    algorithm, _, hex_part = digest.partition(":")
    expected = _DIGEST_HEX_LENGTH.get(algorithm)
    if expected is None:
        raise InvalidReference(f"digest algorithm {algorithm!r} is not supported (sha256, sha384, sha512)")
    if len(hex_part) != expected:
        raise InvalidReference(f"{algorithm} digest must have {expected} hex characters, not {len(hex_part)}")
    if not _LOWER_HEX_RE.fullmatch(hex_part):
        raise InvalidReference(f"{algorithm} digest must be lowercase hex")

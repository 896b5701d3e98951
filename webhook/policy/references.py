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
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}", re.ASCII)
# go-digest: the algorithms distribution accepts, with their hex lengths.
_DIGEST_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}
_LOWER_HEX_RE = re.compile(r"[a-f0-9]+", re.ASCII)


class InvalidReference(ValueError):
    """A reference that does not parse; the message says why, for a human."""


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


@lru_cache(maxsize=8192)
def _parse_cached(text: str) -> ImageRef | str:
    try:
        return _parse(text)
    except InvalidReference as exc:
        return str(exc)


def parse_reference(text: str) -> ImageRef:
    """Parse and normalise, like ``ParseNormalizedNamed``; raise InvalidReference with a reason."""
    if len(text) > REFERENCE_LENGTH_MAX:
        raise InvalidReference(f"reference is {len(text)} characters long; the limit is {REFERENCE_LENGTH_MAX}")
    result = _parse_cached(text)
    if isinstance(result, str):
        raise InvalidReference(result)
    return result


def _parse(text: str) -> ImageRef:
    if not text:
        raise InvalidReference("the reference is empty")
    if text != text.strip() or any(ch.isspace() for ch in text):
        raise InvalidReference("the reference contains white space")
    if not text.isascii():
        raise InvalidReference("the reference contains non-ASCII characters")
    if _IDENTIFIER_RE.fullmatch(text):
        raise InvalidReference("a 64-character hexadecimal string is an image ID, not a repository name")

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

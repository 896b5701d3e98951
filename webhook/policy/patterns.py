"""Allowlist patterns: compiled once at load, indexed by registry host.

A pattern is a repository name normalised like a reference, where ``*`` may stand for
exactly one whole path component and a trailing ``/*`` means "anything beneath".
Matching is on whole components, so ``ghcr.io/acme/*`` can never admit ``ghcr.io/acmeevil``
and ``reg.io`` can never admit ``reg.io.evil.com``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from webhook.policy.references import (
    DEFAULT_REGISTRY,
    OFFICIAL_PREFIX,
    PATH_COMPONENT_RE,
    REGISTRY_RE,
    ImageRef,
    looks_like_registry,
    normalise_registry,
    split_registry,
)

WILDCARD = "*"
# Messages name this many patterns and count the rest: a denial is read by a person, and an
# allowlist of a thousand patterns would make it a page long (and cost more than the decision).
MAX_LISTED_PATTERNS = 10


class PatternError(ValueError):
    """A pattern that cannot be loaded; the message is meant for the policy author."""


@dataclass(frozen=True, slots=True)
class Pattern:
    registry: str
    path: tuple[str, ...]
    beneath: bool  # trailing "/*": strictly below ``path``, at any depth
    text: str = field(default="", compare=False)  # as the policy author wrote it

    def __str__(self) -> str:
        return self.text or self.normalised

    @property
    def normalised(self) -> str:
        parts = [self.registry, *self.path]
        if self.beneath and self.path:
            parts.append(WILDCARD)
        return "/".join(parts)

    def matches(self, ref: ImageRef) -> bool:
        if ref.registry != self.registry:
            return False
        n = len(self.path)
        if len(ref.path) < n or (len(ref.path) > n) != self.beneath:
            return False
        return all(p in (WILDCARD, c) for p, c in zip(self.path, ref.path, strict=False))


def parse_pattern(text: str) -> Pattern:
    """Normalise one ``images.allow`` entry, refusing anything ambiguous."""
    if not isinstance(text, str) or not text:
        raise PatternError("a pattern must be a non-empty string")
    if text == WILDCARD:
        raise PatternError("a bare '*' would allow every image; list the registries instead")
    if "@" in text:
        raise PatternError(f"pattern {text!r} has a digest; patterns name repositories only")
    if any(ch.isspace() for ch in text):
        raise PatternError(f"pattern {text!r} contains white space")
    if "/" not in text:
        if ":" in text and not REGISTRY_RE.fullmatch(text):
            raise PatternError(f"pattern {text!r} has a tag; patterns name repositories only")
        if looks_like_registry(text):
            return Pattern(_registry(text, text), (), beneath=True, text=text)
        return _with_path(text, DEFAULT_REGISTRY, [text])
    first = text.split("/", 1)[0]
    if first == WILDCARD:
        raise PatternError(f"pattern {text!r} has '*' as the registry; name the registry explicitly")
    registry, remainder = split_registry(text)
    if ":" in remainder:
        raise PatternError(f"pattern {text!r} has a tag; patterns name repositories only")
    host = DEFAULT_REGISTRY if registry is None else _registry(registry, text)
    return _with_path(text, host, remainder.split("/"))


def _registry(host: str, text: str) -> str:
    if WILDCARD in host:
        raise PatternError(f"pattern {text!r}: '*' cannot stand in a registry host")
    if not REGISTRY_RE.fullmatch(host):
        raise PatternError(f"pattern {text!r}: {host!r} is not a valid registry host[:port]")
    return normalise_registry(host)


def _with_path(text: str, host: str, components: list[str]) -> Pattern:
    beneath = components[-1] == WILDCARD
    if beneath:
        components = components[:-1]
    if host == DEFAULT_REGISTRY and len(components) == 1 and components[0] != WILDCARD and not beneath:
        components = [OFFICIAL_PREFIX, *components]
    for component in components:
        if component == WILDCARD:
            continue
        if WILDCARD in component:
            raise PatternError(f"pattern {text!r}: '*' must be a whole path component, not part of {component!r}")
        if not component:
            raise PatternError(f"pattern {text!r} has an empty path component")
        if component.lower() != component:
            raise PatternError(f"pattern {text!r}: repository path must be lowercase")
        if not PATH_COMPONENT_RE.fullmatch(component):
            raise PatternError(f"pattern {text!r}: {component!r} is not a valid repository path component")
    return Pattern(host, tuple(components), beneath, text)


@dataclass
class _HostIndex:
    everything: bool = False
    exact: set[tuple[str, ...]] = field(default_factory=set)
    beneath: set[tuple[str, ...]] = field(default_factory=set)
    wildcard: list[Pattern] = field(default_factory=list)


class Allowlist:
    """A set of patterns answering ``allows(ref)`` in time independent of their number.

    Literal patterns live in per-host hash sets (exact repositories, and prefixes
    looked up once per ancestor of the image path); only patterns with a middle
    ``*`` are scanned, and only those on the image's own registry.
    """

    def __init__(self, patterns: Iterable[Pattern]) -> None:
        self.patterns: tuple[Pattern, ...] = tuple(patterns)
        self._summary = _summary(self.patterns)
        self._hosts: dict[str, _HostIndex] = {}
        for pattern in self.patterns:
            index = self._hosts.setdefault(pattern.registry, _HostIndex())
            if WILDCARD in pattern.path:
                index.wildcard.append(pattern)
            elif pattern.beneath and not pattern.path:
                index.everything = True
            elif pattern.beneath:
                index.beneath.add(pattern.path)
            else:
                index.exact.add(pattern.path)

    def allows(self, ref: ImageRef) -> bool:
        index = self._hosts.get(ref.registry)
        if index is None:
            return False
        if index.everything or ref.path in index.exact:
            return True
        if index.beneath:
            path = ref.path
            for depth in range(1, len(path)):
                if path[:depth] in index.beneath:
                    return True
        return any(pattern.matches(ref) for pattern in index.wildcard)

    def __str__(self) -> str:
        return self._summary


def _summary(patterns: tuple[Pattern, ...]) -> str:
    if not patterns:
        return "(none)"
    listed = ", ".join(str(p) for p in patterns[:MAX_LISTED_PATTERNS])
    if len(patterns) > MAX_LISTED_PATTERNS:
        listed += f" and {len(patterns) - MAX_LISTED_PATTERNS} more"
    return listed

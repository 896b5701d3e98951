"""Registry rewriting: images under a ``from`` prefix move under ``to``, tag and digest kept.

Rewriting works on the normalised reference, so ``nginx:1.27`` is
``docker.io/library/nginx:1.27`` before any prefix is compared, and prefixes match on whole
components only. ``from`` is a prefix, not a repository: it must start with a registry
host, and only the host is normalised (no ``library/`` is added). Everything that could make
a rewrite surprising is refused at load, including a result that another rule would
rewrite again, since the webhook must be idempotent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from webhook.policy.podspecs import ImageSite, MalformedObject, find_pod_spec, iter_image_sites
from webhook.policy.references import (
    DEFAULT_REGISTRY,
    PATH_COMPONENT_RE,
    REGISTRY_RE,
    ImageRef,
    InvalidReference,
    looks_like_registry,
    normalise_registry,
    parse_reference,
)


class RewriteError(ValueError):
    """A rule that cannot load: ``index`` is its place in ``images.rewrite``, ``key`` from or to."""

    def __init__(self, index: int, key: str, problem: str) -> None:
        super().__init__(f"images.rewrite[{index}].{key}: {problem}")
        self.index = index
        self.key = key
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Prefix:
    registry: str
    path: tuple[str, ...]
    text: str = field(default="", compare=False)

    def __str__(self) -> str:
        return "/".join((self.registry, *self.path))

    def covers(self, registry: str, path: tuple[str, ...]) -> bool:
        """Whole-component prefix, equality included."""
        return registry == self.registry and path[: len(self.path)] == self.path


@dataclass(frozen=True, slots=True)
class RewriteRule:
    source: Prefix
    target: Prefix
    index: int

    @property
    def identity(self) -> bool:
        """``from`` == ``to``: keeps a path as it is, beneath a broader ``from``."""
        return self.source == self.target


@dataclass(frozen=True, slots=True)
class Rewritten:
    """An image that was rewritten to ``new``, or that could not be, and ``problem`` says why."""

    site: ImageSite
    new: str
    problem: str | None = None


def parse_prefix(text: str) -> Prefix:
    """A ``from`` or ``to``: a registry host, then optional whole path components."""
    if not isinstance(text, str) or not text:
        raise ValueError("must be a non-empty string")
    if any(ch.isspace() for ch in text):
        raise ValueError(f"{text!r} contains white space")
    if "*" in text:
        raise ValueError(f"{text!r}: '*' is not allowed; a prefix already covers everything beneath it")
    if "@" in text:
        raise ValueError(f"{text!r} has a digest; a prefix names a registry or a path")
    host, slash, rest = text.partition("/")
    if not looks_like_registry(host):
        raise ValueError(
            f"{text!r} must begin with a registry host (for Docker Hub write docker.io/{text}; "
            "docker.io/library for the official images)"
        )
    if not REGISTRY_RE.fullmatch(host):
        raise ValueError(f"{text!r}: {host!r} is not a valid registry host[:port]")
    components = rest.split("/") if slash else []
    for component in components:
        if not component:
            raise ValueError(f"{text!r} has an empty path component")
        if ":" in component:
            raise ValueError(f"{text!r} has a tag; a prefix names a registry or a path")
        if component.lower() != component:
            raise ValueError(f"{text!r}: repository path must be lowercase")
        if not PATH_COMPONENT_RE.fullmatch(component):
            raise ValueError(f"{text!r}: {component!r} is not a valid repository path component")
    return Prefix(normalise_registry(host), tuple(components), text)


class Rewriter:
    """The rules, indexed by prefix: the most specific ``from`` is found in O(path depth)."""

    def __init__(self, rules: Sequence[RewriteRule]) -> None:
        self.rules = tuple(rules)
        self._by_prefix = {(rule.source.registry, rule.source.path): rule for rule in self.rules}

    def __bool__(self) -> bool:
        return bool(self.rules)

    def rule_for(self, registry: str, path: tuple[str, ...]) -> RewriteRule | None:
        for depth in range(len(path), -1, -1):
            rule = self._by_prefix.get((registry, path[:depth]))
            if rule is not None:
                return rule
        return None

    def rewrite(self, ref: ImageRef) -> ImageRef | None:
        """The rewritten reference, or None when no rule changes it."""
        rule = self.rule_for(ref.registry, ref.path)
        if rule is None or rule.identity:
            return None
        rest = ref.path[len(rule.source.path) :]
        return ImageRef(rule.target.registry, rule.target.path + rest, ref.tag, ref.digest)


def shortest_rest(source: Prefix) -> int:
    """How many components an image under ``source`` has beyond it, at the fewest.

    Every image has a path, and every Docker Hub image has two components (``nginx`` is
    ``library/nginx``): so a bare ``from`` never matches an image equal to it, and neither does
    ``docker.io/library``, which as an image is ``docker.io/library/library``.
    """
    fewest = 2 if source.registry == DEFAULT_REGISTRY else 1
    return max(fewest - len(source.path), 0)


def fresh_component(named: Iterable[str]) -> str:
    """A path component that is none of ``named``: a pattern can match it only with ``*``."""
    taken = set(named)
    return next(name for name in ("x", *(f"x{n}" for n in range(len(taken) + 1))) if name not in taken)


def deciding_images(rule: RewriteRule, fresh: str) -> Iterator[tuple[ImageRef, ImageRef]]:
    """(image, its rewrite) pairs whose results, all allowed, mean every result of ``rule`` is.

    ``fresh`` must be a component that no allow pattern and no ``from`` names. The rule
    produces ``to`` itself (when an image can equal ``from``, see ``shortest_rest``) and every
    path beneath ``to`` that is ``depth = max(shortest_rest, 1)`` or more components deeper.
    Only a ``*`` matches ``fresh``, and exact and middle-``*`` patterns end in a literal, so
    ``to/fresh/…/fresh`` (``depth`` of them) is allowed only by a trailing ``/*`` (or bare
    registry) pattern no deeper than ``to`` plus ``depth - 1``, agreeing with ``to`` and ``*``
    beyond it; and that pattern allows every path the rule produces beneath ``to``. So that one
    image decides the whole subtree, exact and middle-``*`` patterns can only ever allow ``to``
    itself, and images that a more specific ``from`` takes need not be set aside (no ``from``
    names ``fresh``). Tag and digest are kept by rewriting and ignored by ``images.allow``.
    Raises InvalidReference when a result would be no valid reference (a name too long).
    """
    source, target = rule.source, rule.target
    rest = shortest_rest(source)
    if rest == 0:
        yield parse_reference(str(source)), parse_reference(str(target))
    tail = "/".join([fresh] * max(rest, 1))
    yield parse_reference(f"{source}/{tail}"), parse_reference(f"{target}/{tail}")


def check_rules(rules: Sequence[RewriteRule]) -> None:
    """Refuse duplicates, results Docker Hub would read differently, and results rewritten again."""
    seen: dict[Prefix, RewriteRule] = {}
    for rule in rules:
        if rule.source in seen:
            earlier = seen[rule.source].index
            raise RewriteError(rule.index, "from", f"{rule.source.text!r} is already images.rewrite[{earlier}].from")
        seen[rule.source] = rule
    rewriter = Rewriter(rules)
    for rule in rules:
        if rule.identity:
            continue
        if rule.source.path and not rule.target.path:
            raise RewriteError(
                rule.index, "to",
                f"{rule.target.text!r} is a bare registry, so {rule.source.text!r} itself would become no image; "
                "name a path under it",
            )
        _refuse_single_hub_component(rule)
        again = rewriter.rule_for(rule.target.registry, rule.target.path)
        beneath = [
            other for other in rules
            if other.source != rule.target and rule.target.covers(other.source.registry, other.source.path)
        ]
        for other in ([again] if again else []) + beneath:
            if not other.identity:
                same = "this same rule" if other is rule else f"images.rewrite[{other.index}] ({other.source.text!r})"
                raise RewriteError(
                    rule.index, "to",
                    f"images rewritten to {str(rule.target)!r} would be rewritten again by {same}; "
                    "rewriting must give the same result when applied twice",
                )


def rewrite_images(
    rewriter: Rewriter,
    obj: dict[str, Any],
    spec_path: tuple[str, ...],
    lists: frozenset[str],
    keep: frozenset[str] | set[str],
    *,
    tick: Callable[[], None] = lambda: None,
) -> list[Rewritten]:
    """Rewrite, in place, the images in ``lists`` of the pod spec, except those in ``keep``.

    An object whose pod spec cannot be read is left alone: the validating webhook refuses it
    anyway, naming the field. An image that does not parse is left for it to deny too.
    ``tick`` is called for every image site, and raises to stop the work.
    """
    try:
        spec = find_pod_spec(obj, spec_path)
        if spec is None:
            return []
        sites = list(iter_image_sites(spec, ".".join(spec_path)))
    except MalformedObject:
        return []
    done: list[Rewritten] = []
    for site in sites:
        tick()
        if site.list_name not in lists or site.image in keep:
            continue
        try:
            ref = parse_reference(site.image)
        except InvalidReference:
            continue
        result = rewriter.rewrite(ref)
        if result is None:
            continue
        new = str(result)
        try:
            if parse_reference(new) != result:  # never expected: load refuses what would not round-trip
                raise InvalidReference(f"it would be read as {parse_reference(new)}")
        except InvalidReference as exc:  # e.g. a name too long once moved under a deeper prefix
            done.append(Rewritten(site, new, str(exc)))
            continue
        *parents, last = site.image_path
        node: Any = spec
        for key in parents:
            node = node[key]
        node[last] = new
        done.append(Rewritten(site, new))
    return done


def _refuse_single_hub_component(rule: RewriteRule) -> None:
    """Docker Hub reads ``docker.io/x`` as ``docker.io/library/x``: such a result would not round-trip."""
    if rule.target.registry != DEFAULT_REGISTRY:
        return
    if len(rule.target.path) + shortest_rest(rule.source) == 1:
        raise RewriteError(
            rule.index, "to",
            f"{rule.target.text!r} can produce a one-component Docker Hub name, which Docker Hub reads "
            "as docker.io/library/<name>; name a deeper path",
        )

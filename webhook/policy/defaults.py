"""Set-if-absent defaulting, compiled once from the policy's ``defaults:`` section.

A default never overwrites what the user wrote, not even ``0``, ``false``, ``""`` or ``[]``:
only an absent or ``null`` field is set. ``name[*]`` walks the elements of a list that
exists and never creates one. The rules without ``match`` that can apply to one group, kind
and version are merged into a single tree at load, and must agree, so two of them cannot
disagree at request time. Rules with ``match`` may give different requests different values:
for one request, the rules that apply do so in file order, and the first that sets a field
wins. All rules of one kind must still agree on what each field is (a value, a mapping, or a
list of defaults), so the rules a request selects always merge into one tree, and applying a
tree to its own output changes nothing: the API server may call us again on it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import orjson

from webhook.policy.match import Labels, Match, Subject
from webhook.policy.podspecs import CONTAINER_LISTS, IMAGE_LISTS, find_pod_spec, iter_image_sites

EACH = "[*]"
# The API server holds a JSON integer as an int64 (beyond it, a float64), and orjson cannot
# write a Python int beyond 64 bits at all: such a default would make every mutation fail.
INT64 = 2**63
ANY_VERSION = "*"
# Identity and server-owned fields: setting them is refused by the API server, or silently
# wrong (a name on a generateName create is never checked against request.name).
RESERVED = frozenset({("apiVersion",), ("kind",), ("status",)}) | frozenset(
    ("metadata", key)
    for key in (
        "name", "generateName", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
        "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink",
    )
)
_SIMPLE_KEY = re.compile(r"[A-Za-z_$][A-Za-z0-9_$-]*")
# Merged trees remembered per kind, one for each set of matched rules that requests selected.
MEMO_LIMIT = 1024

Path: TypeAlias = tuple[str | int, ...]


class DefaultsError(ValueError):
    """A ``set:`` tree that cannot load; ``path`` holds its keys as the policy wrote them."""

    def __init__(self, path: Sequence[str], problem: str) -> None:
        super().__init__(f"{render_path(path)}: {problem}" if path else problem)
        self.path = tuple(path)
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Leaf:
    value: Any
    rule: int = field(default=0, compare=False)  # which defaults[] entry it came from


@dataclass(frozen=True, slots=True)
class Branch:
    children: tuple[tuple[str, Node], ...]


@dataclass(frozen=True, slots=True)
class Each:
    """``name[*]``: the branch applies to every element of an existing list."""

    branch: Branch


Node: TypeAlias = Leaf | Branch | Each


@dataclass(frozen=True, slots=True)
class DefaultsRule:
    group: str
    versions: frozenset[str]
    kinds: frozenset[str]
    tree: Branch
    index: int
    match: Match | None = None  # None: every request of its kinds

    def applies_to(self, version: str | None) -> bool:
        """None stands for every version that no rule names."""
        return ANY_VERSION in self.versions or version in self.versions

    @property
    def labels_set(self) -> tuple[str, ...]:
        """The ``metadata.labels`` keys this rule defaults."""
        metadata = dict(self.tree.children).get("metadata")
        labels = dict(metadata.children).get("labels") if isinstance(metadata, Branch) else None
        return tuple(key for key, _ in labels.children) if isinstance(labels, Branch) else ()


@dataclass(frozen=True, slots=True)
class Defaulted:
    """One field that was set, for the warning that tells the user so."""

    path: Path
    value: Any

    def __str__(self) -> str:
        return f"defaulted {render_path(self.path)}={orjson.dumps(self.value).decode()}"


@dataclass
class KindDefaults:
    """The rules that can apply to one group, kind and version, in file order, and their merges."""

    rules: tuple[DefaultsRule, ...]
    base: Branch | None  # the rules without match, merged: what every request of the kind gets
    matched: tuple[tuple[Match, int], ...]  # (match, rule index) of the rules with match
    _memo: dict[tuple[int, ...], Branch] = field(default_factory=dict)

    def tree_for(self, subject: Subject, namespace_labels: Callable[[str], Labels | None]) -> Branch | None:
        """The rules that apply to this request merged in file order, first setter winning.

        Without rules with match this is the tree merged at load; otherwise the merge is made
        once for each set of selected rules and remembered, as few such sets ever occur.
        """
        if not self.matched:
            return self.base
        selected = tuple(index for match, index in self.matched if match.selects(subject, namespace_labels))
        if not selected:
            return self.base
        tree = self._memo.get(selected)
        if tree is None:
            chosen = set(selected)
            tree = _merge_in_order([rule for rule in self.rules if rule.match is None or rule.index in chosen])
            if len(self._memo) >= MEMO_LIMIT:
                self._memo.clear()
            self._memo[selected] = tree
        return tree


class Defaults:
    """The rules per (group, kind) and version; a request looks its rules up in O(1)."""

    def __init__(self, rules: Sequence[DefaultsRule]) -> None:
        self.rules = tuple(rules)
        self._kinds: dict[tuple[str, str], dict[str | None, KindDefaults]] = {}
        for group, kind in dict.fromkeys((rule.group, kind) for rule in self.rules for kind in sorted(rule.kinds)):
            matching = [rule for rule in self.rules if rule.group == group and kind in rule.kinds]
            named = {version for rule in matching for version in rule.versions if version != ANY_VERSION}
            plans: dict[str | None, KindDefaults] = {}
            for version in [*sorted(named), None]:
                applying = [rule for rule in matching if rule.applies_to(version)]
                if applying:
                    plans[version] = _plan(applying, group, kind, version)
            self._kinds[(group, kind)] = plans

    def _for(self, group: str, version: str, kind: str) -> KindDefaults | None:
        plans = self._kinds.get((group, kind))
        if plans is None:
            return None
        return plans.get(version, plans.get(None))

    def tree_for(self, group: str, version: str, kind: str) -> Branch | None:
        """What every request of this kind gets: its rules without match, merged."""
        plan = self._for(group, version, kind)
        return None if plan is None else plan.base

    def for_request(self, group: str, version: str, kind: str, subject: Subject,
                    namespace_labels: Callable[[str], Labels | None]) -> Branch | None:
        """What this request gets: the rules that apply to it, in file order, merged."""
        plan = self._for(group, version, kind)
        return None if plan is None else plan.tree_for(subject, namespace_labels)


class ConflictError(DefaultsError):
    """Two rules that apply to the same kind and version disagree; ``rule`` is the later one."""

    def __init__(self, path: Sequence[str], problem: str, rule: int) -> None:
        super().__init__(path, problem)
        self.rule = rule


class SelectorError(ValueError):
    """A rule's objectSelector reads a label that defaults set; ``rule`` is the rule selecting."""

    def __init__(self, rule: int, problem: str) -> None:
        super().__init__(problem)
        self.rule = rule
        self.problem = problem


def compile_tree(raw: Mapping[Any, Any], rule: int = 0, path: tuple[str, ...] = ()) -> Branch:
    """Compile a ``set:`` mapping, refusing anything whose meaning would be a guess."""
    if not raw:
        raise DefaultsError(path, "must set at least one field")
    children: dict[str, Node] = {}
    for key, value in raw.items():
        here = (*path, str(key))
        if not isinstance(key, str) or not key:
            raise DefaultsError(here, "keys must be non-empty strings")
        each = key.endswith(EACH)
        name = key.removesuffix(EACH)
        if not name or any(ch in name for ch in "[]*"):
            raise DefaultsError(here, "'[*]' may only end a key, as in 'containers[*]'")
        if name in children:
            raise DefaultsError(here, f"'{name}' and '{name}{EACH}' cannot both be given")
        if each:
            if not isinstance(value, dict) or not value:
                raise DefaultsError(here, f"'{key}' takes a mapping of defaults for each element")
            children[name] = Each(compile_tree(value, rule, here))
        elif isinstance(value, dict) and value:
            children[name] = compile_tree(value, rule, here)
        else:
            children[name] = Leaf(_json_value(value, here, top=True), rule)
    tree = Branch(tuple(children.items()))
    if not path:
        _refuse_reserved(tree)
    return tree


class TooManyChanges(ValueError):
    """Defaulting would set more than the caller's limit of fields."""


def apply(tree: Branch, obj: dict[str, Any], *, tick: Callable[[], None] = lambda: None,
          limit: int | None = None) -> list[Defaulted]:
    """Set every absent or null field of ``tree`` in ``obj`` (in place); say what was set.

    ``tick`` is called for every list element visited, the one step an object can make
    long; it raises to stop the work (the caller's deadline). A ``[*]`` rule copies its values
    into every element, so the memory it takes is the rule's size times the list's length:
    past ``limit`` fields set, TooManyChanges stops it.
    """
    done: list[Defaulted] = []

    def step() -> None:
        tick()
        if limit is not None and len(done) > limit:
            raise TooManyChanges(f"more than {limit}")

    _apply(tree, obj, (), done, step)
    return done


def _apply(branch: Branch, target: dict[str, Any], path: Path, done: list[Defaulted],
           tick: Callable[[], None]) -> None:
    for key, node in branch.children:
        current = target.get(key)
        here = (*path, key)
        if isinstance(node, Leaf):
            if current is None:
                target[key] = _fresh(node.value)
                done.append(Defaulted(here, node.value))
        elif isinstance(node, Branch):
            if current is None:
                fresh: dict[str, Any] = {}
                _apply(node, fresh, here, done, tick)
                if fresh:  # a branch holding only [*] creates nothing, so no empty map appears
                    target[key] = fresh
            elif isinstance(current, dict):
                _apply(node, current, here, done, tick)
        elif isinstance(current, list):
            for index, item in enumerate(current):
                tick()
                if isinstance(item, dict):
                    _apply(node.branch, item, (*here, index), done, tick)


def _fresh(value: Any) -> Any:
    """A copy the object can own: later edits to it must never reach the compiled tree."""
    return orjson.loads(orjson.dumps(value)) if isinstance(value, dict | list) else value


def image_probes(tree: Branch, spec_path: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    """Every image string ``tree`` can write into a pod spec, as (field, image).

    Two probes cover both ways a default can place an image: a whole container or volume list
    set on an object that lacks it, and an image set inside existing containers or volumes
    that lack one. Raises MalformedObject when a default would make the pod spec unreadable.
    """
    bare: dict[str, Any] = {}
    apply(tree, bare)
    spec = find_pod_spec(bare, spec_path)
    if spec is not None:
        for site in iter_image_sites(spec, ".".join(spec_path)):
            yield site.field, site.image
    imageless: dict[str, Any] = {}
    node = imageless
    for key in spec_path:
        node = node.setdefault(key, {})
    for list_name in IMAGE_LISTS:
        node[list_name] = [{"name": "probe"}]
    apply(tree, imageless)  # fills ``node`` in place: a default never replaces what is there
    for list_name in CONTAINER_LISTS:  # a container the defaults left without an image is not theirs
        node[list_name] = [item for item in node[list_name] if "image" in item]
    for site in iter_image_sites(node, ".".join(spec_path)):
        yield site.field, site.image


def render_path(path: Sequence[str | int]) -> str:
    """``spec.containers[0].securityContext``; keys with dots or slashes as ``["a.b/c"]``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _SIMPLE_KEY.fullmatch(part.removesuffix(EACH)):
            text += f".{part}" if text else part
        else:
            text += f"[{orjson.dumps(part).decode()}]"
    return text


def _plan(rules: Sequence[DefaultsRule], group: str, kind: str, version: str | None) -> KindDefaults:
    """Refuse what could not have one meaning, and merge what every request of the kind gets.

    Rules without match must agree on every value, as before ``match`` existed. Rules with match
    may differ in values (that is their point) but not in shapes, and never read a label that a
    default sets, or the rules a request selects would change once its defaults were set.
    """
    plain = [rule for rule in rules if rule.match is None]
    base = _merge_rules(plain, group, kind, version) if plain else None
    matched = tuple((rule.match, rule.index) for rule in rules if rule.match is not None)
    if matched:
        _merge_rules(rules, group, kind, version, first_wins=True)
        _refuse_selecting_on_defaulted_labels(rules)
    return KindDefaults(tuple(rules), base, matched)


def _refuse_selecting_on_defaulted_labels(rules: Sequence[DefaultsRule]) -> None:
    for rule in rules:
        selector = rule.match.object_selector if rule.match is not None else None
        if selector is None:
            continue
        read = [*selector.matchLabels, *(requirement.key for requirement in selector.matchExpressions)]
        for other in rules:
            defaulted = next((key for key in read if key in other.labels_set), None)
            if defaulted is not None:
                raise SelectorError(rule.index, f"reads the label {defaulted!r}, which defaults[{other.index}] sets: "
                                    "the rule would select an object differently once it was defaulted")


def _merge_in_order(rules: Sequence[DefaultsRule]) -> Branch:
    """The rules merged in file order, the first that sets a field winning (shapes agree: checked at load)."""
    merged = rules[0].tree
    for rule in rules[1:]:
        merged = _merge(merged, rule.tree, (), first_wins=True)
    return merged


def _merge_rules(rules: Sequence[DefaultsRule], group: str, kind: str, version: str | None, *,
                 first_wins: bool = False) -> Branch:
    merged = rules[0].tree
    for rule in rules[1:]:
        try:
            merged = _merge(merged, rule.tree, (), first_wins=first_wins)
        except DefaultsError as exc:
            target = f"{group or 'core'}/{version or ANY_VERSION} {kind}"
            both = "both can apply" if first_wins else "both apply"
            raise ConflictError(exc.path, f"{exc.problem} ({both} to {target})", rule.index) from None
    return merged


def _merge(first: Branch, second: Branch, path: tuple[str, ...], *, first_wins: bool) -> Branch:
    """``first`` then ``second``. Applying the result is applying ``first``, then ``second``:
    set-if-absent lets an earlier value stand, so when ``first_wins`` it is kept, else refused."""
    children = dict(first.children)
    for key, node in second.children:
        here = (*path, key)
        if key not in children:
            children[key] = node
            continue
        earlier = children[key]
        if isinstance(earlier, Branch) and isinstance(node, Branch):
            children[key] = _merge(earlier, node, here, first_wins=first_wins)
        elif isinstance(earlier, Each) and isinstance(node, Each):
            children[key] = Each(_merge(earlier.branch, node.branch, (*here[:-1], key + EACH), first_wins=first_wins))
        elif isinstance(earlier, Leaf) and isinstance(node, Leaf):
            if not first_wins and orjson.dumps(earlier.value) != orjson.dumps(node.value):
                earlier_value = orjson.dumps(earlier.value).decode()
                raise DefaultsError(here, f"conflicts with defaults[{earlier.rule}], which sets it to {earlier_value}")
        else:
            raise DefaultsError(here, "is a value in one rule and a mapping or list of defaults in another")
    return Branch(tuple(children.items()))


def _refuse_reserved(tree: Branch) -> None:
    for key, node in tree.children:
        if (key,) in RESERVED:
            raise DefaultsError((key,), "is set by the client or the API server; it cannot be defaulted")
        if key != "metadata":
            continue
        if not isinstance(node, Branch):
            raise DefaultsError((key,), "must be a mapping of fields")
        for meta_key, meta_node in node.children:
            if (key, meta_key) in RESERVED:
                raise DefaultsError((key, meta_key), "is set by the client or the API server; it cannot be defaulted")
            if meta_key in ("labels", "annotations"):
                _refuse_non_strings(meta_node, (key, meta_key))


def _refuse_non_strings(node: Node, path: tuple[str, ...]) -> None:
    if not isinstance(node, Branch):
        raise DefaultsError(path, "must be a mapping of keys to string values")
    for key, child in node.children:
        if not isinstance(child, Leaf) or not isinstance(child.value, str):
            raise DefaultsError((*path, key), "label and annotation values must be strings (quote them)")


def fits_int64(value: int) -> bool:
    """Whether the API server can hold ``value`` as the integer it is."""
    return -INT64 <= value < INT64


def _json_value(value: Any, path: tuple[str, ...], *, top: bool = False) -> Any:
    if value is None:
        if top:
            raise DefaultsError(path, "a default cannot be null: null means the field is absent")
        return None
    if isinstance(value, int) and not isinstance(value, bool) and not fits_int64(value):
        raise DefaultsError(path, f"{value} is a number too large for the API (64-bit integers)")
    if isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DefaultsError(path, f"{value} is not a JSON number")
        return value
    if isinstance(value, list):
        return [_json_value(item, path) for item in value]
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise DefaultsError(path, "keys must be strings")
        return {key: _json_value(item, (*path, key)) for key, item in value.items()}
    what = _YAML_ONLY.get(type(value), type(value).__name__)
    raise DefaultsError(path, f"is a YAML {what}, not a JSON value; quote it if it is text")


# Values the safe YAML loader can make that JSON has no place for, by the tag that makes them.
_YAML_ONLY: dict[type, str] = {bytes: "!!binary value", set: "!!set", tuple: "!!omap or !!pairs entry"}

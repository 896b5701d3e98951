"""The ``match`` block that scopes and exceptions select requests with.

Every key given must hold (AND); the entries of one list are alternatives (OR); a key left
out places no condition. Label selectors follow metav1.LabelSelector. The block knows
nothing of reviews: it is asked about plain values, so ``policy/`` stays below ``admission/``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# A DNS-1123 label, and the same with "*" standing for any run of characters.
NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
NAMESPACE_PATTERN_RE = re.compile(r"[-a-z0-9*]+")
NAME_MAX = 63
Operator = Literal["In", "NotIn", "Exists", "DoesNotExist"]
Labels = Mapping[str, str]
NO_LABELS: Labels = {}


def valid_name(text: str) -> str:
    """A scope or exception name: the characters of a namespace name, without ``*``."""
    if not isinstance(text, str) or len(text) > NAME_MAX or not NAME_RE.fullmatch(text):
        raise ValueError("must be a DNS-1123 label: lower-case letters, digits and '-', at most 63 characters")
    return text


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Requirement(_Strict):
    key: str = Field(strict=True, min_length=1)
    operator: Operator
    values: list[Any] | None = None

    @model_validator(mode="after")
    def _values_fit(self) -> Requirement:
        if self.operator in ("In", "NotIn"):
            if not self.values:
                raise ValueError(f"operator {self.operator} needs a non-empty 'values'")
            if not all(isinstance(value, str) for value in self.values):
                raise ValueError("values must be strings")
        elif self.values:
            raise ValueError(f"operator {self.operator} takes no 'values'")
        return self

    def holds(self, labels: Labels) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        present = labels.get(self.key)
        inside = present is not None and present in (self.values or ())
        return inside if self.operator == "In" else not inside


class LabelSelector(_Strict):
    matchLabels: dict[str, str] = {}
    matchExpressions: list[Requirement] = []

    def matches(self, labels: Labels) -> bool:
        """matchLabels and matchExpressions AND-ed; the empty selector matches everything."""
        for key, value in self.matchLabels.items():  # loops, not all(): asked of every request
            if labels.get(key) != value:
                return False
        return not self.matchExpressions or all(r.holds(labels) for r in self.matchExpressions)


NonEmpty = Field(default=None, min_length=1)


class MatchSpec(_Strict):
    namespaces: list[str] | None = NonEmpty
    namespaceSelector: LabelSelector | None = None
    objectSelector: LabelSelector | None = None
    kinds: list[str] | None = NonEmpty
    users: list[str] | None = NonEmpty
    groups: list[str] | None = NonEmpty

    @field_validator("namespaces")
    @classmethod
    def _namespace_patterns(cls, value: list[str] | None) -> list[str] | None:
        for pattern in value or []:
            if not isinstance(pattern, str) or not NAMESPACE_PATTERN_RE.fullmatch(pattern):
                raise ValueError(f"{pattern!r} is not a namespace pattern: lower-case letters, digits, '-' and '*'")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> MatchSpec:
        if not self.model_fields_set:
            raise ValueError("must not be empty; it selects requests, so give it at least one key")
        return self


class Subject(Protocol):
    """What a match asks of one request (``admission.review.Request`` is one)."""

    @property
    def namespace(self) -> str | None: ...
    @property
    def kind(self) -> str: ...
    @property
    def username(self) -> str | None: ...
    @property
    def groups(self) -> Sequence[str]: ...
    @property
    def labels(self) -> Labels: ...


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


@dataclass(frozen=True, slots=True)
class Match:
    """A compiled ``match`` block."""

    exact_namespaces: frozenset[str] | None
    namespace_globs: tuple[re.Pattern[str], ...]
    namespace_selector: LabelSelector | None
    object_selector: LabelSelector | None
    kinds: frozenset[str] | None
    users: frozenset[str] | None
    groups: frozenset[str] | None

    @classmethod
    def compile(cls, spec: MatchSpec) -> Match:
        names = spec.namespaces
        return cls(
            exact_namespaces=None if names is None else frozenset(n for n in names if "*" not in n),
            namespace_globs=tuple(_glob(n) for n in names or () if "*" in n),
            namespace_selector=spec.namespaceSelector,
            object_selector=spec.objectSelector,
            kinds=None if spec.kinds is None else frozenset(spec.kinds),
            users=None if spec.users is None else frozenset(spec.users),
            groups=None if spec.groups is None else frozenset(spec.groups),
        )

    @property
    def names_namespaces(self) -> bool:
        return self.exact_namespaces is not None

    def namespace_holds(self, namespace: str | None, labels: Callable[[str], Labels | None]) -> bool:
        """The conditions on the namespace: its name, then its labels (none known counts as none)."""
        if self.exact_namespaces is not None:
            if namespace is None:
                return False
            if namespace not in self.exact_namespaces and not any(g.fullmatch(namespace)
                                                                  for g in self.namespace_globs):
                return False
        if self.namespace_selector is not None:
            known = labels(namespace) if namespace is not None else None
            return self.namespace_selector.matches(known or NO_LABELS)
        return True

    def rest_holds(self, subject: Subject) -> bool:
        """The conditions on everything but the namespace."""
        if self.kinds is not None and subject.kind not in self.kinds:
            return False
        if self.users is not None and subject.username not in self.users:
            return False
        if self.groups is not None and not any(group in self.groups for group in subject.groups):
            return False
        return self.object_selector is None or self.object_selector.matches(subject.labels)

    def selects(self, subject: Subject, namespace_labels: Callable[[str], Labels | None]) -> bool:
        return self.namespace_holds(subject.namespace, namespace_labels) and self.rest_holds(subject)

    def kind_holds(self, kind: str) -> bool:
        return self.kinds is None or kind in self.kinds

    @property
    def asks_only_namespace_and_kind(self) -> bool:
        """No condition on the user, the groups or the object's labels."""
        return self.users is None and self.groups is None and self.object_selector is None


def labels_of(obj: Any) -> Labels:
    """``metadata.labels`` of a raw object, keeping only string values; none when absent or odd."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    labels = meta.get("labels") if isinstance(meta, dict) else None
    if not isinstance(labels, dict):
        return NO_LABELS
    return {k: v for k, v in labels.items() if isinstance(k, str) and isinstance(v, str)}

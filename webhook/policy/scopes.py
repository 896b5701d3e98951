"""Scopes and exceptions, compiled: which image rules a request is judged by, and what may
be let through for a while regardless.

The first scope whose match selects a request decides; none, and the baseline does. Trying
a thousand scopes per request would cost more than the decision, so the scopes that can
apply to a namespace and kind are found once (an exact name by lookup, globs, namespace
selectors and kinds tried once) and remembered, up to the first that asks nothing more;
only the conditions on the request itself (user, groups, object labels) are tried per
request, in file order, with the object's labels read once.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from webhook.policy.match import Labels, Match, Subject
from webhook.policy.patterns import Allowlist
from webhook.policy.references import ImageRef
from webhook.policy.verdicts import ImageJudge
from webhook.untrusted import quote

Mode = Literal["enforce", "warn", "off"]
# Namespaces (with their labels, and a kind) whose candidate scopes are remembered; a policy
# reload starts afresh. Only kinds that carry a pod spec are asked about.
MEMO_LIMIT = 4096
DAY = 86400.0
NamespaceLabels = Callable[[str], Labels | None]


class LabelsUnavailable(Exception):
    """A namespace's labels cannot be had, so a namespaceSelector cannot be judged.

    Raised by a labels lookup; the webhook answers it in-band, as it answers an evaluation
    error: labels that may be wrong never decide an admission.
    """

    def __init__(self, namespace: str, why: str) -> None:
        super().__init__(f"the labels of namespace {quote(namespace, 80)} are unavailable: {why}")


def no_namespace_labels(namespace: str) -> Labels | None:
    """Where nothing is known of namespaces: a selector sees none."""
    return None


@dataclass(frozen=True, slots=True)
class Rules:
    """The image rules in force for a request: the baseline's, or a scope's."""

    scope: str | None  # None for the baseline
    mode: Mode
    images: ImageJudge

    @property
    def allowlist(self) -> Allowlist:
        return self.images.allowlist


@dataclass(frozen=True, slots=True)
class Scope:
    match: Match
    rules: Rules


@dataclass
class Scopes:
    """The scopes in file order, with an index that gives the same answer as trying them in order."""

    scopes: tuple[Scope, ...]
    needs_namespace_labels: bool = False
    _by_name: dict[str, list[int]] = field(default_factory=dict)
    _unnamed: list[int] = field(default_factory=list)  # scopes with globs or no namespace condition
    _memo: dict[tuple[str | None, tuple[tuple[str, str], ...], str], tuple[Scope, ...]] = field(default_factory=dict)
    modes: dict[str, Mode] = field(default_factory=dict)  # by scope name, for the metrics' mode label

    def __post_init__(self) -> None:
        for index, scope in enumerate(self.scopes):
            self.modes[scope.rules.scope or ""] = scope.rules.mode
            exact = scope.match.exact_namespaces
            for name in exact or ():
                self._by_name.setdefault(name, []).append(index)
            if exact is None or scope.match.namespace_globs:
                self._unnamed.append(index)
            if scope.match.namespace_selector is not None:
                self.needs_namespace_labels = True

    def __bool__(self) -> bool:
        return bool(self.scopes)

    def select(self, subject: Subject, namespace_labels: NamespaceLabels) -> Scope | None:
        """The first scope, in file order, whose match selects the request."""
        namespace = subject.namespace
        labels: tuple[tuple[str, str], ...] = ()
        if self.needs_namespace_labels and namespace is not None:
            labels = tuple(sorted((namespace_labels(namespace) or {}).items()))
        kind = subject.kind
        key = (namespace, labels, kind)
        candidates = self._memo.get(key)
        if candidates is None:
            candidates = self._candidates(namespace, kind, namespace_labels)
            if len(self._memo) >= MEMO_LIMIT:
                self._memo.clear()
            self._memo[key] = candidates
        object_labels: Labels | None = None  # read once, however many selectors ask
        for scope in candidates:
            match = scope.match
            if match.users is not None or match.groups is not None:
                if match.rest_holds(subject):
                    return scope
                continue
            selector = match.object_selector
            if selector is None:
                return scope
            if object_labels is None:
                object_labels = subject.labels
            if selector.matches(object_labels):
                return scope
        return None

    def _candidates(self, namespace: str | None, kind: str, namespace_labels: NamespaceLabels) -> tuple[Scope, ...]:
        """The scopes whose namespace and kind conditions hold, in file order, up to the first that
        asks nothing more: no scope after it can be reached."""
        indexes = sorted({*self._by_name.get(namespace or "", ()), *self._unnamed}) if namespace else self._unnamed
        found: list[Scope] = []
        for i in indexes:
            match = self.scopes[i].match
            if match.kind_holds(kind) and match.namespace_holds(namespace, namespace_labels):
                found.append(self.scopes[i])
                if match.asks_only_namespace_and_kind:
                    break
        return tuple(found)


@dataclass(frozen=True, slots=True)
class ExceptionRule:
    """One time-bound exception: ``images`` admitted for the requests ``match`` selects."""

    name: str
    reason: str
    expires: dt.datetime
    match: Match
    images: Allowlist

    @property
    def expires_text(self) -> str:
        return rfc3339(self.expires)

    @property
    def expiry_timestamp(self) -> float:
        return self.expires.timestamp()

    def expired(self, now: float) -> bool:
        return now >= self.expiry_timestamp

    def covers(self, subject: Subject, ref: ImageRef, namespace_labels: NamespaceLabels) -> bool:
        return self.images.allows(ref) and self.match.selects(subject, namespace_labels)

    def admission_note(self, now: float, warning_days: int) -> str:
        """``admitted by exception "x" (reason) until T``, and how soon it ends when that is soon."""
        text = f'admitted by exception "{self.name}" ({self.reason}) until {self.expires_text}'
        left = self.expiry_timestamp - now
        if left <= warning_days * DAY:
            days = max(1, math.ceil(left / DAY))
            text += f"; expires in {days} day{'' if days == 1 else 's'}"
        return text

    @property
    def expired_note(self) -> str:
        return f'(exception "{self.name}" expired {self.expires_text})'


@dataclass(frozen=True, slots=True)
class Exceptions:
    items: tuple[ExceptionRule, ...]
    warning_days: int = 14
    # Registry host -> the exceptions naming it, in file order. Every pattern names its host, so
    # only these can cover an image: a denied image is never tried against the other thousand.
    _by_host: dict[str, tuple[ExceptionRule, ...]] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        hosts: dict[str, list[ExceptionRule]] = {}
        for exception in self.items:
            for host in dict.fromkeys(pattern.registry for pattern in exception.images.patterns):
                hosts.setdefault(host, []).append(exception)
        self._by_host.update({host: tuple(found) for host, found in hosts.items()})

    def __bool__(self) -> bool:
        return bool(self.items)

    def expires_text(self, name: str) -> str:
        return next(e.expires_text for e in self.items if e.name == name)

    def expired(self, now: float) -> list[str]:
        return [e.name for e in self.items if e.expired(now)]

    def expired_warnings(self, now: float) -> list[str]:
        """What serve logs at load and check prints: an exception that expired admits nothing."""
        return [f'exception "{e.name}" expired {e.expires_text} and admits nothing now'
                for e in self.items if e.expired(now)]

    def waiver(self, subject: Subject, ref: ImageRef, now: float,
               namespace_labels: NamespaceLabels) -> tuple[ExceptionRule | None, Sequence[ExceptionRule]]:
        """The first live exception covering the image, else None and the expired ones that would have."""
        lapsed: list[ExceptionRule] = []
        for exception in self._by_host.get(ref.registry, ()):
            if exception.covers(subject, ref, namespace_labels):
                if not exception.expired(now):
                    return exception, ()
                lapsed.append(exception)
        return None, lapsed


def rfc3339(moment: dt.datetime) -> str:
    """UTC, with a Z, and fractions of a second only when there are any."""
    text = moment.astimezone(dt.UTC).isoformat()
    return text.replace("+00:00", "Z")


def parse_rfc3339(value: object) -> dt.datetime:
    """RFC 3339 with a time zone; YAML's unquoted timestamp form (a space for the T) too."""
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, str) and len(value) >= 19:
        text = value.strip()
        if text[10:11] in (" ", "t"):
            text = text[:10] + "T" + text[11:]
        text = text.replace(" ", "")
        try:
            moment = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "zZ" else text)
        except ValueError:
            raise ValueError(f"{value!r} is not an RFC 3339 time, such as 2027-01-31T00:00:00Z") from None
    else:
        raise ValueError(f"{value!r} is not an RFC 3339 time, such as 2027-01-31T00:00:00Z")
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone; add Z or an offset such as +02:00")
    return moment


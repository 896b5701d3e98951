"""Metrics and decision logs: one place that records what each review decided.

With several workers the metrics live in prometheus-client's multiprocess files, so any
worker's /metrics shows the sum over all of them. Label values that come from requests are
bounded, so a flood of odd kinds or registries cannot blow up the series count. A registry
label is one the policy in force names, or "other": junk sent first cannot take the places
of real registries, as it could when the first 100 values seen kept their own.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

from webhook.admission.review import UNPARSED_REGISTRY, Request, Response
from webhook.policy.model import Policy

if TYPE_CHECKING:
    from webhook.kube.access import Access

log = logging.getLogger("webhook.admission")

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LABEL_LIMIT = 100
_KIND = re.compile(r"[A-Z][A-Za-z0-9]{0,62}")
SERIES_CACHE_LIMIT = 1024
# (the kind as labelled, the requests counter, the duration histogram) of one review's labels
_Series = tuple[str, Counter, Histogram]
# (webhook, operation, kind, outcome, mode, scope) of one review
_Key = tuple[str, str, str, str, str, str | None]


class BoundedLabel:
    """The first ``limit`` distinct values pass; later ones become ``other``."""

    def __init__(self, limit: int = LABEL_LIMIT, seed: Iterable[str] = ()) -> None:
        self.limit = limit
        self.seen: set[str] = set(seed)

    def __call__(self, value: str) -> str:
        if value in self.seen:
            return value
        if len(self.seen) >= self.limit:
            return "other"
        self.seen.add(value)
        return value


class Telemetry:
    def __init__(self, multiprocess_dir: str | None = None) -> None:
        """``multiprocess_dir`` is the directory shared by workers; None for one process."""
        self.multiprocess_dir = multiprocess_dir
        self.registry = None if multiprocess_dir else CollectorRegistry()
        r = self.registry
        self.requests = Counter("webhook_admission_requests", "Admission reviews answered.",
                                ["webhook", "operation", "kind", "decision", "mode", "scope"], registry=r)
        self.duration = Histogram("webhook_admission_duration_seconds", "Time from request to answer.",
                                  ["webhook"], buckets=DURATION_BUCKETS, registry=r)
        self.violations = Counter("webhook_image_violations", "Images denied or warned, by registry host.",
                                  ["registry"], registry=r)
        self.patches = Counter("webhook_patches", "Mutations answered with a patch.", ["kind"], registry=r)
        self.inflight = Gauge("webhook_inflight_requests", "Reviews being answered now.", registry=r,
                              multiprocess_mode="livesum")
        self.policy_reloads = Counter("webhook_policy_reloads", "Policy reloads.", ["result"], registry=r)
        self.policy_info = Gauge("webhook_policy_info", "The policy in force (1), by content hash.", ["hash"],
                                 registry=r, multiprocess_mode="livemax")
        self.certificate_expiry = Gauge("webhook_certificate_expiry_timestamp_seconds",
                                        "notAfter of the served certificate.", registry=r,
                                        multiprocess_mode="livemin")
        self.permission_allowed = Gauge("webhook_permission_allowed",
                                        "1 when the last check found the permission granted, else 0.",
                                        ["verb", "resource"], registry=r, multiprocess_mode="livemin")
        # Label values are exception names from the policy: as many as the policy has.
        self.exception_admissions = Counter("webhook_exception_admissions",
                                            "Images admitted only by a policy exception.", ["exception"], registry=r)
        self.exception_expiry = Gauge("webhook_exception_expiry_timestamp_seconds",
                                      "When each exception of the policy in force expires.", ["exception"],
                                      registry=r, multiprocess_mode="livemax")
        self._kinds = BoundedLabel()
        self._series: dict[_Key, _Series] = {}
        self._violations = _Children(self.violations, str)  # by registry_label()
        self._patches = _Children(self.patches, str)

    def render(self) -> bytes:
        if self.registry is not None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def _look_up(self, key: _Key) -> _Series:
        """The labelled series a review counts in, remembered: labels() costs more than our whole
        decision for a small Pod. Bounded, as the label values are (a scope is a name in the policy)."""
        webhook, operation, kind, outcome, mode, scope = key
        label = self._kinds(kind) if _KIND.fullmatch(kind) else "other"
        series = (label, self.requests.labels(webhook, operation, label, outcome, mode, scope or "baseline"),
                  self.duration.labels(webhook))
        if len(self._series) < SERIES_CACHE_LIMIT:
            self._series[key] = series
        return series

    def permissions_checked(self, results: Sequence[Access]) -> None:
        for result in results:
            resource = result.permission.qualified
            if result.permission.name:
                resource += f"/{result.permission.name}"
            self.permission_allowed.labels(result.permission.verb, resource).set(1 if result.allowed else 0)

    def policy_loaded(self, policy: Policy, previous: Policy | None = None) -> None:
        if previous is not None and previous.sha256 != policy.sha256:
            self.policy_info.labels(hash=previous.sha256[:12]).set(0)
        self.policy_info.labels(hash=policy.sha256[:12]).set(1)
        for exception in policy.exceptions.items:
            self.exception_expiry.labels(exception.name).set(exception.expiry_timestamp)

    def observe(self, webhook: str, request: Request, response: Response, policy: Policy, seconds: float) -> None:
        scope = response.scope
        mode = policy.mode if scope is None else policy.scopes.modes.get(scope, policy.mode)  # the deciding rules'
        key = (webhook, request.operation, request.kind, response.outcome, mode, scope)
        series = self._series.get(key)
        if series is None:
            series = self._look_up(key)
        kind, requests, duration = series
        requests.inc()
        duration.observe(seconds)
        for registry in response.registries:
            self._violations(registry_label(registry, policy)).inc()
        if response.patch:
            self._patches(kind).inc()
        for exception in response.exceptions:
            self.exception_admissions.labels(exception).inc()
        if response.outcome != "allowed" or response.patch or response.exceptions:  # an exception is worth a line
            log_decision(webhook, request, response, seconds)
        elif log.isEnabledFor(logging.DEBUG):
            log_decision(webhook, request, response, seconds, level=logging.DEBUG)


def registry_label(registry: str, policy: Policy) -> str:
    """The violations metric's label: a registry the policy names, "invalid", or "other"."""
    return registry if registry in policy.registries or registry == UNPARSED_REGISTRY else "other"


class _Children:
    """A one-label counter's children by raw value, remembered as ``_look_up`` does: labels()
    costs more than the count. ``label`` bounds the value first."""

    def __init__(self, family: Counter, label: Callable[[str], str]) -> None:
        self.family = family
        self.label = label
        self._known: dict[str, Counter] = {}

    def __call__(self, value: str) -> Counter:
        child = self._known.get(value)
        if child is None:
            child = self.family.labels(self.label(value))
            if len(self._known) < SERIES_CACHE_LIMIT:
                self._known[value] = child
        return child


def log_decision(
    webhook: str, request: Request, response: Response, seconds: float, level: int | None = None
) -> None:
    """One line per denial, warning, mutation and error; never the object itself.

    The record is made and handed on directly: ``Logger.log`` would first walk the stack for a
    source line no formatter of ours prints, a sixth of the line's cost.
    """
    decision = "mutated" if response.patch and response.outcome == "allowed" else response.outcome
    if level is None:
        level = logging.ERROR if decision == "error" else logging.INFO
    if not log.isEnabledFor(level):
        return
    fields = {
        "uid": request.uid,
        "webhook": webhook,
        "kind": request.kind,
        "namespace": request.namespace,
        "name": request.object_name,
        "user": request.username,
        "scope": response.scope,
        "exceptions": list(response.exceptions) or None,
        "operation": request.operation,
        "decision": decision,
        "code": response.code,
        "reason": response.message or "; ".join(response.warnings) or None,
        "patchOps": len(response.patch) or None,
        "durationMs": round(seconds * 1000, 3),
    }
    record = log.makeRecord(log.name, level, __file__, 0, "%s %s", (webhook, decision), None,
                            "log_decision", {"fields": {k: v for k, v in fields.items() if v is not None}})
    log.handle(record)

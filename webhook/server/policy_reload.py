"""Policy hot reload, in every worker: the last good policy stays in force until a new one loads.

The file is watched by content (a ConfigMap volume swaps a ``..data`` symlink, which file
events miss). A new policy replaces the old one in a single assignment, and each request
reads the policy once, so a request is always judged wholly under one version.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from pathlib import Path

from webhook.policy.model import Policy, PolicyError, parse_policy
from webhook.server.telemetry import Telemetry
from webhook.server.watch import Contents, ContentWatcher, Poller

log = logging.getLogger("webhook.policy")


def refuse_unservable(policy: Policy, *, cluster: bool) -> None:
    """A namespaceSelector needs the cluster's namespace labels, which serve reads only with a cluster.

    Refused at start and on reload alike, so a policy that loads is one serve can honour.
    """
    if not cluster:
        policy.refuse_namespace_selector(
            "namespaceSelector needs the cluster's namespace labels, and serve talks to no cluster: give "
            "--kubeconfig, or run it in a pod")


def warn_of_expired(policy: Policy) -> None:
    """Exceptions expire while serve runs, so an expired one loads, and is logged at each load."""
    for warning in policy.exceptions.expired_warnings(time.time()):
        log.warning("policy %s: %s", policy.source, warning, extra={"fields": {"file": policy.source}})


class PolicyReloader:
    def __init__(
        self, path: Path, current: Callable[[], Policy], swap: Callable[[Policy], None],
        telemetry: Telemetry, interval: float, *, cluster: bool,
    ) -> None:
        self.path = path
        self.cluster = cluster
        self._current = current
        self._swap = swap
        self._telemetry = telemetry
        self.loaded_at = dt.datetime.now(dt.UTC)
        self.last_error: str | None = None
        self.last_error_at: dt.datetime | None = None
        self._watcher = ContentWatcher([path], self._on_change)
        self._poller = Poller(interval, self._watcher.check, name="policy-reload")

    def start(self) -> None:
        self._poller.start()

    def stop(self) -> None:
        self._poller.stop()

    def _on_change(self, contents: Contents) -> None:
        raw = contents.get(self.path)
        previous = self._current()
        try:
            if raw is None:
                raise PolicyError(str(self.path), "", "has vanished or cannot be read; keeping the last good policy")
            policy = parse_policy(raw, str(self.path))
            refuse_unservable(policy, cluster=self.cluster)
        except PolicyError as exc:
            self.last_error, self.last_error_at = str(exc), dt.datetime.now(dt.UTC)
            self._telemetry.policy_reloads.labels("error").inc()
            log.error("policy reload refused: %s; still enforcing sha256:%s", exc, previous.sha256[:12],
                      extra={"fields": {"file": exc.source, "key": exc.key, "problem": exc.problem}})
            return
        self._swap(policy)
        self.loaded_at, self.last_error, self.last_error_at = dt.datetime.now(dt.UTC), None, None
        self._telemetry.policy_reloads.labels("success").inc()
        self._telemetry.policy_loaded(policy, previous)
        warn_of_expired(policy)
        log.info("policy reloaded from %s: sha256:%s (was sha256:%s)", self.path, policy.sha256[:12],
                 previous.sha256[:12])

"""Namespace labels from the cluster, for a policy's namespaceSelector.

``serve`` keeps every namespace's labels in memory by list-then-watch (``reflector.py``),
so a review never waits on the API server for a namespace it has seen. One it has not seen
yet (created a moment ago, before the watch delivered it) is fetched with a single bounded
GET. Anyone who reaches the port can send reviews naming made-up namespaces, so those
lookups are rationed: a name found absent is remembered for a while, a failed lookup makes
the next ones fail at once for a few seconds, and beyond a small rate they are refused. A
lookup that cannot be made raises ``LabelsUnavailable``, which the webhook answers as an
error: guessed labels never decide an admission. While the API server is away, the labels
last seen stay in force.

``audit`` and ``check --kubeconfig`` read the same labels with one list (``list_labels``).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from webhook.kube.client import KubeClient, KubeError, Retry
from webhook.kube.config import ClusterConfig
from webhook.kube.reflector import Backoff, Reflector, names
from webhook.policy.match import NAME_RE, Labels, labels_of
from webhook.policy.scopes import LabelsUnavailable

log = logging.getLogger("webhook.kube")

PATH = "/api/v1/namespaces"
LOOKUP_SECONDS = 1.0  # at most; never more than half the evaluation deadline
ABSENT_SECONDS = 10.0  # a name found absent is not asked about again for this long
BROKEN_SECONDS = 5.0  # after a lookup failed, the next ones fail at once for this long
LOOKUPS_PER_SECOND = 10.0
LOOKUP_BURST = 20
# A lookup blocks its worker, so the time they take is rationed too: a tenth of the worker's
# time in the long run, a second at most at once, however slowly the API server answers.
LOOKUP_TIME_SHARE = 0.1
LOOKUP_TIME_BURST = 1.0
ABSENT_LIMIT = 4096


def list_labels(client: KubeClient, *, chunk_size: int = 500) -> dict[str, Labels]:
    """Every namespace's labels, by one paged list: what ``audit`` and ``check --kubeconfig`` judge with."""
    cache = NamespaceCache()
    Reflector(client, PATH, "namespaces", cache, chunk_size=chunk_size).list()
    return dict(cache.labels)


class NamespaceCache:
    """The reflector's handler: labels by name. A list in progress builds a new map, swapped in
    whole when it completes, so the labels last seen stay in force until then."""

    def __init__(self, on_seen: Callable[[str], None] = lambda name: None) -> None:
        self.on_seen = on_seen  # told of each namespace that appears
        self.labels: dict[str, Labels] = {}
        self._fresh: dict[str, Labels] | None = None
        self.synced_at: dt.datetime | None = None

    def __call__(self, namespace: str) -> Labels | None:
        """As ``check`` answers: a namespace not known has no labels (``audit`` lists them first)."""
        return self.labels.get(namespace)

    def listing(self) -> None:
        self._fresh = {}

    def observe(self, obj: dict[str, Any], event: str) -> None:
        name = names(obj)[1]
        target = self._fresh if self._fresh is not None else self.labels
        target[name] = dict(labels_of(obj))
        self.on_seen(name)

    def listed(self) -> None:
        if self._fresh is not None:
            self.labels, self._fresh = self._fresh, None
        self.synced_at = dt.datetime.now(dt.UTC)

    def deleted(self, obj: dict[str, Any]) -> None:
        self.labels.pop(names(obj)[1], None)


class NamespaceInformer:
    """serve's namespace labels: a daemon thread lists and watches; ``__call__`` answers a review."""

    def __init__(self, cluster: ClusterConfig, *, request_timeout: float, eval_timeout: float,
                 chunk_size: int = 500) -> None:
        self.cluster = cluster
        self.request_timeout = request_timeout
        self.lookup_timeout = min(LOOKUP_SECONDS, eval_timeout / 2)
        self.chunk_size = chunk_size
        self._absent: dict[str, float] = {}  # name -> until (monotonic)
        self.cache = NamespaceCache(on_seen=self._seen)
        self.synced = threading.Event()
        self.error: str | None = None
        self._broken: tuple[float, str] = (0.0, "")  # until (monotonic), why
        self._lookups = Ration(LOOKUPS_PER_SECOND, LOOKUP_BURST)
        self._lookup_time = Ration(LOOKUP_TIME_SHARE, LOOKUP_TIME_BURST)
        self._lookup_client: KubeClient | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="namespace-informer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def readiness(self) -> dict[str, Any]:
        """Not ready until the first list completes: before it, every review would cost a GET."""
        synced_at = self.cache.synced_at
        return {"ready": self.synced.is_set(), "namespaces": len(self.cache.labels),
                "syncedAt": synced_at.strftime("%Y-%m-%dT%H:%M:%SZ") if synced_at else None, "error": self.error}

    def __call__(self, namespace: str) -> Labels | None:
        labels = self.cache.labels.get(namespace)
        return labels if labels is not None else self._lookup(namespace)

    # --- the background thread -----------------------------------------------------------------

    def _run(self) -> None:
        backoff, failures = Backoff(), 0
        with KubeClient(self.cluster, timeout=self.request_timeout) as client:
            reflector = Reflector(client, PATH, "namespaces", self.cache, chunk_size=self.chunk_size,
                                  warn=self._warn)
            while not self._stop.is_set():
                try:
                    version = reflector.list()
                except KubeError as exc:
                    failures += 1
                    delay = backoff.delay(failures)
                    self._warn(f"listing namespaces failed: {exc}; retrying in {delay:.1f} s")
                    self._stop.wait(delay)
                    continue
                self.error = None
                self.synced.set()
                log.info("namespace labels synced: %d namespaces", len(self.cache.labels))
                reflector.watch(version, self._stop)  # returns only when stopped

    def _warn(self, message: str) -> None:
        self.error = message
        log.warning("%s", message)

    # --- a namespace not seen yet --------------------------------------------------------------

    def _lookup(self, namespace: str) -> Labels:
        now = time.monotonic()
        if not NAME_RE.fullmatch(namespace) or len(namespace) > 63:
            raise LabelsUnavailable(namespace, "that is not a namespace name")
        if self._absent.get(namespace, 0.0) > now:
            raise LabelsUnavailable(namespace, "no such namespace")
        until, why = self._broken
        if until > now:
            raise LabelsUnavailable(namespace, f"the last lookup failed moments ago ({why})")
        if not (self._lookup_time.left(now) > 0 and self._lookups.take(now, 1.0)):
            raise LabelsUnavailable(namespace, "too many namespaces not yet seen are being looked up")
        try:
            page = self._client().request("GET", PATH, params={"fieldSelector": f"metadata.name={namespace}"})
        except KubeError as exc:
            self._broken = (time.monotonic() + BROKEN_SECONDS, str(exc))
            raise LabelsUnavailable(namespace, str(exc)) from None
        finally:
            self._lookup_time.spend(time.monotonic() - now)
        found = next((item for item in page.get("items") or []
                      if isinstance(item, dict) and names(item)[1] == namespace), None)
        if found is None:
            if len(self._absent) >= ABSENT_LIMIT:
                self._absent.clear()
            self._absent[namespace] = time.monotonic() + ABSENT_SECONDS
            raise LabelsUnavailable(namespace, "no such namespace")
        # The watch may have delivered it meanwhile; what it delivered is newer.
        return self.cache.labels.setdefault(namespace, dict(labels_of(found)))

    def _seen(self, namespace: str) -> None:
        self._absent.pop(namespace, None)

    def _client(self) -> KubeClient:
        """The request path's own client: tried once, within the lookup timeout, never retried."""
        if self._lookup_client is None:
            self._lookup_client = KubeClient(self.cluster, timeout=self.lookup_timeout, retry=Retry(attempts=1))
        return self._lookup_client


class Ration:
    """A token bucket: ``rate`` a second, at most ``burst`` held; spending may run it below zero."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.refilled = burst, time.monotonic()

    def left(self, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + (now - self.refilled) * self.rate)
        self.refilled = now
        return self.tokens

    def take(self, now: float, amount: float) -> bool:
        if self.left(now) < amount:
            return False
        self.tokens -= amount
        return True

    def spend(self, amount: float) -> None:
        self.tokens -= amount

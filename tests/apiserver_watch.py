"""Pods and workloads in the stand-in API server: paginated lists and chunked watch streams.

As kube-apiserver serves them, for what ``webhook audit`` relies on:

- ``GET`` a collection, cluster-wide or in a namespace, with ``limit`` and ``continue``: items in
  etcd key order (``namespace/name``), without ``kind``/``apiVersion`` as in a typed list, and
  the list's ``resourceVersion``. A ``continue`` from before a compaction gets ``410 Expired``
  with a fresh token in the Status's ``metadata.continue``;
- ``?watch=true`` from a ``resourceVersion``: a chunked response of one JSON event per line
  (ADDED, MODIFIED, DELETED, BOOKMARK with ``allowWatchBookmarks``), first the events after
  that version, then live ones, until ``timeoutSeconds``. A version older than the last
  compaction gets an ERROR event with a ``410 Expired`` Status, as the real server sends it.

Tests write objects with ``put``/``delete``, and play the network and etcd with ``bookmark``,
``compact``, ``drop_watches`` (the connection is cut mid-stream) and ``expire_watches``.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.apiserver import ApiServer, Reply, Request

# resource key ("pods", "deployments.apps") -> (group, kind)
WORKLOADS = {
    "pods": ("", "Pod"), "podtemplates": ("", "PodTemplate"), "replicationcontrollers": ("", "ReplicationController"),
    "deployments.apps": ("apps", "Deployment"), "replicasets.apps": ("apps", "ReplicaSet"),
    "statefulsets.apps": ("apps", "StatefulSet"), "daemonsets.apps": ("apps", "DaemonSet"),
    "jobs.batch": ("batch", "Job"), "cronjobs.batch": ("batch", "CronJob"),
}
WORKLOAD_PATH = re.compile(r"^/(?:api|apis/(?P<group>[a-z.]+))/v1(?:/namespaces/(?P<namespace>[^/]+))?"
                           r"/(?P<resource>[a-z]+)$")
EXPIRED_CONTINUE = ("The provided continue parameter is too old to display a consistent list result. You can start a "
                    "new list without the continue parameter, or use the continue token in this response to "
                    "retrieve the remainder of the results. Continuing with the provided token results in an "
                    "inconsistent list - objects that were created, modified, or deleted between the time the "
                    "first chunk was returned and now may show up in the list.")


class Dropped(Exception):
    """Cut the connection without ending the chunked body, as a failing network or proxy does."""


@dataclass
class Event:
    version: int
    resource: str
    namespace: str
    type: str
    object: dict[str, Any]


@dataclass
class Watch:
    """One open watch stream; the handler writes what ``events`` yields."""

    workloads: Workloads
    resource: str
    namespace: str | None
    since: int
    bookmarks: bool
    deadline: float
    dropped: bool = False
    expired: bool = False
    sent: int = 0  # the highest resourceVersion written to the client so far

    def events(self) -> Iterator[dict[str, Any]]:
        store = self.workloads
        with store.changed:
            store.watches.append(self)
        try:
            if self.since < store.compacted:
                yield store.expired_event(self.since)
                return
            position = 0
            while True:
                with store.changed:
                    while (position == len(store.log) and not self.dropped and not self.expired
                           and time.monotonic() < self.deadline and not store.stopped):
                        store.changed.wait(min(0.05, max(0.0, self.deadline - time.monotonic())))
                    fresh, position = store.log[position:], len(store.log)
                    dropped, expired = self.dropped, self.expired
                if dropped:  # cut now: what was written after the cut is never sent on this stream
                    raise Dropped
                if expired:
                    yield store.expired_event(self.since)
                    return
                for event in fresh:
                    if event.resource != self.resource:
                        continue
                    if event.type == "BOOKMARK":
                        if not self.bookmarks or event.version < self.since:
                            continue
                    elif event.version <= self.since or (self.namespace and event.namespace != self.namespace):
                        continue
                    yield {"type": event.type, "object": event.object}
                    self.sent = max(self.sent, event.version)  # the handler wrote it and asks for more
                if time.monotonic() >= self.deadline or store.stopped:
                    return
        finally:
            with store.changed:
                store.watches.remove(self)


class Workloads:
    def __init__(self, api: ApiServer) -> None:
        self.api = api
        self.changed = threading.Condition(api.lock)
        self.objects: dict[str, dict[str, dict[str, Any]]] = {resource: {} for resource in WORKLOADS}
        self.log: list[Event] = []
        self.watches: list[Watch] = []
        self.compacted = 0
        self.stopped = False

    # --- what tests do -------------------------------------------------------------------------

    def put(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or update; the stored object (with uid and resourceVersion) is returned."""
        group, kind = WORKLOADS[resource]
        with self.changed:
            stored = copy.deepcopy(obj)
            stored["apiVersion"], stored["kind"] = f"{group}/v1" if group else "v1", kind
            metadata = stored.setdefault("metadata", {})
            key = f"{metadata['namespace']}/{metadata['name']}"
            before = self.objects[resource].get(key)
            metadata["uid"] = before["metadata"]["uid"] if before else str(uuid.uuid4())
            metadata["creationTimestamp"] = (before["metadata"]["creationTimestamp"] if before
                                             else dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            metadata["resourceVersion"] = self.api._next_version()
            self.objects[resource][key] = stored
            self._emit(resource, metadata["namespace"], "MODIFIED" if before else "ADDED", stored)
            return copy.deepcopy(stored)

    def delete(self, resource: str, namespace: str, name: str) -> None:
        with self.changed:
            gone = self.objects[resource].pop(f"{namespace}/{name}")
            gone["metadata"]["resourceVersion"] = self.api._next_version()
            self._emit(resource, namespace, "DELETED", gone)

    def bookmark(self, resource: str) -> int:
        """A BOOKMARK at the current resourceVersion, to watchers that asked for bookmarks."""
        with self.changed:
            group, kind = WORKLOADS[resource]
            version = self.api._version
            self.log.append(Event(version, resource, "", "BOOKMARK", {
                "kind": kind, "apiVersion": f"{group}/v1" if group else "v1",
                "metadata": {"resourceVersion": str(version)}}))
            self.changed.notify_all()
            return version

    def compact(self) -> int:
        """Forget history up to now, as etcd compaction does: older versions get 410 Gone."""
        with self.changed:
            self.compacted = self.api._version
            return self.compacted

    def drop_watches(self, resource: str) -> None:
        with self.changed:
            for watch in self.watches:
                watch.dropped = watch.dropped or watch.resource == resource
            self.changed.notify_all()

    def expire_watches(self, resource: str) -> None:
        with self.changed:
            for watch in self.watches:
                watch.expired = watch.expired or watch.resource == resource
            self.changed.notify_all()

    def watching(self, resource: str) -> int:
        with self.changed:
            return sum(1 for watch in self.watches if watch.resource == resource)

    def delivered(self, resource: str) -> int:
        """The highest resourceVersion an open watch of ``resource`` has written out."""
        with self.changed:
            return max((watch.sent for watch in self.watches if watch.resource == resource), default=0)

    def stop(self) -> None:
        with self.changed:
            self.stopped = True
            self.changed.notify_all()

    # --- what the API does ---------------------------------------------------------------------

    def route(self, request: Request, group: str, namespace: str | None, resource: str) -> Reply | Watch:
        key = f"{resource}.{group}" if group else resource
        if key not in WORKLOADS or request.method != "GET":
            return self.api.not_found()
        watching = request.query.get("watch") in ("true", "1")
        verb = "watch" if watching else "list"
        allowed = self.api.authorize(request.user, {"verb": verb, "group": group, "resource": resource,
                                                    "namespace": namespace or ""})[0]
        if not allowed:
            scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
            return _status(403, "Forbidden", f'{resource}{"." + group if group else ""} is forbidden: User '
                           f'"{request.user}" cannot {verb} resource "{resource}" in API group "{group}" {scope}',
                           {"group": group, "kind": resource})
        if watching:
            since = request.query.get("resourceVersion") or str(self.api._version)
            seconds = float(request.query.get("timeoutSeconds") or 1800)
            return Watch(self, key, namespace, int(since), request.query.get("allowWatchBookmarks") == "true",
                         time.monotonic() + seconds)
        return self._list(request, key, namespace)

    def _list(self, request: Request, key: str, namespace: str | None) -> Reply:
        group, kind = WORKLOADS[key]
        limit = int(request.query.get("limit") or 0)
        version, start = self.api._version, ""
        token = request.query.get("continue")
        if token:
            decoded = json.loads(base64.b64decode(token))
            version, start = decoded["rv"], decoded["start"]
            if version < self.compacted:
                fresh = _token(self.api._version, start)
                reply = _status(410, "Expired", EXPIRED_CONTINUE)
                reply[1]["metadata"] = {"continue": fresh}
                return reply
        keys = sorted(k for k in self.objects[key] if not namespace or k.startswith(f"{namespace}/"))
        keys = [k for k in keys if k > start] if start else keys
        page = keys[:limit] if limit else keys
        items = [{k: v for k, v in self.objects[key][k].items() if k not in ("kind", "apiVersion")} for k in page]
        metadata: dict[str, Any] = {"resourceVersion": str(version)}
        if limit and len(keys) > limit:
            metadata["continue"] = _token(version, page[-1])
            metadata["remainingItemCount"] = len(keys) - limit
        return 200, {"kind": f"{kind}List", "apiVersion": f"{group}/v1" if group else "v1",
                     "metadata": metadata, "items": copy.deepcopy(items)}

    def expired_event(self, since: int) -> dict[str, Any]:
        return {"type": "ERROR", "object": _status(
            410, "Expired", f"too old resource version: {since} ({self.compacted})")[1]}

    def _emit(self, resource: str, namespace: str, kind: str, obj: dict[str, Any]) -> None:
        self.log.append(Event(int(obj["metadata"]["resourceVersion"]), resource, namespace, kind, copy.deepcopy(obj)))
        self.changed.notify_all()


def _token(version: int, start: str) -> str:
    return base64.b64encode(json.dumps({"rv": version, "start": start}).encode()).decode()


def _status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    from tests.apiserver import status  # noqa: PLC0415 - the two modules are one server

    return status(code, reason, message, details)

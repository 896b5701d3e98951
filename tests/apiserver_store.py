"""The stand-in API server's objects: paginated lists, chunked watch streams, and plain writes.

Every resource in ``RESOURCES`` (the workloads, namespaces, RBAC, EndpointSlices, PDBs,
PolicyReports...), as kube-apiserver serves them where the webhook depends on it:

- ``GET`` a collection, cluster-wide or in a namespace, with ``limit``, ``continue`` and an
  equality-based ``labelSelector``: items in etcd key order (``namespace/name``), without
  ``kind``/``apiVersion`` as in a typed list, and the list's ``resourceVersion``. A
  ``continue`` from before a compaction gets ``410 Expired`` with a fresh token in the
  Status's ``metadata.continue``;
- ``?watch=true`` from a ``resourceVersion``: a chunked response of one JSON event per line
  (ADDED, MODIFIED, DELETED, BOOKMARK with ``allowWatchBookmarks``), first the events after
  that version, then live ones, until ``timeoutSeconds``. A version older than the last
  compaction gets an ERROR event with a ``410 Expired`` Status, as the real server sends it;
- ``GET``, ``PUT`` (409 Conflict on a stale ``resourceVersion``) and ``DELETE`` by name, and
  ``POST`` (409 AlreadyExists); a body over 3 MiB is 413 and an object over etcd's limit
  (``max_object_bytes``, 1.5 MiB) is refused as etcd refuses it.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.apiserver import ApiServer, Reply, Request

@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


RBAC = "rbac.authorization.k8s.io"
# resource key ("pods", "deployments.apps") -> what it is; the webhook configurations live in apiserver.py
RESOURCES = {
    "pods": Kind("", "v1", "Pod"), "podtemplates": Kind("", "v1", "PodTemplate"),
    "replicationcontrollers": Kind("", "v1", "ReplicationController"),
    "namespaces": Kind("", "v1", "Namespace", namespaced=False), "nodes": Kind("", "v1", "Node", namespaced=False),
    "services": Kind("", "v1", "Service"), "configmaps": Kind("", "v1", "ConfigMap"),
    "secrets": Kind("", "v1", "Secret"), "serviceaccounts": Kind("", "v1", "ServiceAccount"),
    "deployments.apps": Kind("apps", "v1", "Deployment"), "replicasets.apps": Kind("apps", "v1", "ReplicaSet"),
    "statefulsets.apps": Kind("apps", "v1", "StatefulSet"), "daemonsets.apps": Kind("apps", "v1", "DaemonSet"),
    "jobs.batch": Kind("batch", "v1", "Job"), "cronjobs.batch": Kind("batch", "v1", "CronJob"),
    f"roles.{RBAC}": Kind(RBAC, "v1", "Role"), f"rolebindings.{RBAC}": Kind(RBAC, "v1", "RoleBinding"),
    f"clusterroles.{RBAC}": Kind(RBAC, "v1", "ClusterRole", namespaced=False),
    f"clusterrolebindings.{RBAC}": Kind(RBAC, "v1", "ClusterRoleBinding", namespaced=False),
    "endpointslices.discovery.k8s.io": Kind("discovery.k8s.io", "v1", "EndpointSlice"),
    "poddisruptionbudgets.policy": Kind("policy", "v1", "PodDisruptionBudget"),
    "policyreports.wgpolicyk8s.io": Kind("wgpolicyk8s.io", "v1alpha2", "PolicyReport"),
    "clusterpolicyreports.wgpolicyk8s.io": Kind("wgpolicyk8s.io", "v1alpha2", "ClusterPolicyReport",
                                                namespaced=False),
}
WORKLOADS = ("pods", "podtemplates", "replicationcontrollers", "deployments.apps", "replicasets.apps",
             "statefulsets.apps", "daemonsets.apps", "jobs.batch", "cronjobs.batch")
RESOURCE_PATH = re.compile(r"^/(?:api/(?P<core>v1)|apis/(?P<group>[a-z0-9.-]+)/(?P<version>v[0-9a-z]+))"
                           r"(?:/namespaces/(?P<namespace>[^/]+))?/(?P<resource>[a-z]+)(?:/(?P<name>[^/]+))?$")
# kube-apiserver refuses a body over 3 MiB; etcd, an object over --max-request-bytes (1.5 MiB)
MAX_BODY_BYTES = 3 * 1024 * 1024
MAX_OBJECT_BYTES = 1536 * 1024
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

    store: Store
    resource: str
    namespace: str | None
    since: int
    bookmarks: bool
    deadline: float
    dropped: bool = False
    expired: bool = False
    sent: int = 0  # the highest resourceVersion written to the client so far

    def events(self) -> Iterator[dict[str, Any]]:
        store = self.store
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


class Store:
    """Every resource but the webhook configurations: list, watch, get, create, update, delete."""

    def __init__(self, api: ApiServer) -> None:
        self.api = api
        self.changed = threading.Condition(api.lock)
        self.objects: dict[str, dict[str, dict[str, Any]]] = {resource: {} for resource in RESOURCES}
        self.log: list[Event] = []
        self.watches: list[Watch] = []
        self.compacted = 0
        self.stopped = False
        self.max_object_bytes = MAX_OBJECT_BYTES

    # --- what tests do -------------------------------------------------------------------------

    def put(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or update; the stored object (with uid and resourceVersion) is returned."""
        with self.changed:
            stored = self._stamped(resource, obj)
            return copy.deepcopy(stored)

    def get(self, resource: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        with self.changed:
            found = self.objects[resource].get(_key(namespace, name))
            return copy.deepcopy(found) if found else None

    def items(self, resource: str) -> list[dict[str, Any]]:
        with self.changed:
            return [copy.deepcopy(o) for _, o in sorted(self.objects[resource].items())]

    def delete(self, resource: str, namespace: str | None, name: str) -> None:
        with self.changed:
            gone = self.objects[resource].pop(_key(namespace, name))
            gone["metadata"]["resourceVersion"] = self.api._next_version()
            self._emit(resource, namespace or "", "DELETED", gone)

    def bookmark(self, resource: str) -> int:
        """A BOOKMARK at the current resourceVersion, to watchers that asked for bookmarks."""
        with self.changed:
            kind = RESOURCES[resource]
            version = self.api._version
            self.log.append(Event(version, resource, "", "BOOKMARK", {
                "kind": kind.kind, "apiVersion": kind.api_version, "metadata": {"resourceVersion": str(version)}}))
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

    def route(self, request: Request, match: re.Match[str]) -> Reply | Watch:
        group = match["group"] or ""
        version = match["core"] or match["version"]
        namespace, resource, name = match["namespace"], match["resource"], match["name"] or ""
        key = f"{resource}.{group}" if group else resource
        kind = RESOURCES.get(key)
        if kind is None or kind.version != version or (namespace and not kind.namespaced):
            return self.api.not_found()
        watching = request.query.get("watch") in ("true", "1")
        verb = {"GET": ("watch" if watching else "list") if not name else "get", "POST": "create", "PUT": "update",
                "DELETE": "delete"}.get(request.method)
        if verb is None or (verb == "create" and name) or (verb in ("update", "delete") and not name):
            return _status(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        allowed = self.api.authorize(request.user, {"verb": verb, "group": group, "resource": resource,
                                                    "namespace": namespace or "", "name": name})[0]
        if not allowed:
            scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
            target = f'{key} "{name}"' if name else key
            return _status(403, "Forbidden", f'{target} is forbidden: User "{request.user}" cannot {verb} resource '
                           f'"{resource}" in API group "{group}" {scope}',
                           {"group": group, "kind": resource, **({"name": name} if name else {})})
        if verb == "watch":
            since = request.query.get("resourceVersion") or str(self.api._version)
            seconds = float(request.query.get("timeoutSeconds") or 1800)
            return Watch(self, key, namespace, int(since), request.query.get("allowWatchBookmarks") == "true",
                         time.monotonic() + seconds)
        if verb == "list":
            return self._list(request, key, namespace)
        if verb == "get":
            found = self.objects[key].get(_key(namespace, name))
            return (200, copy.deepcopy(found)) if found else self._not_found(key, name)
        if verb == "delete":
            if _key(namespace, name) not in self.objects[key]:
                return self._not_found(key, name)
            gone = self.objects[key][_key(namespace, name)]
            self.delete(key, namespace, name)
            return 200, copy.deepcopy(gone)
        return self._write(request, key, namespace, name)

    def _write(self, request: Request, key: str, namespace: str | None, name: str) -> Reply:
        kind = RESOURCES[key]
        if len(request.body) > MAX_BODY_BYTES:
            return _status(413, "RequestEntityTooLarge", f"Request entity too large: limit is {MAX_BODY_BYTES}")
        try:
            body = json.loads(request.body)
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
            return _status(400, "BadRequest", "the body of the request is not a JSON object")
        if body.get("kind") != kind.kind or body.get("apiVersion") != kind.api_version:
            return _status(400, "BadRequest", f"the object is a {body.get('kind')} of {body.get('apiVersion')}, "
                           f"not a {kind.kind} of {kind.api_version}")
        metadata = body.setdefault("metadata", {})
        given = metadata.get("namespace")
        if kind.namespaced and given and given != namespace:
            return _status(400, "BadRequest", "the namespace of the provided object does not match the namespace "
                           "sent on the request")
        if kind.namespaced:
            metadata["namespace"] = namespace
        if name and metadata.get("name") != name:
            return _status(400, "BadRequest", f"the name of the object ({metadata.get('name')}) does not match "
                           f"the name on the URL ({name})")
        name = metadata.get("name") or ""
        if not name:
            return _invalid(key, name, "metadata.name", "Required value: name or generateName is required")
        if len(request.body) > self.max_object_bytes:
            return _status(500, "InternalError", "etcdserver: request is too large")
        current = self.objects[key].get(_key(namespace, name))
        if request.method == "POST":
            if current is not None:
                return _status(409, "AlreadyExists", f'{key} "{name}" already exists',
                               {"name": name, "group": kind.group, "kind": key.split(".", maxsplit=1)[0]})
            return 201, copy.deepcopy(self._stamped(key, body))
        if current is None:
            return self._not_found(key, name)
        version = metadata.get("resourceVersion")
        if version and version != current["metadata"]["resourceVersion"]:
            return _status(409, "Conflict", f'Operation cannot be fulfilled on {key} "{name}": the object has been '
                           "modified; please apply your changes to the latest version and try again",
                           {"name": name, "group": kind.group, "kind": key.split(".", maxsplit=1)[0]})
        return 200, copy.deepcopy(self._stamped(key, body))

    def _not_found(self, key: str, name: str) -> Reply:
        return _status(404, "NotFound", f'{key} "{name}" not found',
                       {"name": name, "group": RESOURCES[key].group, "kind": key.split(".", maxsplit=1)[0]})

    def _stamped(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store ``obj`` as the server would (uid, creationTimestamp, resourceVersion) and tell the watchers."""
        kind = RESOURCES[resource]
        stored = copy.deepcopy(obj)
        stored["apiVersion"], stored["kind"] = kind.api_version, kind.kind
        metadata = stored.setdefault("metadata", {})
        namespace = metadata.get("namespace") if kind.namespaced else None
        if not kind.namespaced:
            metadata.pop("namespace", None)
        key = _key(namespace, metadata["name"])
        before = self.objects[resource].get(key)
        metadata["uid"] = before["metadata"]["uid"] if before else str(uuid.uuid4())
        metadata["creationTimestamp"] = (before["metadata"]["creationTimestamp"] if before
                                         else dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        metadata["resourceVersion"] = self.api._next_version()
        if resource == "namespaces":
            stored.setdefault("status", {"phase": "Active"})
            metadata.setdefault("labels", {})["kubernetes.io/metadata.name"] = metadata["name"]
        self.objects[resource][key] = stored
        self._emit(resource, namespace or "", "MODIFIED" if before else "ADDED", stored)
        return stored

    def _list(self, request: Request, key: str, namespace: str | None) -> Reply:
        kind = RESOURCES[key]
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
        selector = _selector(request.query.get("labelSelector") or "")
        try:
            fields = _fields(request.query.get("fieldSelector") or "")
        except ValueError as exc:
            return _status(400, "BadRequest", f'unable to parse requirement: {exc}')
        keys = sorted(k for k, o in self.objects[key].items()
                      if (not namespace or k.startswith(f"{namespace}/")) and selector(o) and fields(o))
        keys = [k for k in keys if k > start] if start else keys
        page = keys[:limit] if limit else keys
        items = [{k: v for k, v in self.objects[key][k].items() if k not in ("kind", "apiVersion")} for k in page]
        metadata: dict[str, Any] = {"resourceVersion": str(version)}
        if limit and len(keys) > limit:
            metadata["continue"] = _token(version, page[-1])
            metadata["remainingItemCount"] = len(keys) - limit
        return 200, {"kind": f"{kind.kind}List", "apiVersion": kind.api_version,
                     "metadata": metadata, "items": copy.deepcopy(items)}

    def expired_event(self, since: int) -> dict[str, Any]:
        return {"type": "ERROR", "object": _status(
            410, "Expired", f"too old resource version: {since} ({self.compacted})")[1]}

    def _emit(self, resource: str, namespace: str, kind: str, obj: dict[str, Any]) -> None:
        self.log.append(Event(int(obj["metadata"]["resourceVersion"]), resource, namespace, kind, copy.deepcopy(obj)))
        self.changed.notify_all()


def _key(namespace: str | None, name: str) -> str:
    """etcd's key order: ``namespace/name``, and ``/name`` for what belongs to no namespace."""
    return f"{namespace or ''}/{name}"


def _selector(text: str) -> Callable[[dict[str, Any]], bool]:
    """A label selector as kubectl sends it: ``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``, comma-separated."""
    terms: list[tuple[str, str, str]] = []  # (operator, key, value)
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "!=" in part:
            key, value = part.split("!=", 1)
            terms.append(("!=", key.strip(), value.strip()))
        elif "=" in part:
            key, value = part.replace("==", "=").split("=", 1)
            terms.append(("=", key.strip(), value.strip()))
        else:
            terms.append(("!", part[1:].strip(), "") if part.startswith("!") else ("exists", part, ""))

    def holds(operator: str, key: str, value: str, labels: dict[str, str]) -> bool:
        if operator == "=":
            return labels.get(key) == value
        if operator == "!=":
            return labels.get(key) != value
        return (key in labels) == (operator == "exists")

    return lambda obj: all(holds(*term, (obj.get("metadata") or {}).get("labels") or {}) for term in terms)


def _fields(text: str) -> Callable[[dict[str, Any]], bool]:
    """A field selector on ``metadata.name`` and ``metadata.namespace``, the fields every resource has."""
    wanted = dict(part.replace("==", "=").split("=", 1) for part in filter(None, text.split(",")))
    unknown = set(wanted) - {"metadata.name", "metadata.namespace"}
    if unknown:
        raise ValueError(f"field label not supported: {sorted(unknown)[0]}")
    return lambda obj: all((obj.get("metadata") or {}).get(k.split(".")[1]) == v for k, v in wanted.items())


def _invalid(key: str, name: str, path: str, problem: str) -> Reply:
    kind = RESOURCES[key]
    return _status(422, "Invalid", f'{kind.kind} "{name}" is invalid: {path}: {problem}',
                   {"name": name, "group": kind.group, "kind": kind.kind,
                    "causes": [{"reason": "FieldValueInvalid", "message": problem, "field": path}]})


def _token(version: int, start: str) -> str:
    return base64.b64encode(json.dumps({"rv": version, "start": start}).encode()).decode()


def _status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    from tests.apiserver import status  # noqa: PLC0415 - the two modules are one server

    return status(code, reason, message, details)

"""List-then-watch for one resource, as client-go's reflector does it, without keeping the objects.

``list`` goes page by page (``limit`` and ``continue``) and hands each object to a
``Handler``; ``watch`` starts at the list's ``resourceVersion`` and hands over each event.
Bookmarks move the version on; a dropped stream resumes from the last version seen, with
backoff; ``410 Gone`` (an HTTP status or an ERROR event) means the version is older than the
server keeps, so the resource is listed again and the handler can tell what went away.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from webhook.kube.client import ApiError, KubeClient, KubeError, StreamBroken, Unreachable

MIN_WATCH_SECONDS = 300  # the server ends each watch after 5 to 10 minutes, as client-go asks
READ_MARGIN_SECONDS = 30  # a stream silent for longer than its own timeout plus this is dead


class Expired(KubeError):
    """410 Gone: the resourceVersion we hold is older than the server keeps; list again."""


class Handler(Protocol):
    def listing(self) -> None:
        """A list begins: the first, or one again after 410 Gone."""

    def observe(self, obj: dict[str, Any], event: str) -> None:
        """An object as it is now: ``LISTED``, ``ADDED`` or ``MODIFIED``."""

    def listed(self) -> None:
        """The list is complete: what was not observed in it is gone."""

    def deleted(self, obj: dict[str, Any]) -> None:
        """The object's last state, from a DELETED event."""


@dataclass(frozen=True, slots=True)
class Backoff:
    first: float = 0.5
    limit: float = 30.0

    def delay(self, failures: int) -> float:
        base: float = min(self.first * 2 ** max(failures - 1, 0), self.limit)
        return base * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not secrecy


class Reflector:
    def __init__(
        self, client: KubeClient, path: str, what: str, handler: Handler, *, chunk_size: int,
        backoff: Backoff | None = None, warn: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.client = client
        self.path = path  # /api/v1/pods, /apis/apps/v1/namespaces/team/deployments, ...
        self.what = what  # for messages: pods, deployments.apps
        self.handler = handler
        self.chunk_size = chunk_size
        self.backoff = backoff or Backoff()
        self.warn = warn
        self.objects = 0  # objects listed, over every list

    def list(self) -> str:
        """Hand over every object, page by page; return the resourceVersion to watch from.

        That is the first page's version: after an expired ``continue`` the rest comes from a
        newer snapshot, and watching from the older version replays what changed meanwhile.
        """
        self.handler.listing()
        params = {"limit": str(self.chunk_size)}
        version = ""
        last_key = skip_to = ""
        while True:
            try:
                page = self.client.request("GET", self.path, params=params)
            except ApiError as exc:
                if exc.code != 410 or "continue" not in params:
                    raise
                token = (exc.status.get("metadata") or {}).get("continue")
                if token:  # the server's own way on: the rest, from its latest snapshot
                    params["continue"] = str(token)
                else:  # start again, and skip what was handed over (lists come in key order)
                    params.pop("continue")
                    skip_to = last_key
                continue
            metadata = page.get("metadata") or {}
            version = version or str(metadata.get("resourceVersion") or "")
            for item in page.get("items") or []:
                if not isinstance(item, dict):
                    continue
                key = _key(item)
                if skip_to and key <= skip_to:
                    continue
                last_key = key
                self.objects += 1
                self.handler.observe(item, "LISTED")
            token = metadata.get("continue")
            if not token:
                break
            params["continue"] = str(token)
        self.handler.listed()
        return version or "0"

    def watch(self, version: str, stop: threading.Event) -> None:
        """Watch from ``version`` until ``stop``: resume after drops with backoff, list again after 410."""
        failures = 0
        while not stop.is_set():
            started, events = time.monotonic(), 0
            try:
                for event in self._events(version):
                    if stop.is_set():
                        return
                    events += 1
                    version = self._handle(event) or version
            except Expired:
                if stop.is_set():
                    return
                self.warn(f"watch of {self.what} expired (410 Gone); listing again")
                version = self._relist(stop)
                failures = 0
                continue
            except (StreamBroken, Unreachable, ApiError) as exc:
                if stop.is_set():
                    return
                failures += 1
                delay = self.backoff.delay(failures)
                self.warn(f"watch of {self.what} failed: {exc}; resuming from resourceVersion {version} "
                          f"in {delay:.1f} s")
                stop.wait(delay)
                continue
            # A clean end: the server's timeoutSeconds. A very short, empty one counts as a failure.
            failures = 0 if events or time.monotonic() - started >= 1 else failures + 1
            if failures:
                stop.wait(self.backoff.delay(failures))

    def _relist(self, stop: threading.Event) -> str:
        failures = 0
        while True:
            try:
                return self.list()
            except KubeError as exc:
                failures += 1
                delay = self.backoff.delay(failures)
                self.warn(f"listing {self.what} again failed: {exc}; retrying in {delay:.1f} s")
                if stop.wait(delay):
                    return "0"

    def _events(self, version: str) -> Iterator[dict[str, Any]]:
        seconds = int(MIN_WATCH_SECONDS * (1 + random.random()))  # noqa: S311 - spreads reconnects
        params = {"watch": "true", "resourceVersion": version, "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(seconds)}
        try:
            with self.client.stream(self.path, params=params, read_timeout=seconds + READ_MARGIN_SECONDS) as lines:
                for line in lines:
                    if line.strip():
                        yield _event(line)
        except ApiError as exc:
            if exc.code == 410:
                raise Expired(str(exc)) from None
            raise

    def _handle(self, event: dict[str, Any]) -> str | None:
        """Act on one event; return the resourceVersion it carries."""
        kind, obj = event.get("type"), event.get("object")
        if not isinstance(obj, dict):
            raise StreamBroken(f"watch of {self.what}: an event without an object")
        if kind == "ERROR":
            if obj.get("code") == 410 or obj.get("reason") in ("Expired", "Gone"):
                raise Expired(str(obj.get("message") or "too old resource version"))
            raise StreamBroken(f"watch of {self.what} ended with {obj.get('code')} {obj.get('reason')}: "
                               f"{obj.get('message')}")
        if kind in ("ADDED", "MODIFIED"):
            self.handler.observe(obj, str(kind))
        elif kind == "DELETED":
            self.handler.deleted(obj)
        elif kind != "BOOKMARK":
            raise StreamBroken(f"watch of {self.what}: unknown event type {kind!r}")
        metadata = obj.get("metadata")
        version = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
        return str(version) if version else None


def _event(line: str) -> dict[str, Any]:
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise StreamBroken(f"a watch event that is not JSON: {line[:80]!r}") from None
    if not isinstance(event, dict):
        raise StreamBroken(f"a watch event that is not an object: {line[:80]!r}")
    return event


def names(obj: dict[str, Any]) -> tuple[str | None, str]:
    """``(namespace or None, name)``."""
    metadata = obj.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    namespace, name = metadata.get("namespace"), metadata.get("name")
    return (namespace if isinstance(namespace, str) and namespace else None,
            name if isinstance(name, str) and name else "(unnamed)")


def _key(obj: dict[str, Any]) -> str:
    """The order lists come in: etcd's key order, ``namespace/name``."""
    namespace, name = names(obj)
    return f"{namespace or ''}/{name}"


def uid(obj: dict[str, Any]) -> str:
    """Who an object is: its uid, or where it is when it has none."""
    metadata = obj.get("metadata")
    found = metadata.get("uid") if isinstance(metadata, dict) else None
    return found if isinstance(found, str) and found else _key(obj)

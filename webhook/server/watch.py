"""Notice when mounted files change, by content.

A Kubernetes Secret or ConfigMap volume updates by swapping a ``..data`` symlink: the watched path
never gets a write event, and its mtime is that of the symlink. Reading and hashing the content on
a short interval sees every kind of update, and costs nothing for files of a few kilobytes.

A change is reported only once the content reads the same on two polls in a row, so a file caught
half-written, or a pair caught between its two renames, is never acted on.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

log = logging.getLogger("webhook.watch")

Contents = Mapping[Path, bytes | None]  # None: the file is missing or unreadable


def read_contents(paths: Sequence[Path]) -> dict[Path, bytes | None]:
    contents: dict[Path, bytes | None] = {}
    for path in paths:
        try:
            contents[path] = path.read_bytes()
        except OSError:
            contents[path] = None
    return contents


def digest(contents: Contents) -> str:
    hasher = hashlib.sha256()
    for path, data in contents.items():
        hasher.update(str(path).encode() + b"\0")
        hasher.update(b"-" if data is None else b"+" + hashlib.sha256(data).digest())
    return hasher.hexdigest()


class ContentWatcher:
    """Calls ``on_change(contents)`` when the files' settled content differs from what it last reported.

    Starts from ``baseline``, the contents the caller has already loaded, so nothing that changes
    between that load and the first poll is missed.
    """

    def __init__(self, paths: Sequence[Path], on_change: Callable[[Contents], None],
                 baseline: Contents | None = None) -> None:
        self.paths = tuple(paths)
        self._on_change = on_change
        self._current = digest(baseline if baseline is not None else read_contents(self.paths))
        self._pending: str | None = None

    def check(self) -> bool:
        """One poll; True when it reported a change."""
        contents = read_contents(self.paths)
        seen = digest(contents)
        if seen == self._current:
            self._pending = None
            return False
        if seen != self._pending:
            self._pending = seen  # changed since the last poll: wait for it to settle
            return False
        self._current, self._pending = seen, None
        self._on_change(contents)
        return True


class Poller:
    """Runs some checks every ``interval`` seconds on a daemon thread, for the life of the process.

    A check that raises is logged and the polling goes on: a watcher must never die quietly.
    """

    def __init__(self, interval: float, *checks: Callable[[], object], name: str) -> None:
        self.interval = interval
        self._checks = checks
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for check in self._checks:
                try:
                    check()
                except Exception:
                    log.exception("%s: a periodic check failed; will try again", self._thread.name)

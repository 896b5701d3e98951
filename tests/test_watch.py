"""The content watcher on real files: what counts as a change, and when it is reported."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest

from tests.tlsutil import eventually
from webhook.server.watch import Contents, ContentWatcher, Poller, read_contents


class Recorder:
    def __init__(self) -> None:
        self.calls: list[dict[str, bytes | None]] = []

    def __call__(self, contents: Contents) -> None:
        self.calls.append({path.name: data for path, data in contents.items()})


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    paths = [tmp_path / "a", tmp_path / "b"]
    for path in paths:
        path.write_bytes(b"one " + path.name.encode())
    return paths


def test_nothing_is_reported_while_nothing_changes(files: list[Path]) -> None:
    seen = Recorder()
    watcher = ContentWatcher(files, seen)
    assert not any(watcher.check() for _ in range(5))
    assert seen.calls == []


def test_a_change_is_reported_once_it_has_settled_for_one_poll(files: list[Path]) -> None:
    seen = Recorder()
    watcher = ContentWatcher(files, seen)
    files[0].write_bytes(b"two")
    assert watcher.check() is False  # first sight: it may be half-written
    assert watcher.check() is True
    assert seen.calls == [{"a": b"two", "b": b"one b"}]
    assert watcher.check() is False  # and only once


def test_a_state_seen_for_one_poll_only_is_never_reported(files: list[Path]) -> None:
    seen = Recorder()
    watcher = ContentWatcher(files, seen)
    files[0].write_bytes(b"half of a pair")  # caught between the two renames of a pair
    watcher.check()
    files[1].write_bytes(b"the other half")
    watcher.check()
    watcher.check()
    assert seen.calls == [{"a": b"half of a pair", "b": b"the other half"}]


def test_returning_to_the_baseline_is_not_a_change(files: list[Path]) -> None:
    seen = Recorder()
    watcher = ContentWatcher(files, seen)
    files[0].write_bytes(b"brief")
    watcher.check()
    files[0].write_bytes(b"one a")
    assert not watcher.check() and not watcher.check()
    assert seen.calls == []


def test_a_changed_baseline_is_compared_against_what_the_caller_loaded(files: list[Path]) -> None:
    seen = Recorder()
    loaded = read_contents(files)
    files[1].write_bytes(b"changed before the watcher started")
    watcher = ContentWatcher(files, seen, baseline=loaded)
    watcher.check()
    assert watcher.check() is True


def test_a_missing_file_is_reported_as_none(files: list[Path]) -> None:
    seen = Recorder()
    watcher = ContentWatcher(files, seen)
    files[1].unlink()
    watcher.check()
    watcher.check()
    assert seen.calls == [{"a": b"one a", "b": None}]


def test_a_symlink_swap_is_seen_though_the_path_is_never_written(tmp_path: Path) -> None:
    for generation in ("v1", "v2"):
        (tmp_path / generation).mkdir()
        (tmp_path / generation / "tls.crt").write_bytes(generation.encode())
    (tmp_path / "..data").symlink_to("v1")
    watched = tmp_path / "tls.crt"
    watched.symlink_to("..data/tls.crt")
    seen = Recorder()
    watcher = ContentWatcher([watched], seen)
    before = watched.lstat().st_mtime_ns
    (tmp_path / "..data_tmp").symlink_to("v2")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    assert watched.lstat().st_mtime_ns == before
    watcher.check()
    watcher.check()
    assert seen.calls == [{"tls.crt": b"v2"}]


def test_the_poller_survives_a_failing_check(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []
    done = threading.Event()

    def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        if len(calls) >= 3:
            done.set()

    poller = Poller(0.01, flaky, name="test-poller")
    with caplog.at_level(logging.ERROR, logger="webhook.watch"):
        poller.start()
        eventually(done.is_set, "the poller kept polling after an exception")
        poller.stop()
    assert "test-poller: a periodic check failed; will try again" in caplog.text
    assert "RuntimeError: boom" in caplog.text

"""A normal client that keeps asking for reviews in the background while a test does something
hostile, so the test can show that admission was answered all the while."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from tests.conftest import ServerProcess
from tests.reviews import pod_review


@dataclass
class SteadyClient:
    """A normal client that keeps reviewing on one keep-alive connection until told to stop."""

    server: ServerProcess
    answered: int = 0
    slowest: float = 0.0  # seconds, the longest any review took to be answered
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        client = self.server.client(timeout=10)
        try:
            while not self.stop.is_set():
                uid = f"steady-{self.answered}"
                started = time.monotonic()
                try:
                    if client.review("/validate", pod_review("nginx", uid=uid))["allowed"] is not True:
                        self.failures.append(f"{uid}: denied")
                    self.answered += 1
                    self.slowest = max(self.slowest, time.monotonic() - started)
                except Exception as exc:  # noqa: BLE001 - every failure is reported
                    self.failures.append(f"{uid}: {exc!r}")
                time.sleep(0.02)
        finally:
            client.close()


@contextlib.contextmanager
def steady_client(server: ServerProcess) -> Iterator[SteadyClient]:
    steady = SteadyClient(server)
    thread = threading.Thread(target=steady.run, daemon=True)
    thread.start()
    try:
        yield steady
    finally:
        steady.stop.set()
        thread.join(timeout=20)

"""A normal client that keeps asking for reviews in the background while a test does something
hostile, so the test can show that admission was answered all the while; and ``attack``, which
also measures the worker's peak resident memory over the attack."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import ServerProcess
from tests.reviews import pod_review


@dataclass
class SteadyClient:
    """A normal client that keeps reviewing on one keep-alive connection until told to stop."""

    server: ServerProcess
    image: str = "nginx"  # one the server's policy allows
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
                    if client.review("/validate", pod_review(self.image, uid=uid))["allowed"] is not True:
                        self.failures.append(f"{uid}: denied")
                    self.answered += 1
                    self.slowest = max(self.slowest, time.monotonic() - started)
                except Exception as exc:  # noqa: BLE001 - every failure is reported
                    self.failures.append(f"{uid}: {exc!r}")
                time.sleep(0.02)
        finally:
            client.close()


@contextlib.contextmanager
def steady_client(server: ServerProcess, image: str = "nginx") -> Iterator[SteadyClient]:
    steady = SteadyClient(server, image)
    thread = threading.Thread(target=steady.run, daemon=True)
    thread.start()
    try:
        yield steady
    finally:
        steady.stop.set()
        thread.join(timeout=20)


# --- an attack, measured ---------------------------------------------------------------------
# The manifests give a worker 256 MiB; the bound asserted is 200 MB, which leaves room for the
# allocator's slack on a busy machine.
PEAK_MB = 200
NORMAL_ANSWER_SECONDS = 2.0


def status_kb(pid: int, key: str) -> int:
    """A figure from /proc/<pid>/status: VmRSS now, or VmHWM, the peak since it was last reset."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


@contextlib.contextmanager
def attack(server: ServerProcess, image: str = "nginx") -> Iterator[dict[str, Any]]:
    """Reset the worker's peak RSS, keep a normal client reviewing ``image``, and report both afterwards."""
    Path(f"/proc/{server.process.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    figures: dict[str, Any] = {"before_mb": status_kb(server.process.pid, "VmRSS") / 1024}
    with steady_client(server, image) as steady:
        yield figures
        time.sleep(0.3)  # one more normal review after the attack's last step
    figures["peak_mb"] = status_kb(server.process.pid, "VmHWM") / 1024
    figures["steady"] = steady
    print(f"RSS before {figures['before_mb']:.0f} MB, peak {figures['peak_mb']:.0f} MB, "
          f"slowest normal review {steady.slowest:.3f} s, {steady.answered} answered")


def assert_survived(server: ServerProcess, figures: dict[str, Any]) -> None:
    """The worker lived, stayed under PEAK_MB, and answered every normal review within 2 s."""
    steady: SteadyClient = figures["steady"]
    assert server.process.poll() is None, server.logs()[-2000:]
    assert figures["peak_mb"] <= PEAK_MB
    assert not steady.failures, steady.failures[:5]
    assert steady.answered > 0
    assert steady.slowest < NORMAL_ANSWER_SECONDS

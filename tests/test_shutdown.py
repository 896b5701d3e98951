"""Graceful shutdown under load: SIGTERM makes /readyz fail at once while every request, in
flight or new, is still answered during the drain; then the server exits 0."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.reviews import pod_review

DRAIN = 2.0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_drains_without_failing_a_request(pki: Path, tmp_path: Path, workers: str) -> None:
    server = ServerProcess(["--drain-seconds", str(DRAIN), "--workers", workers], pki, tmp_path / "serve.log")
    try:
        server.wait_ready()
        results: list[tuple[float, bool]] = []
        signalled: list[float] = []
        stop = threading.Event()

        def load(index: int) -> None:
            client = server.client(timeout=5)  # one keep-alive connection per thread
            sent = 0
            while not stop.is_set():
                body = pod_review("nginx", uid=f"{index}-{sent}")
                try:
                    ok = client.review("/validate", body)["allowed"] is True
                except (httpx.HTTPError, AssertionError):
                    ok = False
                results.append((time.monotonic(), ok))
                sent += 1
            client.close()

        threads = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        probe = server.client(timeout=2)
        assert probe.request("GET", "/readyz").status_code == 200
        signalled.append(time.monotonic())
        server.process.send_signal(signal.SIGTERM)
        not_ready_after = None
        while time.monotonic() - signalled[0] < 1.0:
            reply = probe.request("GET", "/readyz")
            if reply.status_code == 503:
                not_ready_after = time.monotonic() - signalled[0]
                assert reply.json()["checks"]["shutdown"]["ready"] is False
                break
            time.sleep(0.02)
        probe.close()
        time.sleep(max(0.0, DRAIN - 0.6 - (time.monotonic() - signalled[0])))  # load until just before the end
        stop.set()
        for thread in threads:
            thread.join(10)
        assert server.process.wait(timeout=30) == 0
    finally:
        server.stop()
    during = [ok for at, ok in results if at >= signalled[0]]
    assert not_ready_after is not None, "readyz did not turn not-ready within 1 s"
    assert len(during) > 50, f"too little load during the drain: {len(during)}"
    assert all(ok for _, ok in results), f"{sum(not ok for _, ok in results)} of {len(results)} requests failed"
    assert "SIGTERM: not ready" in server.logs()


def test_sigint_stops_at_once(start_server: Any) -> None:
    with start_server("--drain-seconds", "30") as server:
        started = time.monotonic()
        server.process.send_signal(signal.SIGINT)
        server.process.wait(timeout=10)
        assert time.monotonic() - started < 5

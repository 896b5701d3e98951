"""Several worker processes on one listening socket.

Our own small supervisor rather than uvicorn's, so every worker runs the draining server,
and a worker that dies is replaced while the others keep serving.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import TypeVar

from webhook.settings import ServeSettings

log = logging.getLogger("webhook.server")
L = TypeVar("L")
# Beyond the drain, how long workers get to finish in-flight requests before being killed.
SHUTDOWN_GRACE_SECONDS = 15.0


def supervise(
    settings: ServeSettings,
    listeners: L,
    worker: Callable[[ServeSettings, L], None],
    on_exit: Callable[[int], None] = lambda pid: None,
) -> None:
    """Run ``settings.workers`` workers until SIGTERM or SIGINT, which each worker receives too."""
    context = multiprocessing.get_context("spawn")
    stopping = threading.Event()

    def start() -> BaseProcess:
        process = context.Process(target=worker, args=(settings, listeners), daemon=False)
        process.start()
        return process

    processes = [start() for _ in range(settings.workers)]

    received: list[int] = []  # appended by the handler, lock-free

    def on_signal(sig: int, frame: FrameType | None) -> None:
        received.append(sig)
        # The main thread may be inside stopping.wait() holding the event's lock; setting it
        # from this handler (which runs on that thread) could deadlock, so another thread does.
        threading.Thread(target=stopping.set, name="stopping", daemon=True).start()
        for process in processes:
            if process.pid is not None and process.exitcode is None:
                os.kill(process.pid, sig)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    log.info("supervising %d workers: %s", settings.workers, ", ".join(str(p.pid) for p in processes))
    try:
        while not stopping.wait(0.5):
            for index, process in enumerate(processes):
                if not process.is_alive() and not received:
                    log.error("worker %s exited with %s; starting a new one", process.pid, process.exitcode)
                    if process.pid is not None:
                        on_exit(process.pid)
                    processes[index] = start()
        for process in processes:
            process.join(settings.drain_seconds + SHUTDOWN_GRACE_SECONDS)
            if process.is_alive():
                log.error("worker %s did not stop in time; killing it", process.pid)
                process.kill()
                process.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

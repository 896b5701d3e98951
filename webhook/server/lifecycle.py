"""Graceful shutdown: on SIGTERM, report not-ready at once, keep serving for a drain period,
then stop accepting, finish what is in flight and exit 0.

The API server keeps reusing its connections to a terminating pod until the endpoint
update reaches it, so stopping at once would fail real admission requests.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import time
from dataclasses import dataclass
from types import FrameType

import uvicorn

log = logging.getLogger("webhook.server")


@dataclass
class Lifecycle:
    """Shared by the server loop (which flips it) and the app (which reports it in /readyz)."""

    draining_since: dt.datetime | None = None

    @property
    def draining(self) -> bool:
        return self.draining_since is not None

    def start_draining(self) -> None:
        if self.draining_since is None:
            self.draining_since = dt.datetime.now(dt.UTC)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, drain_seconds: float) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.drain_seconds = drain_seconds
        self._stop_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """The first SIGTERM starts the drain; SIGINT or a second signal stops at once.

        Unlike uvicorn's own handler, the signal is not re-raised after shutdown, so a
        drained server exits 0.
        """
        if sig == signal.SIGTERM and self._stop_at is None and self.drain_seconds > 0:
            self.lifecycle.start_draining()
            self._stop_at = time.monotonic() + self.drain_seconds
            log.info("SIGTERM: not ready; serving for %.1f s more, then shutting down", self.drain_seconds)
        elif self.should_exit:
            self.force_exit = True
        else:
            self.lifecycle.start_draining()
            self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self._stop_at is not None and time.monotonic() >= self._stop_at:
            return True
        return await super().on_tick(counter)

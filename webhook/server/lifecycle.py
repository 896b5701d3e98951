"""Graceful shutdown: on SIGTERM, report not-ready at once, keep serving for a drain period,
then stop accepting, finish what is in flight and exit 0.

The API server keeps reusing its connections to a terminating pod until the endpoint
update reaches it, so stopping at once would fail real admission requests.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import socket
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
    """uvicorn's server with a drain on SIGTERM, and an optional plain-HTTP probe listener
    that runs on the same loop and stays up until the end, so the kubelet sees the drain."""

    def __init__(
        self,
        config: uvicorn.Config,
        lifecycle: Lifecycle,
        drain_seconds: float,
        probe: uvicorn.Config | None = None,
        probe_sockets: list[socket.socket] | None = None,
    ) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.drain_seconds = drain_seconds
        self.probe = uvicorn.Server(probe) if probe is not None else None
        self.probe_sockets = probe_sockets
        self._stop_at: float | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.probe is not None and not self.should_exit:
            self.probe.config.load()
            self.probe.lifespan = self.probe.config.lifespan_class(self.probe.config)
            await self.probe.startup(sockets=self.probe_sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        if self.probe is not None and self.probe.started:
            await self.probe.shutdown(sockets=self.probe_sockets)

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

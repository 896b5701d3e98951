"""What one worker may hold for its clients: buffered bytes, and connections.

A worker has a memory limit (256 MiB in the manifests), and whoever reaches the port can ask
it to hold things: a body sent slowly, an answer never read, a connection left open. Each of
these costs the client little and the worker a lot, so a worker keeps two ledgers and, when
one is full, lets go of whoever holds the most, or has waited longest, rather than refusing
the newcomer. A normal review is small and quick, so it is never the one let go, and an
attack cannot lock admission out by filling a ledger first.

Both ledgers live on one event loop, so they need no locks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

from webhook.server.heap import HeapTrimmer
from webhook.settings import ServeSettings

log = logging.getLogger("webhook.server")

_DEFAULTS = ServeSettings()


# What a connection is doing, for choosing whom to displace: the lowest stage goes first.
IDLE, READING, ANSWERING = 0, 1, 2


class Holder(Protocol):
    def evict(self, why: str) -> None:
        """Let go of what it holds at once: answer 503 if it can, then close."""

    def stage(self) -> int:
        """IDLE between requests, READING a request, ANSWERING one (deciding or writing)."""


class BufferBudget:
    """Bytes held across connections: request bodies still arriving, answers not yet read.

    Over the limit, the holder of the most bytes is evicted (the newest of equals, which is the
    last that grew). A whole body is charged as it arrives, not as announced, so a client must
    send bytes to take a share, and a small review always fits beside it.
    """

    def __init__(self, limit: int = _DEFAULTS.max_buffered_bytes) -> None:
        self.limit = limit
        self.total = 0
        self._held: dict[Holder, int] = {}

    def hold(self, holder: Holder, size: int) -> None:
        """``holder`` now holds ``size`` bytes in all (0 releases it)."""
        held = self._held
        self.total += size - held.pop(holder, 0)
        if size:
            held[holder] = size
        if self.total > self.limit:
            self._evict()

    def release(self, holder: Holder) -> None:
        size = self._held.pop(holder, 0)
        self.total -= size

    def held_by(self, holder: Holder) -> int:
        return self._held.get(holder, 0)

    def _evict(self) -> None:
        while self.total > self.limit and self._held:
            victim = max(self._held, key=self._held.__getitem__)
            size = self._held.pop(victim)
            self.total -= size
            victim.evict(
                f"it held {size} bytes when this worker's clients together held more than the "
                f"limit of {self.limit} (--max-buffered-bytes)"
            )


class ConnectionSlots:
    """At most ``limit`` connections; a newcomer at the limit displaces the longest-idle one.

    An idle keep-alive connection costs tens of KB of TLS state and holds nothing we would lose
    by closing it (the API server simply reconnects). With none idle, the connection that has
    been reading a request for longest goes: a review arrives in milliseconds, so that is the
    slowest sender. Only when every connection is being answered is the newcomer refused.
    """

    def __init__(self, limit: int = _DEFAULTS.max_connections) -> None:
        self.limit = limit
        self._open: dict[Holder, None] = {}  # insertion order: oldest first

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, holder: Holder) -> bool:
        """Make room if need be; False when every slot is busy and ``holder`` must go."""
        if len(self._open) >= self.limit:
            victim = self._displaceable()
            if victim is None:
                return False
            self._open.pop(victim)
            victim.evict(f"this worker reached its limit of {self.limit} connections (--max-connections)")
        self._open[holder] = None
        return True

    def _displaceable(self) -> Holder | None:
        """The longest-idle connection, else the one reading a request for longest."""
        reading = None
        for holder in self._open:
            stage = holder.stage()
            if stage == IDLE:
                return holder
            if stage == READING and reading is None:
                reading = holder
        return reading

    def touch(self, holder: Holder) -> None:
        """``holder`` was just busy: it is the last to be displaced."""
        if holder in self._open:
            del self._open[holder]
            self._open[holder] = None

    def leave(self, holder: Holder) -> None:
        self._open.pop(holder, None)



@dataclass(frozen=True)
class ClientLimits:
    """Everything one worker's listener limits, made once per worker and shared by its connections."""

    buffers: BufferBudget = field(default_factory=BufferBudget)
    connections: ConnectionSlots = field(default_factory=ConnectionSlots)
    # An answer the client has not taken within this many seconds is dropped with its connection.
    write_timeout: float = _DEFAULTS.write_timeout
    heap: HeapTrimmer = field(default_factory=HeapTrimmer)

    @classmethod
    def from_settings(cls, settings: ServeSettings) -> ClientLimits:
        return cls(BufferBudget(settings.max_buffered_bytes), ConnectionSlots(settings.max_connections),
                   settings.write_timeout)

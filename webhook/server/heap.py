"""Give freed heap back to the system: after large answers, and after connection churn.

glibc serves a large block (a 7 MB answer, an 8 MB body) from mmap, and gives it back on free,
until the first such block is freed: then it raises its mmap threshold to that size, and later
large blocks come from the heap, whose top is rarely free to shrink. A few large reviews then
leave a worker's resident memory at its high-water mark for good. A fixed threshold keeps every
large block (1 MiB or more) in mmap; an mmap costs microseconds, and only large requests pay it.

Each TLS connection allocates buffers and handshake state in many small pieces. When thousands
of connections come and go, glibc keeps the freed pages in its arenas, scattered among live
ones, so a worker's resident memory ratchets up with every burst (63 MB to 306 MB over rounds
of 2,000 connections), although little of it is in use: ``malloc_trim(0)`` returns it. The
worker's memory limit counts resident pages, so after a burst of closes we ask for the trim,
once the burst has passed. Elsewhere than glibc there is no such call, and nothing is done.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger("webhook.server")

# Trim once this many connections have closed since the last trim...
TRIM_AFTER_CLOSES = 128
# ...this long after the last of those: a trim costs a few milliseconds of the event loop.
TRIM_DELAY_SECONDS = 1.0


# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1024 * 1024
# Fixing the mmap threshold also fixes this one, at 128 KiB unless set: the heap's top would then
# be given back and taken again on every few requests, a third more CPU per review (measured).
TRIM_THRESHOLD = 8 * MMAP_THRESHOLD


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):  # not glibc
        return None
    return libc


def _malloc_trim() -> Callable[[int], int] | None:
    libc = _libc()
    return None if libc is None else libc.malloc_trim


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD, trim: int = TRIM_THRESHOLD) -> bool:
    """Serve every block of ``threshold`` bytes or more from mmap, for good; False where not glibc."""
    libc = _libc()
    if libc is None:
        return False
    # Setting either one turns off glibc's dynamic adjustment of both.
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, trim))


class HeapTrimmer:
    """Counts closed connections and trims the heap after a burst of them."""

    def __init__(self, after: int = TRIM_AFTER_CLOSES, delay: float = TRIM_DELAY_SECONDS,
                 trim: Callable[[int], int] | None = None) -> None:
        self.after = after
        self.delay = delay
        self._trim = trim if trim is not None else _malloc_trim()
        self._closed = 0
        self._timer: asyncio.TimerHandle | None = None
        self.trims = 0

    def closed(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._trim is None:
            return
        self._closed += 1
        if self._closed >= self.after and self._timer is None:
            self._timer = loop.call_later(self.delay, self._run)

    def _run(self) -> None:
        self._timer = None
        self._closed = 0
        if self._trim is not None:
            self._trim(0)
            self.trims += 1

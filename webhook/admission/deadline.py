"""A per-request deadline that handlers check between images, and inside every loop whose
length the object decides.

The API server gives up after ``?timeout=``; an answer after that is wasted and a silent
one is a failed call. Checking cooperatively costs a clock read now and then, where handing
every decision to a thread would cost a sizeable share of throughput.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
# Loop steps between clock reads: a step (defaulting a container, rewriting an image, diffing
# an element) costs microseconds, a clock read about 50 ns.
TICK_EVERY = 16


class DeadlineExceeded(Exception):
    """Raised by ``Deadline.check`` once the answer is due."""


@dataclass(frozen=True, slots=True)
class Deadline:
    at: float  # time.monotonic() by which the answer is due

    @classmethod
    def after(cls, seconds: float, start: float | None = None) -> Deadline:
        return cls((time.monotonic() if start is None else start) + seconds)

    def check(self) -> None:
        if time.monotonic() >= self.at:
            raise DeadlineExceeded

    def ticker(self, every: int = TICK_EVERY) -> Callable[[], None]:
        """A check to call on every step of a loop; it reads the clock on every ``every``-th call.

        Loops in ``policy/`` take it as a plain callable, so that layer never learns of deadlines.
        """
        at = self.at
        count = 0

        def tick() -> None:
            nonlocal count
            count += 1
            if count >= every:
                count = 0
                if time.monotonic() >= at:
                    raise DeadlineExceeded

        return tick


NEVER = Deadline(math.inf)


def parse_go_duration(text: str) -> float | None:
    """``10s``, ``1m30s``, ``500ms`` as client-go writes them; None when it is not one."""
    position, total = 0, 0.0
    for match in _GO_DURATION.finditer(text):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    return total if position == len(text) and text else None


@lru_cache(maxsize=256)
def budget(timeout_param: str | None, eval_timeout: float, margin: float) -> float:
    """Seconds to decide in: the API server's timeout less a margin for the reply, capped."""
    api_timeout = parse_go_duration(timeout_param) if timeout_param else None
    if api_timeout is None:
        return eval_timeout
    return max(0.0, min(eval_timeout, api_timeout - min(margin, api_timeout / 2)))

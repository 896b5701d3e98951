"""Logging set-up, done in the CLI and again in each worker process (spawned workers start bare)."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx logs every API call at INFO; webhook.kube logs what the calls meant instead.
    logging.getLogger("httpx").setLevel(logging.WARNING)

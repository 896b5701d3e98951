"""Logging: JSON lines by default (one object per line, for log pipelines), or text for people.

Done in the CLI and again in each worker process, because spawned workers start bare.
Callers pass structured fields with ``extra={"fields": {...}}``; they are never whole objects.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self._time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()

    def _time(self, record: logging.LogRecord) -> str:
        """RFC 3339 in UTC, to the millisecond. The part up to the second is made once a second:
        formatting a datetime every time was a fifth of the cost of a decision log line."""
        second = int(record.created)
        if second != self._second:  # format() runs under the handler's lock
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int(record.msecs):03d}+00:00"


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            text += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        return text


def configure_logging(level: str, fmt: str = "json") -> None:
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "webhook", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stdout)
        handler.webhook = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.setLevel(level.upper())
    # httpx logs every API call at INFO; webhook.kube logs what the calls meant instead.
    logging.getLogger("httpx").setLevel(logging.WARNING)

"""Logging: JSON lines by default (one object per line, for log pipelines), or text for people.

Done in the CLI and again in each worker process, because spawned workers start bare.
Callers pass structured fields with ``extra={"fields": {...}}``; they are never whole objects.
Some fields come from the request (a name, a user, a reason that quotes images), so in both
formats every string is capped at ``FIELD_LIMIT``, and in text a value that is not plainly
printable is written as a quoted, escaped string: a record is always exactly one line.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

import orjson

from webhook.untrusted import cap, quote

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Characters of one field value, or of the message: a 7 MB object's warnings made a 10 MB line.
FIELD_LIMIT = 4096
# Written bare in text: printable ASCII without '"', '=' or '\\'; a message may hold spaces too.
_BARE_VALUE = re.compile(r'[!#-<>-\[\]-~]+', re.ASCII)
_BARE_MESSAGE = re.compile(r'[ !#-<>-\[\]-~]+', re.ASCII)


def bounded(record: logging.LogRecord) -> tuple[str, dict[str, Any]]:
    """The record's message and fields, each string capped at ``FIELD_LIMIT``.

    Every decision line passes through here and almost none is over the limit, so the fields
    are copied only when one is: a copy of each line's fields was a tenth of a denial's cost.
    """
    message = record.getMessage()
    if len(message) > FIELD_LIMIT:
        message = cap(message, FIELD_LIMIT)
    fields = getattr(record, "fields", None)
    if not isinstance(fields, dict):
        return message, {}
    for value in fields.values():
        if isinstance(value, str) and len(value) > FIELD_LIMIT:
            return message, {key: cap(value, FIELD_LIMIT) if isinstance(value, str) else value
                             for key, value in fields.items()}
    return message, fields


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        message, fields = bounded(record)
        line: dict[str, Any] = {
            "time": self._time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": message,
        }
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
    """``time LEVEL logger: message key=value ...``, logfmt-like: a value with a space, a quote,
    an ``=``, a backslash or anything not printable ASCII is a JSON string, escaped by ``quote``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        message, fields = bounded(record)
        record.message = message if _BARE_MESSAGE.fullmatch(message) else quote(message, None)
        text = super().formatMessage(record)
        if fields:
            text += " " + " ".join(f"{key}={_text_value(value)}" for key, value in fields.items())
        return text


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    return text if _BARE_VALUE.fullmatch(text) else quote(text, None)


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

"""Text from a request, made fit to show: bounded, and with nothing that can end a line or hide.

Denial messages quote images and container names, and the text log writes names, users and
reasons. Both come from whoever sent the object, so both go through ``quote``: a newline in
``metadata.name`` must not start a forged log line, a bidi override must not reorder a
message, and a 7 MB value must not become a 7 MB line.
"""

from __future__ import annotations

import orjson


def cap(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters and how long it was."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"…({len(text)} chars)"


def quote(text: str, limit: int | None = 200) -> str:
    """A JSON string of ``text``, capped at ``limit`` (None: capped already), with every
    non-printable character escaped.

    orjson escapes the C0 controls; DEL, C1, format characters (bidi overrides, zero-width
    joiners), line and paragraph separators and odd spaces are escaped here, as JSON
    ``\\uXXXX`` (a surrogate pair beyond the BMP), so the result is still valid JSON.
    """
    quoted = orjson.dumps(text if limit is None else cap(text, limit)).decode()
    if quoted.isprintable():
        return quoted
    return "".join(ch if ch.isprintable() else _escaped(ord(ch)) for ch in quoted)


def _escaped(code: int) -> str:
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"

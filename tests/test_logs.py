"""Log formatting: one line per record whatever a request puts in a field, and bounded lines."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from webhook.logs import FIELD_LIMIT, JsonFormatter, TextFormatter

_QUOTED = r'"(?:[^"\\]|\\.)*"'
# After the logger's name: the message (bare, without '"', '=' or '\', or a JSON string), then
# ` key=value` fields whose value is bare (no space either) or a JSON string.
TEXT_LINE = re.compile(rf'(?P<message>{_QUOTED}|[^"=\\]+?)(?P<fields>(?: \w+=(?:{_QUOTED}|[^ "=\\]+))*)')
TEXT_FIELD = re.compile(rf" (\w+)=({_QUOTED}|[^ \"=\\\\]+)")


def record(message: str = "validate denied", **fields: Any) -> logging.LogRecord:
    return logging.makeLogRecord({"name": "webhook.admission", "levelname": "INFO", "levelno": logging.INFO,
                                  "msg": message, "fields": fields})


def read_text(line: str) -> tuple[str, dict[str, str]]:
    """The message and fields of a text line, read back as a log reader would."""
    parsed = TEXT_LINE.fullmatch(line.split(" webhook.admission: ", 1)[1])
    assert parsed is not None, line

    def value(text: str) -> str:
        return str(json.loads(text)) if text.startswith('"') else text

    fields = {key: value(text) for key, text in TEXT_FIELD.findall(parsed["fields"])}
    return value(parsed["message"]), fields


def test_text_writes_plain_values_bare_and_quotes_the_rest() -> None:
    line = TextFormatter().format(record(
        plain="web-1", code=403, space="a b", equals="k=v", quote='say "hi"', backslash="a\\b", empty="",
        newline="web\nforged", bidi="\u202egnp.exe", separator="a\u2028b", tag="\U000e0001x", accent="café",
    ))
    assert line.endswith(
        ' INFO webhook.admission: validate denied plain=web-1 code=403 space="a b" equals="k=v"'
        ' quote="say \\"hi\\"" backslash="a\\\\b" empty="" newline="web\\nforged" bidi="\\u202egnp.exe"'
        ' separator="a\\u2028b" tag="\\udb40\\udc01x" accent="café"'
    )


def test_a_text_message_that_is_not_plain_is_quoted_too() -> None:
    line = TextFormatter().format(record("refused: line one\nline two", key="k"))
    assert line.endswith(' webhook.admission: "refused: line one\\nline two" key=k')


@settings(max_examples=300, deadline=None)
@given(message=st.text(max_size=30),
       fields=st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), st.text(max_size=30), max_size=4))
def test_any_text_makes_one_line_that_reads_back(message: str, fields: dict[str, str]) -> None:
    line = TextFormatter().format(record(message, **fields))
    assert len(line.splitlines()) == 1 and line.isprintable()
    assert read_text(line) == (message, fields)


def test_fields_and_message_are_capped_in_both_formats() -> None:
    huge, name = "é" * (FIELD_LIMIT * 3), "x" * FIELD_LIMIT  # at the limit: kept whole
    capped = "é" * FIELD_LIMIT + f"…({FIELD_LIMIT * 3} chars)"
    line = orjson.loads(JsonFormatter().format(record(huge, reason=huge, name=name, code=403)))
    assert (line["msg"], line["reason"], line["name"], line["code"]) == (capped, capped, name, 403)
    assert read_text(TextFormatter().format(record(huge, reason=huge, name=name))) == (
        capped, {"reason": capped, "name": name})

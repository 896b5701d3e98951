"""The YAML loader the policy file and ``webhook check`` share: kubectl's reading of YAML, the same
with libyaml's C parser and with PyYAML's pure-Python one, and the C one in use when it is there."""

from __future__ import annotations

import codecs
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webhook.policy import kubeyaml
from webhook.policy.kubeyaml import MAX_DEPTH, FastLoader, PureLoader

LOADERS = [PureLoader, FastLoader]
SETTINGS = settings(max_examples=300, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def values(text: str, loader: type[PureLoader | FastLoader]) -> list[Any]:
    return [value for _, value in kubeyaml.documents(text, loader)]


def outcome(text: str, loader: type[PureLoader | FastLoader]) -> tuple[str, Any]:
    """What a reader sees: the documents, or how many came before the error and its words."""
    found: list[Any] = []
    try:
        for _, value in kubeyaml.documents(text, loader):
            found.append(value)
    except yaml.YAMLError as exc:
        return "error", (len(found), kubeyaml.describe(exc))
    return "documents", found


def test_the_c_loader_is_in_use() -> None:
    """The install takes PyYAML's wheel, which has libyaml; a source build without it would be 10× slower."""
    assert yaml.__with_libyaml__
    assert kubeyaml.LOADER is FastLoader
    assert issubclass(FastLoader, yaml.CSafeLoader) and issubclass(FastLoader, kubeyaml.KubernetesConstructor)
    parser = kubeyaml.LOADER("a: 1")
    assert isinstance(parser, yaml.CSafeLoader)
    parser.dispose()


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize(("text", "expected"), [
    # merge keys, applied in the order written, as go-yaml v2 (and so kubectl) applies them
    ("base: &b {a: 1, b: 2}\nboth: {<<: *b, b: 3}\n", {"base": {"a": 1, "b": 2}, "both": {"a": 1, "b": 3}}),
    ("base: &b {a: 1, b: 2}\nboth: {b: 3, <<: *b}\n", {"base": {"a": 1, "b": 2}, "both": {"a": 1, "b": 2}}),
    ("x: &x {a: 1}\ny: &y {a: 2, b: 2}\nz: {<<: [*x, *y]}\n", {"x": {"a": 1}, "y": {"a": 2, "b": 2},
                                                           "z": {"a": 1, "b": 2}}),
    ("x: &x {a: 1}\ny: &y {<<: *x, b: 2}\nz: {<<: *y, c: 3}\n", {"x": {"a": 1}, "y": {"a": 1, "b": 2},
                                                              "z": {"a": 1, "b": 2, "c": 3}}),
    ("a: {<<: {b: 1}}\n", {"a": {"b": 1}}),
    ("'<<': 1\n", {"<<": 1}),  # quoted, it is just a key
    # JSON types only: timestamps are the text written, '=' is a string
    ("a: 2024-01-01\nb: 2024-01-01T10:00:00Z\nc: !!timestamp 2001-12-14\nd: =\n",
     {"a": "2024-01-01", "b": "2024-01-01T10:00:00Z", "c": "2001-12-14", "d": "="}),
    ("a: off\nb: 0x1F\nc: 1e3\nd: ~\n", {"a": False, "b": 31, "c": "1e3", "d": None}),
])
def test_what_kubectl_reads(loader: type[PureLoader | FastLoader], text: str, expected: Any) -> None:
    assert values(text, loader) == [expected]


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize(("text", "problem"), [
    ("a: 1\nb: 2\na: 3\n", "duplicate key 'a' (line 3, column 1)"),
    ("a: {<<: {b: 1, b: 2}}\n", "duplicate key 'b' (line 1, column 16)"),
    ("a: &a {b: 1, <<: *a}\n", "while constructing a mapping: a merge key includes the mapping it is in"),
    ("a: {<<: [1]}\n", "expected a mapping for merging, but found scalar (line 1, column 10)"),
    ("a: {<<: 1}\n", "expected a mapping or list of mappings for merging, but found scalar (line 1, column 9)"),
    ("a: !!python/name:os.system x\n", "could not determine a constructor for the tag"),
    ("a: [\n", "while parsing a flow node: expected the node content, but found '<stream end>' (line 2, column 1)"),
    ("a:\n  - *\n", "while scanning an alias: expected alphabetic or numeric character, but found '\\n' "
     "(line 2, column 6); an unquoted * starts a YAML alias: quote it, as in - \"*\""),
    ("a: *nope\n", "found undefined alias 'nope' (line 1, column 4); a value that starts with * is an alias"),
    ("a: b: c\n", "mapping values are not allowed here (line 1, column 5)"),
    ("a:\n\t- b\n", "while scanning for the next token: found character '\\t' that cannot start any token "
     "(line 2, column 1)"),
    ("a: 'x\n", "while scanning a quoted scalar: found unexpected end of stream (line 2, column 1)"),
    ("ok: 1\n---\na: [b\n", "while parsing a flow sequence: expected ',' or ']', but got '<stream end>'"),
])
def test_refusals_are_worded_as_pyyaml_words_them(loader: type[PureLoader | FastLoader], text: str,
                                                  problem: str) -> None:
    kind, (before, message) = outcome(text, loader)
    assert kind == "error"
    assert problem in message
    assert before == text.count("---")  # the documents before the broken one are read


@pytest.mark.parametrize("loader", LOADERS)
def test_nesting_is_refused_past_the_limit_without_recursing(loader: type[PureLoader | FastLoader]) -> None:
    for opener, closer in (("[", "]"), ("{a: ", "}")):
        assert outcome(f"a: {opener * (MAX_DEPTH - 1)}1{closer * (MAX_DEPTH - 1)}\n", loader)[0] == "documents"
        kind, (before, message) = outcome(f"ok: 1\n---\na: {opener * MAX_DEPTH}1{closer * MAX_DEPTH}\n", loader)
        assert (kind, before) == ("error", 1)
        assert message.startswith(f"more than {MAX_DEPTH} levels of nesting (line 3, column ")
    block = "".join(f"{'  ' * level}k{level}:\n" for level in range(MAX_DEPTH + 1))
    assert outcome(block, loader)[1][1].startswith(f"more than {MAX_DEPTH} levels of nesting (line {MAX_DEPTH + 1}, ")
    compact = "- " * (MAX_DEPTH + 1) + "x\n"  # one line, no indentation: the bound must count indicators too
    assert outcome(compact, loader)[1][1].startswith(f"more than {MAX_DEPTH} levels of nesting (line 1, ")
    assert outcome("- " * MAX_DEPTH + "x\n", loader)[0] == "documents"
    assert outcome("a: &x [" * 5000, loader)[0] == "error"  # deep and broken: no crash either


def test_a_deep_document_is_refused_before_libyaml_composes_it() -> None:
    """libyaml's composer recurses in C: 100 000 levels would crash the process, not raise."""
    kind, (_, message) = outcome("a: " + "[" * 100_000 + "]" * 100_000, FastLoader)
    column = 3 + MAX_DEPTH  # of the 200th "[", the 201st collection with the mapping around them
    assert (kind, message) == ("error", f"more than {MAX_DEPTH} levels of nesting (line 1, column {column})")


def test_load_takes_one_document() -> None:
    assert kubeyaml.load("") is None
    assert kubeyaml.load("a: 1\n") == {"a": 1}
    with pytest.raises(yaml.YAMLError) as caught:
        kubeyaml.load("a: 1\n---\nb: 2\n")
    assert kubeyaml.describe(caught.value) == ("expected a single document in the stream: but found another "
                                               "document (line 3, column 1)")


@pytest.mark.parametrize(("raw", "text"), [
    (b"a: 1\n", "a: 1\n"),
    (codecs.BOM_UTF8 + b"a: 1\n", "a: 1\n"),
    (codecs.BOM_UTF16_LE + "a: é\n".encode("utf-16-le"), "a: é\n"),
    (codecs.BOM_UTF16_BE + "a: é\n".encode("utf-16-be"), "a: é\n"),
])
def test_decode_reads_utf8_and_utf16_by_its_byte_order_mark(raw: bytes, text: str) -> None:
    assert kubeyaml.decode(raw) == text


@pytest.mark.parametrize(("raw", "problem"), [
    (b"a: \xff\n", "is not UTF-8 text (invalid start byte at byte 3)"),
    (codecs.BOM_UTF16_LE + b"a\x00:", "is not UTF-16 text (truncated data at byte 4)"),
])
def test_decode_refuses_with_a_reason(raw: bytes, problem: str) -> None:
    with pytest.raises(UnicodeDecodeError) as caught:
        kubeyaml.decode(raw)
    assert kubeyaml.undecodable(caught.value).startswith(problem)


# --- both parsers, one answer -------------------------------------------------------------------

KEYS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=8)
LEAVES = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
          | st.floats(allow_nan=False, allow_infinity=False)
          | st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20))
TREES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
                     max_leaves=15)


@SETTINGS
@given(st.lists(TREES, min_size=1, max_size=3), st.sampled_from([None, True, False]))
def test_both_parsers_read_what_pyyaml_writes_alike(documents: list[Any], flow: bool | None) -> None:
    text = yaml.safe_dump_all(documents, default_flow_style=flow, allow_unicode=True)
    assert values(text, FastLoader) == values(text, PureLoader) == documents


@SETTINGS
@given(st.data())
def test_both_parsers_agree_on_broken_text(data: st.DataObject) -> None:
    """Damage a document anywhere: when both parsers refuse it at the same document, the words are
    the same; when both read it, the values are. (Not with tags: a lone ``!`` is "" to libyaml,
    as to go-yaml, and null to PyYAML.)"""
    text = yaml.safe_dump_all(data.draw(st.lists(TREES, min_size=1, max_size=3)), default_flow_style=None)
    at = data.draw(st.integers(0, len(text)))
    damage = data.draw(st.sampled_from(["", ":", "- ", "[", "]", "{", "}", "*", "&", "\t", "'", '"', "\n", " ", "#",
                                        "?", "|", ">", "<<: ", "---\n", "..."]))
    cut = data.draw(st.integers(0, 2))
    broken = text[:at] + damage + text[at + cut:]
    fast, pure = outcome(broken, FastLoader), outcome(broken, PureLoader)
    if fast[0] == pure[0] == "documents" or (fast[0] == pure[0] == "error" and fast[1][0] == pure[1][0]):
        assert fast == pure

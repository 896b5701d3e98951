"""YAML as the Kubernetes tools read it, with libyaml's C parser when PyYAML has it.

Both the policy file and ``webhook check`` read YAML here, so they agree with each other and
with kubectl, whose sigs.k8s.io/yaml (go-yaml v2) turns YAML into the JSON the API server
stores:

- safe types only; a timestamp stays the string it was written as, and ``=`` is a string;
- a key written twice in one mapping is refused, not silently the last;
- merge keys (``<<: *base``, ``<<: [*a, *b]``) work as in go-yaml v2: keys are applied in
  the order written, so a key after the ``<<`` overrides the merged one, and in a list of
  mappings the first to name a key wins;
- more than ``MAX_DEPTH`` levels of nesting are refused before they are built.

libyaml parses about ten times faster than PyYAML's pure-Python parser, but words its errors
differently, so on a syntax error the document is parsed again in pure Python and the error
is reported in PyYAML's words: a message never depends on how PyYAML was built. The
nesting limit is checked before libyaml composes a document, because its composer recurses
in C and a deep enough document would crash the process rather than raise.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Hashable, Iterator
from typing import TYPE_CHECKING, Any, cast

import yaml
from yaml.constructor import ConstructorError

# Far deeper than any real object; orjson, which encodes the review, stops at 255 levels.
MAX_DEPTH = 200
MERGE_TAG = "tag:yaml.org,2002:merge"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_NOT_JSON_TAGS = (_TIMESTAMP_TAG, "tag:yaml.org,2002:value")
# Where a line's block collections can start: its indentation, then indicators and properties.
_BLOCK_PREFIX = re.compile(r"^[ \t]*(?:(?:[-?:]|[&!][^ \t\n]*)[ \t]+)*", re.MULTILINE)


class KubernetesConstructor(yaml.constructor.SafeConstructor):
    """The rules both loaders share; see the module docstring."""

    yaml_implicit_resolvers = {  # noqa: RUF012 - PyYAML looks resolvers up on the class
        first: [(tag, pattern) for tag, pattern in resolvers if tag not in _NOT_JSON_TAGS]
        for first, resolvers in yaml.resolver.Resolver.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        return self._mapping(node, deep, ())

    def _mapping(self, node: yaml.Node, deep: bool, merging: tuple[yaml.Node, ...]) -> dict[Hashable, Any]:
        if not isinstance(node, yaml.MappingNode):
            raise ConstructorError(None, None, f"expected a mapping node, but found {_kind(node)}", node.start_mark)
        mapping: dict[Hashable, Any] = {}
        written: set[Hashable] = set()
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                for source in _merge_sources(node, value_node):
                    if source is node or any(source is outer for outer in merging):
                        raise ConstructorError("while constructing a mapping", node.start_mark,
                                               "a merge key includes the mapping it is in", value_node.start_mark)
                    mapping.update(self._mapping(source, deep, (*merging, node)))
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                raise ConstructorError("while constructing a mapping", node.start_mark, "found unhashable key",
                                       key_node.start_mark)
            if key in written:
                raise ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            written.add(key)
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping

    def construct_timestamp_text(self, node: yaml.Node) -> str:
        """An explicit ``!!timestamp`` too: go-yaml v2 hands it over as the text written."""
        return str(self.construct_scalar(cast(yaml.ScalarNode, node)))  # which refuses any other node

    yaml_constructors = {  # noqa: RUF012 - PyYAML looks constructors up on the class
        **yaml.constructor.SafeConstructor.yaml_constructors, _TIMESTAMP_TAG: construct_timestamp_text,
    }


def _merge_sources(node: yaml.MappingNode, value: yaml.Node) -> list[yaml.Node]:
    """The mappings a ``<<`` merges, in the order they are applied (so the first listed wins)."""
    if isinstance(value, yaml.MappingNode):
        return [value]
    if isinstance(value, yaml.SequenceNode):
        for item in value.value:
            if not isinstance(item, yaml.MappingNode):
                raise ConstructorError("while constructing a mapping", node.start_mark,
                                       f"expected a mapping for merging, but found {_kind(item)}", item.start_mark)
        return list(reversed(value.value))
    raise ConstructorError("while constructing a mapping", node.start_mark,
                           f"expected a mapping or list of mappings for merging, but found {_kind(value)}",
                           value.start_mark)


def _kind(node: yaml.Node) -> str:
    return str(getattr(node, "id", type(node).__name__))


class PureLoader(KubernetesConstructor, yaml.SafeLoader):
    """PyYAML's own parser, in Python: the fallback, and the words of every syntax error."""


if TYPE_CHECKING or yaml.__with_libyaml__:
    class FastLoader(KubernetesConstructor, yaml.CSafeLoader):
        """libyaml's parser and composer, in C; construction stays in Python, with the same rules."""

    LOADER: type[PureLoader | FastLoader] = FastLoader
else:  # a PyYAML built from source without libyaml: the same answers, only slower
    LOADER = PureLoader


def decode(raw: bytes) -> str:
    """Text as kubectl decodes files and stdin: UTF-8, or UTF-16 when a byte-order mark says so.

    Raises UnicodeDecodeError, whose ``encoding`` names what the bytes were read as.
    """
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16")  # the BOM gives the byte order, and is dropped
    return raw.decode("utf-8-sig")


def undecodable(exc: UnicodeDecodeError) -> str:
    """Why ``decode`` refused the bytes, for a person."""
    return f"is not {'UTF-16' if '16' in exc.encoding else 'UTF-8'} text ({exc.reason} at byte {exc.start})"


def documents(text: str, loader: type[PureLoader | FastLoader] | None = None) -> Iterator[tuple[yaml.Node, Any]]:
    """Each document's node and value, in order. A YAMLError ends the stream.

    Callers count documents as they come: an error belongs to the one after the last yielded.
    """
    cls = loader or LOADER
    too_deep = _too_deep(text, cls)
    parser = cls(text)
    index = 0
    try:
        while True:
            index += 1
            if too_deep is not None and too_deep[0] == index:
                raise too_deep[1]
            try:
                if not parser.check_node():
                    return
                node = parser.get_node()
            except yaml.YAMLError as exc:
                raise _in_pure_words(exc, text, index, cls) from None
            if node is None:
                return
            try:
                value = parser.construct_document(node)
            except yaml.YAMLError as exc:  # libyaml marks some empty values a column apart
                raise _in_pure_words(exc, text, index, cls) from None
            except RecursionError:  # merge keys that merge mappings that merge mappings ...
                raise ConstructorError(None, None, "merge keys are nested too deeply", node.start_mark) from None
            yield node, value
    finally:
        parser.dispose()


def load(text: str, loader: type[PureLoader | FastLoader] | None = None) -> Any:
    """The one document in ``text`` (None when there is none), like ``yaml.load``."""
    found = documents(text, loader)
    first = next(found, None)
    if first is None:
        return None
    second = next(found, None)
    if second is not None:
        raise yaml.composer.ComposerError("expected a single document in the stream", first[0].start_mark,
                                          "but found another document", second[0].start_mark)
    return first[1]


def describe(exc: yaml.YAMLError) -> str:
    """One line: what is wrong and where, ``(line L, column C)``, and how to fix a bare ``*``."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return str(exc)
    mark = exc.problem_mark
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    text = f"{exc.context + ': ' if exc.context else ''}{exc.problem}{where}"
    if bare_alias(exc):
        text += "; an unquoted * starts a YAML alias: quote it, as in - \"*\""
    elif exc.problem and exc.problem.startswith("found undefined alias"):
        text += "; a value that starts with * is an alias: quote it if you meant the text"
    return text


def bare_alias(exc: yaml.YAMLError) -> bool:
    """Whether ``exc`` is a lone unquoted ``*``, which YAML takes for an alias with no name."""
    return (isinstance(exc, yaml.scanner.ScannerError) and exc.context == "while scanning an alias"
            and exc.context_mark is not None and exc.problem_mark is not None
            and exc.problem_mark.index == exc.context_mark.index + 1)


def _too_deep(text: str, cls: type[PureLoader | FastLoader]) -> tuple[int, yaml.MarkedYAMLError] | None:
    """The first document nested more than MAX_DEPTH levels deep, and the error for it.

    A bound from the text settles nearly every file at once: flow collections cannot nest
    deeper than there are brackets, nor block collections deeper than twice the widest run
    of indentation, indicators and properties. Otherwise the parser's events are counted,
    which never recurses.
    """
    flows = text.count("[") + text.count("{")
    if flows + 2 * max(map(len, _BLOCK_PREFIX.findall(text)), default=0) + 2 <= MAX_DEPTH:
        return None
    parser = cls(text)
    index = depth = 0
    try:
        while parser.check_event():
            event = parser.get_event()
            if isinstance(event, yaml.DocumentStartEvent):
                index += 1
            elif isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    mark = cast(yaml.Mark, event.start_mark)  # libyaml's marks have the same fields
                    return index, yaml.MarkedYAMLError(None, None, f"more than {MAX_DEPTH} levels of nesting", mark)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return None  # composing stops at the same error, no deeper than it got here
    finally:
        parser.dispose()
    return None


def _in_pure_words(exc: yaml.YAMLError, text: str, index: int, cls: type[PureLoader | FastLoader]) -> yaml.YAMLError:
    """The pure-Python parser's error for the same document, when it finds one there too; else ``exc``."""
    if cls is PureLoader:
        return exc
    parser = PureLoader(text)
    count = 0
    try:
        for count in range(1, index + 1):  # an error met at ``count`` is that document's
            if not parser.check_node():
                return exc
            node = parser.get_node()
            if count == index and node is not None:
                parser.construct_document(node)  # PyYAML may parse what libyaml does not, then refuse it here
    except yaml.YAMLError as pure:
        return pure if count == index else exc
    except RecursionError:
        return exc
    finally:
        parser.dispose()
    return exc

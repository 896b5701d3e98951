"""The policy file: its schema, how it loads, and the compiled form handlers use.

Policy is data. The schema refuses anything ambiguous at load time, with the file, the
key and the problem, so a typo can never quietly widen what is admitted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from webhook.policy.patterns import Allowlist, Pattern, PatternError, parse_pattern

Mode = Literal["enforce", "warn", "off"]
DEFAULT_POLICY_SOURCE = "<embedded default policy>"


def _valid_pattern(text: str) -> str:
    try:
        parse_pattern(text)
    except PatternError as exc:
        raise ValueError(str(exc)) from None
    return text


PatternText = Annotated[str, AfterValidator(_valid_pattern)]


class PolicyError(ValueError):
    """A policy that does not load. ``str()`` names the file, the key and the problem."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        super().__init__(f"policy file {source}: {key}: {problem}" if key else f"policy file {source}: {problem}")
        self.source = source
        self.key = key
        self.problem = problem


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImagesSpec(_Strict):
    mode: Mode = "enforce"
    allow: list[PatternText] | None = None
    requireDigest: bool = Field(default=False, strict=True)

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 reads an unquoted ``off`` (also ``no``, ``false``) as boolean false.
        return "off" if value is False else value

    @model_validator(mode="after")
    def _allow_required(self) -> ImagesSpec:
        if self.allow is None and self.mode != "off":
            raise ValueError("'allow' is required (an empty list denies every image)")
        return self


class PolicySpec(_Strict):
    images: ImagesSpec
    exemptNamespaces: list[str] = []
    # What a validating answer is when evaluation overruns its deadline.
    failureMode: Literal["deny", "allow"] = "deny"


@dataclass(frozen=True, slots=True)
class Policy:
    """The compiled policy: everything a request needs is built once, here."""

    mode: Mode
    allowlist: Allowlist
    require_digest: bool
    exempt_namespaces: frozenset[str]
    failure_mode: Literal["deny", "allow"]
    source: str
    sha256: str

    @classmethod
    def compile(cls, spec: PolicySpec, source: str, raw: bytes) -> Policy:
        patterns: list[Pattern] = [parse_pattern(text) for text in spec.images.allow or []]
        return cls(
            mode=spec.images.mode,
            allowlist=Allowlist(patterns),
            require_digest=spec.images.requireDigest,
            exempt_namespaces=frozenset(spec.exemptNamespaces),
            failure_mode=spec.failureMode,
            source=source,
            sha256=hashlib.sha256(raw).hexdigest(),
        )


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, which plain YAML resolves silently to the last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_policy(raw: bytes, source: str) -> Policy:
    try:
        data = yaml.load(raw, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise PolicyError(source, "", f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PolicyError(source, "", "the top level must be a mapping with an 'images' key")
    try:
        spec = PolicySpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise PolicyError(source, _key(first["loc"]), _problem(first)) from None
    return Policy.compile(spec, source, raw)


def load_policy(path: Path | None) -> Policy:
    """Load ``path``, or the embedded default when it is None."""
    if path is None:
        raw = resources.files("webhook.policy").joinpath("default.yaml").read_bytes()
        return parse_policy(raw, DEFAULT_POLICY_SOURCE)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError(str(path), "", f"cannot be read: {exc.strerror or exc}") from None
    return parse_policy(raw, str(path))


def _key(loc: tuple[int | str, ...]) -> str:
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def _problem(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "is required"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "literal_error":
        return f"{message}, got {error['input']!r}"
    return message

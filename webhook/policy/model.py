"""The policy file: its schema, how it loads, and the compiled form handlers use.

Policy is data. The schema refuses anything ambiguous at load time, with the file, the
key and the problem, so a typo can never quietly widen what is admitted.
"""

from __future__ import annotations

import difflib
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from webhook.policy import kubeyaml
from webhook.policy.defaults import (
    ConflictError,
    Defaults,
    DefaultsError,
    DefaultsRule,
    SelectorError,
    compile_tree,
    image_probes,
    render_path,
)
from webhook.policy.match import Match, MatchSpec, Subject, valid_name
from webhook.policy.patterns import Allowlist, Pattern, PatternError, parse_pattern
from webhook.policy.podspecs import MalformedObject, pod_spec_path
from webhook.policy.references import InvalidReference, parse_reference
from webhook.policy.rewrite import (
    RewriteError,
    Rewriter,
    RewriteRule,
    check_rules,
    deciding_images,
    fresh_component,
    parse_prefix,
)
from webhook.policy.scopes import (
    ExceptionRule,
    Exceptions,
    Mode,
    NamespaceLabels,
    Rules,
    Scope,
    Scopes,
    no_namespace_labels,
    parse_rfc3339,
)
from webhook.policy.verdicts import ImageJudge

DEFAULT_POLICY_SOURCE = "<embedded default policy>"


def _valid_pattern(text: str) -> str:
    try:
        parse_pattern(text)
    except PatternError as exc:
        raise ValueError(str(exc)) from None
    return text


PatternText = Annotated[str, AfterValidator(_valid_pattern)]


def _valid_prefix(text: str) -> str:
    parse_prefix(text)  # its ValueError names the problem
    return text


PrefixText = Annotated[str, AfterValidator(_valid_prefix)]


class PolicyError(ValueError):
    """A policy that does not load. ``str()`` names the file, the key and the problem."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        super().__init__(f"policy file {source}: {key}: {problem}" if key else f"policy file {source}: {problem}")
        self.source = source
        self.key = key
        self.problem = problem


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RewriteSpec(_Strict):
    from_: PrefixText = Field(alias="from")
    to: PrefixText


def _yaml_off(value: Any) -> Any:
    # YAML 1.1 reads an unquoted ``off`` (also ``no``, ``false``) as boolean false.
    return "off" if value is False else value


ModeText = Annotated[Mode, BeforeValidator(_yaml_off)]


class ImagesSpec(_Strict):
    mode: ModeText = "enforce"
    allow: list[PatternText] | None = None
    requireDigest: bool = Field(default=False, strict=True)
    rewrite: list[RewriteSpec] = []

    @model_validator(mode="after")
    def _allow_required(self) -> ImagesSpec:
        if self.allow is None and self.mode != "off":
            raise ValueError("'allow' is required (an empty list denies every image)")
        return self


def _one_name(text: str) -> str:
    if not text or "*" in text:
        raise ValueError("must be a non-empty name; '*' is allowed only in versions")
    return text


Name = Annotated[str, Field(strict=True), AfterValidator(_one_name)]


class DefaultsSpec(_Strict):
    group: str = Field(strict=True)  # "" is the core group
    versions: list[Annotated[str, Field(strict=True, min_length=1)]] = Field(min_length=1)
    kinds: list[Name] = Field(min_length=1)
    set_: dict[str, Any] = Field(alias="set")
    match: MatchSpec | None = None  # None: every request of the kinds above

    @field_validator("group")
    @classmethod
    def _no_wildcard_group(cls, value: str) -> str:
        return _one_name(value) if value else value


PolicyName = Annotated[str, Field(strict=True), AfterValidator(valid_name)]


class ScopeImagesSpec(_Strict):
    """What a scope may change of the baseline's image rules; a key left out keeps the baseline's."""

    mode: ModeText | None = None
    allow: list[PatternText] | None = None
    requireDigest: bool | None = Field(default=None, strict=True)
    inheritAllow: bool = Field(default=True, strict=True)

    @model_validator(mode="after")
    def _allow_required(self) -> ScopeImagesSpec:
        if not self.inheritAllow and self.allow is None:
            raise ValueError("'allow' is required with inheritAllow: false (an empty list denies every image)")
        return self


class ScopeSpec(_Strict):
    name: PolicyName
    match: MatchSpec
    images: ScopeImagesSpec = ScopeImagesSpec()


def _expiry(value: Any) -> Any:
    parse_rfc3339(value)  # its ValueError names the problem
    return value


class ExceptionSpec(_Strict):
    name: PolicyName
    reason: str = Field(strict=True, min_length=1)
    expires: Annotated[Any, AfterValidator(_expiry)]
    match: MatchSpec
    images: list[PatternText] = Field(min_length=1)

    @field_validator("reason")
    @classmethod
    def _said(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must say why the exception exists")
        return value


class PolicySpec(_Strict):
    images: ImagesSpec
    exemptNamespaces: list[str] = []
    # What a validating answer is when evaluation overruns its deadline.
    failureMode: Literal["deny", "allow"] = "deny"
    defaults: list[DefaultsSpec] = []
    scopes: list[ScopeSpec] = []
    exceptions: list[ExceptionSpec] = []
    exceptionWarningDays: int = Field(default=14, strict=True, ge=0)


@dataclass(frozen=True, slots=True)
class Policy:
    """The compiled policy: everything a request needs is built once, here."""

    mode: Mode
    exempt_namespaces: frozenset[str]
    failure_mode: Literal["deny", "allow"]
    source: str
    sha256: str  # of the file as written
    # Of what the file means (its schema, defaults filled in): comments, order of keys and
    # quoting do not change it, so two files that mean the same policy compare equal.
    meaning: str
    defaults: Defaults
    rewriter: Rewriter
    images: ImageJudge  # allowlist and requireDigest applied to one image string, remembered
    # Every registry host the policy names, in images.allow and in rewrite prefixes: a bounded
    # set the author chose, unlike the hosts of the images that requests carry.
    registries: frozenset[str]
    baseline: Rules
    scopes: Scopes
    exceptions: Exceptions
    scoped: bool  # any scopes: a plain flag, as the request path reads it on every review
    excepting: bool  # any exceptions
    # What a decision is made against: the wall clock (``check --at`` fixes it) and namespace labels.
    clock: Callable[[], float] = time.time
    namespace_labels: NamespaceLabels = no_namespace_labels

    @property
    def needs_namespace_labels(self) -> bool:
        """True when a scope, an exception or a defaults rule selects by namespaceSelector."""
        return self.namespace_selector_key is not None

    @property
    def namespace_selector_key(self) -> str | None:
        """Where the policy first selects by namespace labels, for a command that has none to give."""
        places = [(f"scopes[{i}]", scope.match) for i, scope in enumerate(self.scopes.scopes)]
        places += [(f"exceptions[{i}]", exception.match) for i, exception in enumerate(self.exceptions.items)]
        places += [(f"defaults[{rule.index}]", rule.match) for rule in self.defaults.rules if rule.match is not None]
        return next((f"{key}.match.namespaceSelector" for key, match in places if match.namespace_selector), None)

    def refuse_namespace_selector(self, problem: str) -> None:
        """Refuse, naming the key, a policy that selects by namespace labels where none can be had."""
        key = self.namespace_selector_key
        if key is not None:
            raise PolicyError(self.source, key, problem)

    def seen_from(self, *, clock: Callable[[], float] | None = None,
                  namespace_labels: NamespaceLabels | None = None) -> Policy:
        """The same compiled policy, deciding at another moment or with namespace labels known."""
        return replace(self, clock=clock or self.clock, namespace_labels=namespace_labels or self.namespace_labels)

    def rules_for(self, subject: Subject) -> Rules:
        """The image rules of the first scope that selects the request, else the baseline's."""
        if not self.scoped:
            return self.baseline
        scope = self.scopes.select(subject, self.namespace_labels)
        return self.baseline if scope is None else scope.rules

    @property
    def allowlist(self) -> Allowlist:
        return self.images.allowlist

    @property
    def require_digest(self) -> bool:
        return self.images.require_digest

    @classmethod
    def compile(cls, spec: PolicySpec, source: str, raw: bytes) -> Policy:
        patterns: list[Pattern] = [parse_pattern(text) for text in spec.images.allow or []]
        rewriter = _compile_rewrite(spec.images.rewrite, source)
        judge = ImageJudge(Allowlist(patterns), spec.images.requireDigest)
        baseline = Rules(None, spec.images.mode, judge)
        scopes = _compile_scopes(spec, patterns, source)
        exceptions = _compile_exceptions(spec, source)
        policy = cls(
            mode=spec.images.mode,
            exempt_namespaces=frozenset(spec.exemptNamespaces),
            failure_mode=spec.failureMode,
            source=source,
            sha256=hashlib.sha256(raw).hexdigest(),
            meaning=hashlib.sha256(spec.model_dump_json().encode()).hexdigest(),
            defaults=_compile_defaults(spec.defaults, source),
            rewriter=rewriter,
            images=judge,
            registries=frozenset(
                [p.registry for p in patterns]
                + [p.registry for scope in scopes.scopes for p in scope.rules.allowlist.patterns]
                + [prefix.registry for rule in rewriter.rules for prefix in (rule.source, rule.target)]
            ),
            baseline=baseline,
            scopes=scopes,
            exceptions=exceptions,
            scoped=bool(scopes.scopes),
            excepting=bool(exceptions.items),
        )
        for rules in (baseline, *(scope.rules for scope in scopes.scopes)):
            if rules.mode != "off":
                _refuse_results_breaking_rules(policy, rules)
        return policy

    def image_problem(self, image: str, rules: Rules | None = None) -> str | None:
        """Why the validating webhook would refuse ``image`` once mutation is done, if it would."""
        try:
            ref = parse_reference(image)
        except InvalidReference as exc:
            return exc.problem
        ref = self.rewriter.rewrite(ref) or ref
        rules = rules or self.baseline
        fault = rules.images.judge_ref(ref)
        if fault is None:
            return None
        if fault.registry_denied:
            return f"{ref} is not allowed by images.allow{_in(rules)} ({rules.allowlist})"
        return f"has no digest, and images.requireDigest is true{_in(rules)}"


def _in(rules: Rules) -> str:
    return f' in scope "{rules.scope}"' if rules.scope else ""


def _refuse_a_name_twice(source: str, key: str, what: str, names: list[str]) -> None:
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            raise PolicyError(source, f"{key}[{index}].name", f"{what} {name!r} is named twice")
        seen.add(name)


def _compile_scopes(spec: PolicySpec, baseline: list[Pattern], source: str) -> Scopes:
    _refuse_a_name_twice(source, "scopes", "scope", [scope.name for scope in spec.scopes])
    scopes: list[Scope] = []
    for scope in spec.scopes:
        images = scope.images
        own = [parse_pattern(text) for text in images.allow or []]
        patterns = own + baseline if images.inheritAllow else own
        require = spec.images.requireDigest if images.requireDigest is None else images.requireDigest
        rules = Rules(scope.name, images.mode or spec.images.mode, ImageJudge(Allowlist(patterns), require))
        scopes.append(Scope(Match.compile(scope.match), rules))
    return Scopes(tuple(scopes))


def _compile_exceptions(spec: PolicySpec, source: str) -> Exceptions:
    _refuse_a_name_twice(source, "exceptions", "exception", [exception.name for exception in spec.exceptions])
    items: list[ExceptionRule] = []
    for exception in spec.exceptions:
        items.append(ExceptionRule(exception.name, exception.reason, parse_rfc3339(exception.expires),
                                Match.compile(exception.match),
                                Allowlist([parse_pattern(text) for text in exception.images])))
    return Exceptions(tuple(items), spec.exceptionWarningDays)


def _compile_rewrite(specs: list[RewriteSpec], source: str) -> Rewriter:
    rules = [RewriteRule(parse_prefix(spec.from_), parse_prefix(spec.to), i) for i, spec in enumerate(specs)]
    try:
        check_rules(rules)
    except RewriteError as exc:
        raise PolicyError(source, f"images.rewrite[{exc.index}].{exc.key}", exc.problem) from None
    return Rewriter(rules)


def _compile_defaults(specs: list[DefaultsSpec], source: str) -> Defaults:
    rules: list[DefaultsRule] = []
    for index, spec in enumerate(specs):
        try:
            tree = compile_tree(spec.set_, index)
        except DefaultsError as exc:
            raise PolicyError(source, _set_key(index, exc.path), exc.problem) from None
        match = None if spec.match is None else Match.compile(spec.match)
        if match is not None and match.kinds is not None and not match.kinds & set(spec.kinds):
            raise PolicyError(source, f"defaults[{index}].match.kinds", f"names none of the rule's kinds "
                              f"({', '.join(spec.kinds)}), so the rule would never apply")
        rules.append(DefaultsRule(spec.group, frozenset(spec.versions), frozenset(spec.kinds), tree, index, match))
    try:
        return Defaults(rules)
    except ConflictError as exc:
        raise PolicyError(source, _set_key(exc.rule, exc.path), exc.problem) from None
    except SelectorError as exc:
        raise PolicyError(source, f"defaults[{exc.rule}].match.objectSelector", exc.problem) from None


def _refuse_results_breaking_rules(policy: Policy, rules: Rules) -> None:
    """A policy must admit what its own mutation produces, or every such object is denied: under
    the baseline, and under every scope, with the allow patterns in force there."""
    rewrites = policy.rewriter.rules
    fresh = fresh_component([c for p in rules.allowlist.patterns for c in p.path]
                            + [c for rule in rewrites for c in rule.source.path])
    for rewrite in rewrites:
        if rewrite.identity:  # it rewrites nothing: what it keeps is judged as it is
            continue
        key = f"images.rewrite[{rewrite.index}].to"
        try:
            deciding = list(deciding_images(rewrite, fresh))
        except InvalidReference as exc:
            raise PolicyError(policy.source, key, f"rewritten images would not be valid references: {exc}") from None
        for original, result in deciding:
            if not rules.allowlist.allows(result):
                raise PolicyError(
                    policy.source, key,
                    f"rewritten images such as {str(result)!r} (from {str(original)!r}) would not be allowed "
                    f"by images.allow{_in(rules)} ({rules.allowlist})",
                )
    # Whatever rules a request selects, their merged tree gives each image site a value from one
    # of them, so checking every rule covers every merge. A rule with match is checked against
    # every rule set too: validation picks its scope from the mutated object, whose labels the
    # defaults may have changed, so which scopes a matched rule can meet is not known at load.
    for rule in policy.defaults.rules:
        key = f"defaults[{rule.index}].set"
        for kind in sorted(rule.kinds):
            spec_path = pod_spec_path(rule.group, kind)
            if spec_path is None:
                continue
            try:
                produced = list(image_probes(rule.tree, spec_path))
            except MalformedObject as exc:
                raise PolicyError(policy.source, key, f"would make a {kind} unreadable: {exc}") from None
            for field, image in produced:
                problem = policy.image_problem(image, rules)
                if problem is not None:
                    raise PolicyError(
                        policy.source, key,
                        f"would give a {kind} the image {image!r} at {field}, which its image rules refuse: {problem}",
                    )


def _set_key(index: int, path: tuple[str, ...]) -> str:
    rendered = render_path(path)
    return f"defaults[{index}].set" + (rendered if rendered.startswith("[") or not rendered else f".{rendered}")


def parse_policy(raw: bytes, source: str) -> Policy:
    """The policy in ``raw``, read as kubectl would read it (see ``kubeyaml``), checked and compiled."""
    try:
        text = kubeyaml.decode(raw)
    except UnicodeDecodeError as exc:
        raise PolicyError(source, "", kubeyaml.undecodable(exc)) from None
    try:
        data = kubeyaml.load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(source, "", f"not valid YAML: {kubeyaml.describe(exc)}{_star_note(exc, text)}") from None
    if not isinstance(data, dict):
        raise PolicyError(source, "", "the top level must be a mapping with an 'images' key")
    try:
        spec = PolicySpec.model_validate(data)
    except ValidationError as exc:
        first = _first(exc)
        raise PolicyError(source, _key(first["loc"]), _problem(first)) from None
    return Policy.compile(spec, source, raw)


def _star_note(exc: yaml.YAMLError, text: str) -> str:
    """For an unquoted ``- *`` in ``images.allow``: quoting it would not help either."""
    if not kubeyaml.bare_alias(exc) or not isinstance(exc, yaml.MarkedYAMLError) or exc.context_mark is None:
        return ""
    at = exc.context_mark.index
    try:
        PolicySpec.model_validate(kubeyaml.load(text[:at] + '"*"' + text[at + 1:]))
    except ValidationError as invalid:
        for error in invalid.errors():
            if error["input"] == "*" and tuple(error["loc"][:2]) == ("images", "allow"):
                return f"; but a '*' alone is not a valid pattern either ({_key(error['loc'])}: {_problem(error)})"
    except yaml.YAMLError:
        pass
    return ""


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


def _first(exc: ValidationError) -> Any:
    """The error to report: an unknown key before the rest, as a misspelt key also leaves one missing."""
    errors = exc.errors()
    return next((error for error in errors if error["type"] == "extra_forbidden"), errors[0])


def _problem(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        known = _known_keys(error["loc"][:-1])
        close = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
        if close:
            return f"unknown key (did you mean {close[0]!r}?)"
        return "unknown key" + (f" (the keys here are {', '.join(known)})" if known else "")
    if error["type"] == "missing":
        return "is required"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "literal_error":
        return f"{message}, got {error['input']!r}"
    return message


def _known_keys(loc: tuple[int | str, ...]) -> list[str]:
    """The keys the schema takes at ``loc``, as the policy file spells them."""
    model: type[BaseModel] | None = PolicySpec
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = next((f for name, f in model.model_fields.items() if (f.alias or name) == part), None)
        model = _model_in(field.annotation) if field is not None else None
    return [] if model is None else [field.alias or name for name, field in model.model_fields.items()]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((found for arg in get_args(annotation) if (found := _model_in(arg)) is not None), None)

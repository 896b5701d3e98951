"""The validating webhook: every container image must come from an allowed registry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from webhook.admission.deadline import Deadline
from webhook.admission.review import UNPARSED_REGISTRY, Request, Response, allowed, denied, invalid, warned
from webhook.policy.model import Policy
from webhook.policy.podspecs import (
    ImageSite,
    MalformedObject,
    find_pod_spec,
    images_in,
    iter_image_sites,
    plain_images,
    pod_spec_path,
)
from webhook.policy.scopes import Rules
from webhook.policy.verdicts import ImageFault
from webhook.untrusted import quote

# A denial, or the warnings of warn mode, name every offending image up to this many; the rest
# are counted. The API server keeps only so much of either, and a list as long as a 100k
# container Pod cost seconds to build and megabytes to send.
MAX_LISTED_VIOLATIONS = 20
WARN_PREFIX = "policy would deny (warn mode): "
# The deadline is checked before every this many images: an uncached image takes about 1 µs to
# judge, and a cached one less than reading the clock does.
DEADLINE_EVERY = 8


@dataclass(frozen=True, slots=True)
class Violation:
    site: ImageSite
    fault: ImageFault
    note: str = ""  # the exceptions that named this image and have expired

    @property
    def registry(self) -> str:
        """For the violations metric: the registry, or UNPARSED_REGISTRY for a reference that does not parse."""
        return self.fault.ref.registry if self.fault.ref is not None else UNPARSED_REGISTRY

    def __str__(self) -> str:
        where = f"{site_label(self.site)}: image {quote(self.site.image)}"
        normalised = f" ({self.fault.ref})" if self.fault.ref is not None else ""
        note = f" {self.note}" if self.note else ""
        return f"{where}{normalised} {self.fault.problem}{note}"


def site_label(site: ImageSite) -> str:
    """How a message names an image site: ``spec.containers[1] "web"``, or
    ``spec.volumes[2].image.reference volume "tools"`` (a volume says it is one)."""
    if site.is_volume:
        return f"{site.field} volume {quote(site.name, 63)}"
    return f"{site.field} {quote(site.name, 63)}"


def validate(request: Request, policy: Policy, deadline: Deadline) -> Response:
    """Judge the images of a Pod or pod template; anything else is not ours to judge."""
    if request.operation not in ("CREATE", "UPDATE"):
        return allowed()
    if request.namespace in policy.exempt_namespaces:
        return allowed()
    spec_path = pod_spec_path(request.group, request.kind)
    if spec_path is None:
        return allowed()  # not ours to judge, so no scope decides it either
    rules = policy.rules_for(request) if policy.scoped else policy.baseline
    if rules.mode == "off":
        return _allowed(rules)
    try:
        spec = pod_spec(request, spec_path)
        if spec is None:
            return _allowed(rules)
        # Mostly the images are ones the policy allowed before (every replica, every rollout), and
        # looking them up costs less than building a site per container; anything else is judged.
        images = plain_images(spec)
        if images is not None and rules.images.known_allowed(images):
            return _allowed(rules)
        sites = judged_sites(request, spec, spec_path)
    except MalformedObject as exc:
        return invalid(f"cannot judge the images of {request.display_name}: {exc}")
    violations: list[Violation] = []
    fault_of = rules.images.fault
    for position, site in enumerate(sites):
        if not position % DEADLINE_EVERY:
            deadline.check()
        fault = fault_of(site.image)
        if fault is not None:
            violations.append(Violation(site, fault))
    if not violations:
        return _allowed(rules)
    if policy.excepting:
        return _with_exceptions(request, policy, rules, violations)
    return _judged(rules, violations)


def _allowed(rules: Rules) -> Response:
    return allowed() if rules.scope is None else Response(True, scope=rules.scope)


def _judged(rules: Rules, violations: list[Violation], excepted: Sequence[str] = ()) -> Response:
    """Deny, or warn in warn mode, naming each violation; ``excepted`` are the exceptions' warnings."""
    registries = [v.registry for v in violations]
    if rules.mode == "warn":
        answer = warned([*excepted, *warning_lines(violations, rules)], registries)
    else:
        answer = denied(denial_message(violations, rules), *excepted, registries=registries)
    return answer if rules.scope is None else replace(answer, scope=rules.scope)


def _with_exceptions(request: Request, policy: Policy, rules: Rules, violations: list[Violation]) -> Response:
    """Let through what a live exception covers, saying so; an image that does not parse never is.

    The clock is read here, once, and only for a request that the rules would deny or warn about.
    """
    now = policy.clock()
    exceptions = policy.exceptions
    kept: list[Violation] = []
    excepted: list[str] = []
    used: dict[str, None] = {}
    for violation in violations:
        ref = violation.fault.ref
        if ref is None:
            kept.append(violation)
            continue
        waiver, lapsed = exceptions.waiver(request, ref, now, policy.namespace_labels)
        if waiver is None:
            kept.append(replace(violation, note=" ".join(e.expired_note for e in lapsed)) if lapsed else violation)
            continue
        used[waiver.name] = None
        if len(excepted) < MAX_LISTED_VIOLATIONS:
            site = violation.site
            excepted.append(f"{site_label(site)}: image {quote(site.image)} "
                            f"{waiver.admission_note(now, exceptions.warning_days)}")
    waived = len(violations) - len(kept)
    if waived > len(excepted):
        excepted.append(f"and {waived - len(excepted)} more images admitted by exceptions")
    answer = _judged(rules, kept, excepted) if kept else Response(True, warnings=tuple(excepted), scope=rules.scope)
    return replace(answer, exceptions=tuple(used)) if used else answer


def pod_spec(request: Request, spec_path: tuple[str, ...]) -> Mapping[str, Any] | None:
    if request.object is None:
        raise MalformedObject("object", f"is missing on {request.operation}")
    return find_pod_spec(request.object, spec_path)


def judged_sites(request: Request, spec: Mapping[str, Any], spec_path: tuple[str, ...]) -> list[ImageSite]:
    """Image sites of the object that need judging: on UPDATE, only new or changed images."""
    sites = list(iter_image_sites(spec, ".".join(spec_path)))
    if request.operation == "UPDATE" and request.old_object is not None:
        already_running = images_in(request.old_object, spec_path)
        sites = [site for site in sites if site.image not in already_running]
    return sites


def named(violations: list[Violation]) -> list[str]:
    """The first violations, each as a sentence, then how many more there are: one place for
    the cap, so a denial and the warnings of warn mode name the same images."""
    lines = [str(v) for v in violations[:MAX_LISTED_VIOLATIONS]]
    if len(violations) > MAX_LISTED_VIOLATIONS:
        lines.append(f"and {len(violations) - MAX_LISTED_VIOLATIONS} more")
    return lines


def warning_lines(violations: list[Violation], rules: Rules) -> list[str]:
    prefix = WARN_PREFIX if rules.scope is None else f'policy would deny (warn mode) in scope "{rules.scope}": '
    return [prefix + line for line in named(violations)]


def denial_message(violations: list[Violation], rules: Rules) -> str:
    """Today's message under the baseline, byte for byte; a scope's is headed by its name."""
    message = "; ".join(named(violations))
    if any(v.fault.registry_denied for v in violations):
        message += f"; allowed: {rules.allowlist}"
    return message if rules.scope is None else f'in scope "{rules.scope}": {message}'

"""The validating webhook: every container image must come from an allowed registry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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

    @property
    def registry(self) -> str:
        """For the violations metric: the registry, or UNPARSED_REGISTRY for a reference that does not parse."""
        return self.fault.ref.registry if self.fault.ref is not None else UNPARSED_REGISTRY

    def __str__(self) -> str:
        where = f"{site_label(self.site)}: image {quote(self.site.image)}"
        normalised = f" ({self.fault.ref})" if self.fault.ref is not None else ""
        return f"{where}{normalised} {self.fault.problem}"


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
    if policy.mode == "off" or request.namespace in policy.exempt_namespaces:
        return allowed()
    spec_path = pod_spec_path(request.group, request.kind)
    if spec_path is None:
        return allowed()
    try:
        spec = pod_spec(request, spec_path)
        if spec is None:
            return allowed()
        # Mostly the images are ones the policy allowed before (every replica, every rollout), and
        # looking them up costs less than building a site per container; anything else is judged.
        images = plain_images(spec)
        if images is not None and policy.images.known_allowed(images):
            return allowed()
        sites = judged_sites(request, spec, spec_path)
    except MalformedObject as exc:
        return invalid(f"cannot judge the images of {request.display_name}: {exc}")
    violations: list[Violation] = []
    fault_of = policy.images.fault
    for position, site in enumerate(sites):
        if not position % DEADLINE_EVERY:
            deadline.check()
        fault = fault_of(site.image)
        if fault is not None:
            violations.append(Violation(site, fault))
    if not violations:
        return allowed()
    registries = [v.registry for v in violations]
    if policy.mode == "warn":
        return warned(warning_lines(violations), registries)
    return denied(denial_message(violations, policy), registries=registries)


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


def warning_lines(violations: list[Violation]) -> list[str]:
    return [WARN_PREFIX + line for line in named(violations)]


def denial_message(violations: list[Violation], policy: Policy) -> str:
    message = "; ".join(named(violations))
    if any(v.fault.registry_denied for v in violations):
        message += f"; allowed: {policy.allowlist}"
    return message

"""The mutating webhook: set-if-absent defaults, then registry rewriting, as one JSONPatch.

It never denies: enforcement belongs to the validating webhook, which the API server calls
after every mutation, on the final object. The patch is the difference between the object
as it arrived and a mutated copy of it, so fields we do not model survive untouched.
"""

from __future__ import annotations

from typing import Any

import orjson

from webhook.admission.deadline import Deadline
from webhook.admission.patch import diff
from webhook.admission.review import Request, Response, allowed, patched, skipped
from webhook.admission.validate import site_label
from webhook.policy.defaults import Defaulted, TooManyChanges
from webhook.policy.defaults import apply as apply_defaults
from webhook.policy.model import Policy
from webhook.policy.podspecs import IMAGE_LISTS, images_in, pod_spec_path
from webhook.policy.rewrite import Rewritten, rewrite_images
from webhook.untrusted import quote

# Subresource -> lists (of containers, or volumes) whose images are rewritten. Other subresources
# carry no image the user can change (``status``) or no pod spec at all (``scale``, ``exec``).
REWRITTEN_LISTS: dict[str | None, frozenset[str]] = {
    None: frozenset(IMAGE_LISTS),
    "ephemeralcontainers": frozenset({"ephemeralContainers"}),  # kubectl debug
}
# Warnings share a 4096-rune budget per request with every other webhook; stay well inside it.
MAX_LISTED_CHANGES = 20
# A real object needs a handful of changes. Tens of thousands (a Pod of 50,000 containers under a
# ``containers[*]`` default) would make a patch of tens of MB, which a worker cannot afford to
# build and the API server would have to apply; the object is then left as it is, and judged so.
MAX_PATCH_OPERATIONS = 10_000
TOO_MANY_CHANGES = f"mutation skipped: it would make more than {MAX_PATCH_OPERATIONS} changes"


def mutate(request: Request, policy: Policy, deadline: Deadline) -> Response:
    """Allow, with a patch saying what was defaulted or rewritten when anything was."""
    if request.operation not in ("CREATE", "UPDATE") or request.namespace in policy.exempt_namespaces:
        return allowed()
    original = request.object
    if not isinstance(original, dict):
        return allowed()
    tree = None if request.sub_resource else policy.defaults.for_request(
        request.group, request.version, request.kind, request, policy.namespace_labels)
    lists = REWRITTEN_LISTS.get(request.sub_resource)
    spec_path = pod_spec_path(request.group, request.kind) if policy.rewriter and lists else None
    if tree is None and spec_path is None:
        return allowed()

    mutated = _copy(original)
    deadline.check()
    tick = deadline.ticker()  # every loop below is as long as the object makes it
    changes: list[Defaulted | Rewritten] = []
    if tree is not None:
        try:
            changes += apply_defaults(tree, mutated, tick=tick, limit=MAX_PATCH_OPERATIONS)
        except TooManyChanges:
            return skipped(TOO_MANY_CHANGES)
    if spec_path is not None and lists is not None:
        # On UPDATE an image that already runs is left alone, exactly as validation skips it.
        keep = images_in(request.old_object, spec_path) if request.operation == "UPDATE" else set()
        changes += rewrite_images(policy.rewriter, mutated, spec_path, lists, keep, tick=tick)
    if len(changes) > MAX_PATCH_OPERATIONS:
        return skipped(TOO_MANY_CHANGES)
    deadline.check()
    operations = diff(original, mutated, tick=tick)
    if not operations:
        return allowed(*_bounded(changes))  # only a rewrite that could not be done says anything here
    return patched(operations, *_bounded(changes))


def _copy(obj: dict[str, Any]) -> Any:
    """A deep copy; orjson's round trip is several times faster than copy.deepcopy."""
    return orjson.loads(orjson.dumps(obj))


def _rewritten(done: Rewritten) -> str:
    where = f"{site_label(done.site)} image {quote(done.site.image)}"
    if done.problem is not None:
        return f"not rewritten: {where} would become {quote(done.new)}, which is invalid: {done.problem}"
    return f"rewrote {where} to {done.new}"


def _bounded(changes: list[Defaulted | Rewritten]) -> list[str]:
    """The first changes in words, then how many more: only what is listed is worded."""
    words = [_rewritten(done) if isinstance(done, Rewritten) else str(done) for done in changes[:MAX_LISTED_CHANGES]]
    if len(changes) > MAX_LISTED_CHANGES:
        words.append(f"and {len(changes) - MAX_LISTED_CHANGES} more changes")
    return words

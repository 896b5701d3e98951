"""What a policy says of one image string, worked out once per string and policy.

The API server sends the same image strings again and again: every replica a ReplicaSet
creates, every rollout, every update of an unrelated field. Parsing a reference and
looking it up costs more than everything else a review of a large Pod does, so each
compiled policy keeps its verdicts in a map bounded by count and by the size of its keys. A
policy reload compiles a new policy and so starts an empty map. A flood of distinct images
only empties the map now and then; it costs the uncached time, never memory.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from webhook.policy.patterns import Allowlist
from webhook.policy.references import REFERENCE_LENGTH_MAX, ImageRef, InvalidReference, parse_reference

DEFAULT_CAPACITY = 4096
# The keys are image strings as they arrived, and one may be megabytes long: 240 reviews of a
# unique 2 MB image once kept 464 MB. A string over REFERENCE_LENGTH_MAX is refused by its
# length alone and never kept, and the keys kept total at most this many bytes. A verdict
# holds at most about its key's size again (a reason quoting part of it, or a parsed name).
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
NOT_ALLOWED = "is not from an allowed registry"
NO_DIGEST = "has no digest; this policy requires images pinned by digest (@sha256:...)"
_UNKNOWN = object()


@dataclass(frozen=True, slots=True)
class ImageFault:
    """Why an image is refused; ``ref`` is None when the string does not parse."""

    problem: str
    ref: ImageRef | None = None
    registry_denied: bool = False


class ImageJudge:
    def __init__(
        self, allowlist: Allowlist, require_digest: bool, capacity: int = DEFAULT_CAPACITY,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.allowlist = allowlist
        self.require_digest = require_digest
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._seen: dict[str, ImageFault | None] = {}
        self._bytes = 0  # sys.getsizeof of the keys in _seen

    @property
    def cached_bytes(self) -> int:
        return self._bytes

    def fault(self, image: str) -> ImageFault | None:
        """None when the image may run; else why not."""
        try:
            return self._seen[image]
        except KeyError:
            pass
        fault = self._judge(image)
        if len(image) > REFERENCE_LENGTH_MAX:
            return fault
        size = sys.getsizeof(image)
        if len(self._seen) >= self.capacity or self._bytes + size > self.max_bytes:
            self._seen.clear()
            self._bytes = 0
        self._seen[image] = fault
        self._bytes += size
        return fault

    def known_allowed(self, images: list[str]) -> bool:
        """True when every image was judged before and may run; judges nothing new."""
        seen = self._seen
        return all(seen.get(image, _UNKNOWN) is None for image in images)

    def _judge(self, image: str) -> ImageFault | None:
        try:
            ref = parse_reference(image)
        except InvalidReference as exc:
            return ImageFault(exc.problem)
        return self.judge_ref(ref)

    def judge_ref(self, ref: ImageRef) -> ImageFault | None:
        """The allowlist and digest rules for a reference already parsed (and perhaps rewritten)."""
        if not self.allowlist.allows(ref):
            return ImageFault(NOT_ALLOWED, ref, registry_denied=True)
        if self.require_digest and ref.digest is None:
            return ImageFault(NO_DIGEST, ref)
        return None

"""A webhook: a decision function plus what to answer when that function fails."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from webhook.admission.deadline import Deadline, DeadlineExceeded
from webhook.admission.mutate import mutate
from webhook.admission.review import Request, Response, errored, skipped, timed_out
from webhook.admission.validate import validate
from webhook.policy.model import Policy
from webhook.policy.scopes import LabelsUnavailable

log = logging.getLogger("webhook.admission")

Decide = Callable[[Request, Policy, Deadline], Response]
MUTATION_SKIPPED = "mutation skipped: internal error"
INTERNAL_ERROR = "internal error evaluating policy"
MUTATION_SKIPPED_DEADLINE = "mutation skipped: deadline exceeded"
NOT_JUDGED_DEADLINE = "not judged: policy evaluation exceeded its deadline"


@dataclass(frozen=True, slots=True)
class Webhook:
    name: str
    decide: Decide
    mutating: bool

    def review(self, request: Request, policy: Policy, deadline: Deadline) -> Response:
        """Always an in-band answer: a validating hook fails closed, a mutating one skips.

        The log names the uid and where it broke, but not the exception text, which may
        quote the object.
        """
        try:
            deadline.check()  # reading and decoding a large body may have used it up already
            return self.decide(request, policy, deadline)
        except DeadlineExceeded:
            if self.mutating:
                return skipped(MUTATION_SKIPPED_DEADLINE)
            if policy.failure_mode == "allow":
                return skipped(f"{NOT_JUDGED_DEADLINE}; allowed by failureMode: allow")
            return timed_out(f"{NOT_JUDGED_DEADLINE}; denied by failureMode: deny")
        except LabelsUnavailable as exc:  # whatever failureMode says: guessed labels never decide
            log.warning("%s webhook: uid=%s: %s", self.name, request.uid, exc)
            return skipped(f"mutation skipped: {exc}") if self.mutating else errored(f"not judged: {exc}")
        except Exception as exc:  # noqa: BLE001 - any bug in a rule must still get an answer
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            log.error(
                "internal error in %s webhook: uid=%s %s at %s:%s",
                self.name, request.uid, type(exc).__name__, frame.filename, frame.lineno,
            )
            return skipped(MUTATION_SKIPPED) if self.mutating else errored(INTERNAL_ERROR)


# The two webhooks, defined once: the server serves them, and `check` and `audit` call them.
VALIDATING = Webhook("validate", validate, mutating=False)
MUTATING = Webhook("mutate", mutate, mutating=True)

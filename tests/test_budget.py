"""The two ledgers a worker keeps for its clients, and the count that guards decoding."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webhook.admission.review import ReviewTooLarge, decode_review, json_values_bound
from webhook.server.budget import ANSWERING, IDLE, READING, BufferBudget, ConnectionSlots


class Client:
    """A stand-in for a connection: what the ledgers ask of one, and what they did to it."""

    def __init__(self, name: str, stage: int = IDLE) -> None:
        self.name = name
        self.current = stage
        self.evicted: str | None = None

    def evict(self, why: str) -> None:
        self.evicted = why

    def stage(self) -> int:
        return self.current


def test_the_holder_of_the_most_bytes_is_let_go_when_the_budget_is_exceeded() -> None:
    budget = BufferBudget(100)
    small, big, newcomer = Client("small"), Client("big"), Client("newcomer")
    budget.hold(small, 10)
    budget.hold(big, 80)
    budget.hold(newcomer, 20)  # 110 > 100: big goes, not the newcomer
    assert big.evicted is not None and "--max-buffered-bytes" in big.evicted
    assert small.evicted is None and newcomer.evicted is None
    assert budget.total == 30
    budget.hold(newcomer, 0)
    assert budget.total == 10 and budget.held_by(newcomer) == 0
    budget.release(small)
    assert budget.total == 0


def test_a_holder_that_alone_exceeds_the_budget_is_let_go_itself() -> None:
    budget = BufferBudget(100)
    greedy = Client("greedy")
    budget.hold(greedy, 50)
    budget.hold(greedy, 150)
    assert greedy.evicted is not None
    assert budget.total == 0


@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 200)), max_size=60))
def test_the_budget_never_ends_above_its_limit_and_adds_up(moves: list[tuple[int, int]]) -> None:
    budget = BufferBudget(300)
    clients = [Client(str(i)) for i in range(10)]
    for index, size in moves:
        budget.hold(clients[index], size)
        assert budget.total <= 300
        assert budget.total == sum(budget.held_by(c) for c in clients)


def test_a_newcomer_displaces_the_longest_idle_then_the_longest_reading_and_never_one_answering() -> None:
    slots = ConnectionSlots(3)
    first, second, third = Client("1", READING), Client("2", IDLE), Client("3", ANSWERING)
    assert all(slots.admit(c) for c in (first, second, third))
    fourth = Client("4", READING)
    assert slots.admit(fourth)
    assert second.evicted is not None and "--max-connections" in second.evicted
    fifth = Client("5")
    assert slots.admit(fifth)
    assert first.evicted is not None  # the longest reading, when none is idle
    third.current = fourth.current = fifth.current = ANSWERING
    assert not slots.admit(Client("6"))  # every slot busy answering: the newcomer is refused
    assert len(slots) == 3


def test_a_connection_just_answered_is_the_last_idle_one_displaced() -> None:
    slots = ConnectionSlots(2)
    old, recent = Client("old"), Client("recent")
    slots.admit(old)
    slots.admit(recent)
    slots.touch(old)  # answered a review just now
    slots.admit(Client("new"))
    assert recent.evicted is not None and old.evicted is None
    slots.leave(old)
    assert len(slots) == 1


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=3), inner, max_size=5),
    max_leaves=40,
)


def values(node: Any) -> int:
    if isinstance(node, list):
        return 1 + sum(values(item) for item in node)
    if isinstance(node, dict):
        return 1 + sum(values(item) for item in node.values())
    return 1


@settings(max_examples=300)
@given(JSON)
def test_the_bound_is_never_below_the_values_a_body_holds(document: Any) -> None:
    assert json_values_bound(orjson.dumps(document)) >= values(document)


def test_a_body_with_too_many_values_is_refused_before_it_is_decoded() -> None:
    body = orjson.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                         "request": {"uid": "u", "kind": {"kind": "Pod"}, "operation": "CREATE",
                                     "object": {"x": [[]] * 1000}}})
    assert decode_review(body, max_values=10_000).uid == "u"
    with pytest.raises(ReviewTooLarge, match="more than 1000 JSON values"):
        decode_review(body, max_values=1000)

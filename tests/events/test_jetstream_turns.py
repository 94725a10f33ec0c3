"""Which consumers a JetStream subscription asks, and in what order."""

from __future__ import annotations

from flotilla.events.jetstream_turns import Candidates


def test_every_consumer_is_a_candidate_at_first() -> None:
    assert Candidates(4).order() == [0, 1, 2, 3]


def test_one_with_nothing_leaves_until_marked() -> None:
    candidates = Candidates(4)
    for index in (0, 2, 3):
        candidates.had_nothing(index)
    assert candidates.order() == [1]
    candidates.changed.clear()
    candidates.mark(3)
    assert candidates.changed.is_set()
    assert candidates.order() == [1, 3]


def test_after_a_message_the_others_are_asked_first_then_it_again() -> None:
    candidates = Candidates(4)
    candidates.gave(1)
    assert candidates.order() == [2, 3, 0, 1]
    for index in (2, 3, 0):
        candidates.had_nothing(index)
    assert candidates.order() == [1]  # the busy one: one ask per event


def test_a_quiet_poll_brings_every_consumer_back() -> None:
    candidates = Candidates(3)
    for index in range(3):
        candidates.had_nothing(index)
    assert candidates.order() == []
    candidates.mark_all()
    assert candidates.order() == [0, 1, 2]

"""The envelope's helpers: event ids, and the one rule for topics and keys."""

from __future__ import annotations

import pytest

from flotilla.errors import InvalidArgument
from flotilla.events.envelope import KEY_MAX, check_topic_and_key, new_event_id


def test_event_ids_are_unique_hex_led_by_the_time() -> None:
    ids = [new_event_id() for _ in range(100)]
    assert len(set(ids)) == 100
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert new_event_id()[:12] >= "0192" + "0" * 8  # milliseconds since 1970: after 2024


@pytest.mark.parametrize("topic", ["order.created", "a", "billing:v2.invoice-paid", "t" * 255])
def test_dotted_names_and_short_keys_pass(topic: str) -> None:
    check_topic_and_key(topic, None)
    check_topic_and_key(topic, "k" * KEY_MAX)


@pytest.mark.parametrize(
    ("topic", "key", "message"),
    [
        ("", None, "is not a dotted name"),
        (".hidden", None, "is not a dotted name"),
        ("order created", None, "is not a dotted name"),
        ("orders.*", None, "is not a dotted name"),  # a wildcard is no topic to emit to
        ("t" * 256, None, "is not a dotted name"),
        (7, None, "is not a dotted name"),
        ("t", 7, "must be a string"),
        ("t", "k" * (KEY_MAX + 1), f"at most {KEY_MAX}"),
    ],
)
def test_anything_else_is_invalid_saying_what(topic: object, key: object, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        check_topic_and_key(topic, key)

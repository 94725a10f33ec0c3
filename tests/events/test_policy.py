"""The delivery policy: backoff arithmetic and refused values."""

from __future__ import annotations

import msgspec
import pytest

from flotilla.errors import ConfigError
from flotilla.events.policy import DeliveryPolicy


def test_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    policy = DeliveryPolicy(backoff_base=0.5, backoff_max=3)
    assert [policy.backoff(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_late_delivery_waits_the_cap_without_overflow() -> None:
    # A consumer told to keep trying for a long time: the 1100th attempt still has a delay
    # (an OverflowError here left the delivery neither nak'd nor dead-lettered, for ever).
    policy = DeliveryPolicy(max_deliveries=5000, backoff_base=0.5, backoff_max=30)
    assert policy.backoff(1100) == 30.0
    assert policy.backoff(5000) == 30.0


def test_keepalive_renews_three_times_per_ack_wait() -> None:
    assert DeliveryPolicy(ack_wait=30).keepalive_interval == 10


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_deliveries": 0}, "max_deliveries must be at least 1"),
        ({"backoff_base": -1}, "backoff_base must not be negative"),
        ({"backoff_base": 2, "backoff_max": 1}, "backoff_max must be at least backoff_base"),
        ({"ack_wait": 0}, "ack_wait must be positive"),
        ({"max_concurrent": 0}, "max_concurrent must be at least 1"),
    ],
)
def test_bad_values_are_refused(changes: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DeliveryPolicy(**changes)  # type: ignore[arg-type]


def test_decoded_from_config() -> None:
    policy = msgspec.json.decode(b'{"max_deliveries": 2}', type=DeliveryPolicy)
    assert policy.max_deliveries == 2
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.json.decode(b'{"retries": 2}', type=DeliveryPolicy)

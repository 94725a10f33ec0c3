"""Exponential backoff with full jitter, capped."""

from __future__ import annotations

import pytest

from flotilla.resilience.backoff import backoff_ceiling, backoff_delay
from flotilla.resilience.policy import RetryPolicy

POLICY = RetryPolicy(backoff_base=0.025, backoff_max=1.0)


def test_the_ceiling_doubles_from_the_base_up_to_the_cap() -> None:
    ceilings = [backoff_ceiling(POLICY, retry) for retry in range(8)]
    assert ceilings == [0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_a_very_late_retry_waits_at_most_the_cap_without_overflow() -> None:
    assert backoff_ceiling(POLICY, 10_000) == 1.0


@pytest.mark.parametrize(("drawn", "expected"), [(0.0, 0.0), (0.5, 0.025), (0.25, 0.0125)])
def test_the_delay_is_the_drawn_fraction_of_the_ceiling(drawn: float, expected: float) -> None:
    assert backoff_delay(POLICY, 1, lambda: drawn) == expected


def test_the_delay_stays_below_the_ceiling() -> None:
    assert backoff_delay(POLICY, 0, lambda: 0.999999) < 0.025


def test_a_negative_retry_number_is_refused() -> None:
    with pytest.raises(ValueError, match="from 0"):
        backoff_ceiling(POLICY, -1)

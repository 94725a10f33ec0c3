"""Exponential backoff with full jitter, capped: how long a retry waits.

"Full jitter" (as AWS's architecture blog named it) draws the whole wait at
random rather than adding a little noise to a fixed one: callers that failed
together then come back spread over the interval instead of in one wave, which
is what keeps a recovering service from being knocked over again.
"""

from __future__ import annotations

from collections.abc import Callable

from flotilla.resilience.policy import RetryPolicy

__all__ = ["backoff_ceiling", "backoff_delay"]


def backoff_ceiling(policy: RetryPolicy, retry: int) -> float:
    """The most the ``retry``-th retry (0 for the first) may wait: ``min(max, base * 2**retry)``."""
    if retry < 0:
        raise ValueError(f"retry counts from 0, not {retry}")
    # Capped before the power can overflow: past ~60 doublings it is the cap anyway.
    if retry >= 64:
        return policy.backoff_max
    return min(policy.backoff_max, policy.backoff_base * 2.0**retry)


def backoff_delay(policy: RetryPolicy, retry: int, random: Callable[[], float]) -> float:
    """Seconds the ``retry``-th retry (0 for the first) waits: uniform in ``[0, ceiling)``.

    ``random`` returns a float in ``[0, 1)`` (``random.Random().random``); tests
    pass a scripted one.
    """
    return random() * backoff_ceiling(policy, retry)

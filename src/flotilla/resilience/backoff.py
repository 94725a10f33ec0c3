"""Exponential backoff with full jitter, capped: how long a retry waits.

"Full jitter" (as AWS's architecture blog named it) draws the whole wait at
random rather than adding a little noise to a fixed one: callers that failed
together then come back spread over the interval instead of in one wave, which
is what keeps a recovering service from being knocked over again.
"""

from __future__ import annotations

from collections.abc import Callable

from flotilla.resilience.policy import RetryPolicy

__all__ = ["backoff_ceiling", "backoff_delay", "capped_exponential"]


def capped_exponential(base: float, cap: float, doublings: int) -> float:
    """``min(cap, base * 2**doublings)`` for any count of ``doublings`` (0: ``base``).

    The one formula behind every backoff of Flotilla (retries, redeliveries,
    reconnects).  ``2.0 ** n`` raises past n = 1023, and ``base * 2 ** n`` with an
    int power past about the same: the power is bounded first (a product that
    overflows is ``inf``, which the cap then replaces).
    """
    return min(cap, base * 2.0 ** min(max(doublings, 0), 1000))


def backoff_ceiling(policy: RetryPolicy, retry: int) -> float:
    """The most the ``retry``-th retry (0 for the first) may wait: ``min(max, base * 2**retry)``."""
    if retry < 0:
        raise ValueError(f"retry counts from 0, not {retry}")
    return capped_exponential(policy.backoff_base, policy.backoff_max, retry)


def backoff_delay(policy: RetryPolicy, retry: int, random: Callable[[], float]) -> float:
    """Seconds the ``retry``-th retry (0 for the first) waits: uniform in ``[0, ceiling)``.

    ``random`` returns a float in ``[0, 1)`` (``random.Random().random``); tests
    pass a scripted one.
    """
    return random() * backoff_ceiling(policy, retry)

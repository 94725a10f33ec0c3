"""Adaptive concurrency limits: exact sequences under steady, rising and dropped calls."""

from __future__ import annotations

import random
from typing import Any, Literal

import pytest

from flotilla.resilience.limits import Gradient2Limit, VegasLimit, adaptive_limit

BASE = 0.010  # the unloaded round-trip time of these tests


class Lowest(random.Random):
    """Draws 0.0 every time: probes come at the earliest the jitter allows."""

    def random(self) -> float:
        return 0.0


def vegas(cap: int = 100, **options: int) -> VegasLimit:
    # Probes far apart unless a test asks: they would reset rtt_noload mid-sequence.
    options.setdefault("probe_every", 10**6)
    return VegasLimit(cap, **options)


def saturated(limit: VegasLimit | Gradient2Limit, rtt: float, times: int) -> list[int]:
    """The limits after each of ``times`` calls of ``rtt``, each with the limit's calls running."""
    return [limit.sample(rtt, limit.limit) for _ in range(times)]


# -- Vegas -----------------------------------------------------------------------------------


def test_vegas_starts_at_twenty_within_the_cap() -> None:
    assert vegas().limit == 20
    assert vegas(cap=8).limit == 8


def test_vegas_first_sample_only_learns_the_unloaded_time() -> None:
    limit = vegas()
    assert limit.sample(BASE, 20) == 20
    assert limit.rtt_noload == BASE


def test_vegas_steady_rtt_grows_the_limit_six_a_call_up_to_the_cap() -> None:
    limit = vegas()
    limit.sample(BASE, 20)
    # No queue (rtt == rtt_noload): +6 log10(limit) = +6 below 100.
    assert saturated(limit, BASE, 15) == [
        26,
        32,
        38,
        44,
        50,
        56,
        62,
        68,
        74,
        80,
        86,
        92,
        98,
        100,
        100,
    ]


def test_vegas_rtt_doubling_shrinks_the_limit_until_the_queue_is_tolerable() -> None:
    limit = vegas()
    limit.sample(BASE, 20)
    # queue = limit * (1 - 1/2): above 6 it shrinks by 1; at 12 the queue is 6, kept.
    assert saturated(limit, 2 * BASE, 10) == [19, 18, 17, 16, 15, 14, 13, 12, 12, 12]


def test_vegas_small_queue_grows_by_one() -> None:
    limit = vegas()
    limit.sample(BASE, 20)
    # queue = 20 * (1 - 10/11) = 1.8: above 1 and below 3, so +1.
    assert limit.sample(BASE * 1.1, 20) == 21


def test_vegas_does_not_grow_a_limit_that_few_calls_use() -> None:
    limit = vegas()
    limit.sample(BASE, 20)
    assert [limit.sample(BASE, 9) for _ in range(3)] == [20, 20, 20]
    assert limit.sample(BASE, 10) == 26  # half the limit running: it counts


def test_vegas_drop_backs_off_to_the_floor_of_one() -> None:
    limit = vegas(cap=100, initial=3)
    assert [limit.drop() for _ in range(4)] == [2, 1, 1, 1]


def test_vegas_backs_off_by_a_decade_above_a_hundred() -> None:
    limit = vegas(cap=500, initial=200)
    assert limit.drop() == 198  # log10(200) = 2 whole decades


def test_vegas_probe_relearns_a_risen_unloaded_time() -> None:
    limit = VegasLimit(100, probe_every=1, random=Lowest())  # first probe after 1*20*0.5 calls
    limit.sample(BASE, 20)
    assert saturated(limit, BASE, 8)[-1] == 68
    # The tenth call probes: its 3x time becomes the unloaded time...
    assert limit.sample(3 * BASE, 68) == 68
    assert limit.rtt_noload == 3 * BASE
    # ...so the same time next is no queue at all, where without the probe it would shrink.
    assert limit.sample(3 * BASE, 68) == 74


# -- Gradient2 -------------------------------------------------------------------------------


def test_gradient2_steady_rtt_grows_the_limit_by_the_smoothed_queue() -> None:
    limit = Gradient2Limit(100)
    grown = saturated(limit, BASE, 10)
    # Gradient 1: target = limit + 4, smoothed by 0.2: +0.8 a call.
    assert limit.estimate == pytest.approx(28.0)
    assert grown == [20, 21, 22, 23, 24, 24, 25, 26, 27, 28]


def test_gradient2_rtt_doubling_shrinks_the_limit() -> None:
    limit = Gradient2Limit(100)
    for _ in range(10):
        limit.sample(BASE, 0)  # warm the long average up, the limit unchanged (few calls)
    assert limit.long_rtt == pytest.approx(BASE)
    assert limit.limit == 20
    limit.sample(2 * BASE, 20)
    long_rtt = BASE + BASE * 2 / 601  # the new sample, weighed over a 600-call window
    gradient = 1.5 * long_rtt / (2 * BASE)
    assert limit.long_rtt == pytest.approx(long_rtt)
    assert limit.estimate == pytest.approx(20 * 0.8 + (20 * gradient + 4) * 0.2)
    assert limit.limit == 19
    shrunk = saturated(limit, 2 * BASE, 12)
    assert shrunk == [19] * 6 + [18] * 6
    # Held: the long average follows a rise that lasts (over ~600 calls), so the
    # limit comes back as the new time becomes the normal one.
    assert saturated(limit, 2 * BASE, 600)[-1] > 18


def test_gradient2_pulls_down_a_long_average_left_high_by_a_burst() -> None:
    limit = Gradient2Limit(100, warmup=1)
    limit.sample(10 * BASE, 0)
    limit.sample(BASE, 0)
    expected = (10 * BASE + (BASE - 10 * BASE) * 2 / 601) * 0.95
    assert limit.long_rtt == pytest.approx(expected)


def test_gradient2_drop_cuts_a_tenth() -> None:
    limit = Gradient2Limit(100)
    assert limit.drop() == 18
    assert limit.estimate == pytest.approx(18.0)


def test_gradient2_stays_within_one_and_the_cap() -> None:
    limit = Gradient2Limit(22)
    assert saturated(limit, BASE, 10)[-1] == 22
    for _ in range(60):
        limit.drop()
    assert limit.limit == 1


def test_adaptive_limit_by_name() -> None:
    assert isinstance(adaptive_limit("vegas", 10), VegasLimit)
    assert isinstance(adaptive_limit("gradient2", 10), Gradient2Limit)
    assert adaptive_limit("gradient2", 10).limit == 10


@pytest.mark.parametrize("kind", ["vegas", "gradient2"])
def test_an_untimed_call_teaches_nothing(kind: Literal["vegas", "gradient2"]) -> None:
    # A coarse clock, or a fake one nobody advanced, times a call at zero.
    limit: Any = adaptive_limit(kind, 100)
    limit.sample(BASE, 20)
    before = vars(limit).copy()
    assert limit.sample(0.0, 20) == 20
    assert vars(limit) == before

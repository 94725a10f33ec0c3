"""PeakEwma (power of two choices) and the Endpoint cost it minimises."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from tests.balancing.helpers import REQUEST, endpoints

from flotilla.balancing import Endpoint, PeakEwma
from flotilla.balancing.base import DECAY_SECONDS, INITIAL_LATENCY


def traffic(strategy: PeakEwma, eps: list[Endpoint], calls: int) -> Counter[str]:
    return Counter(strategy.select(eps, REQUEST).id for _ in range(calls))


# --- Endpoint: the peak-EWMA latency and the cost -----------------------------


def test_a_high_sample_replaces_the_average_at_once() -> None:
    (ep,) = endpoints(1)
    ep.record(0.01, now=100.0)
    ep.record(0.5, now=100.5)
    assert ep.latency(100.5) == 0.5


def test_low_samples_pull_the_average_down_slowly() -> None:
    (ep,) = endpoints(1)
    ep.record(0.5, now=100.0)
    ep.record(0.01, now=101.0)
    w = math.exp(-1.0 / DECAY_SECONDS)
    assert ep.latency(101.0) == pytest.approx(0.5 * w + 0.01 * (1 - w))
    assert ep.latency(101.0) > 0.4  # one fast answer does not undo a slow one
    for second in range(102, 152):  # fifty seconds of fast answers do
        ep.record(0.01, now=float(second))
    assert 0.01 < ep.latency(151.0) < 0.015


def test_the_estimate_decays_without_samples() -> None:
    (ep,) = endpoints(1)
    ep.record(0.5, now=100.0)
    assert ep.latency(100.0) == 0.5
    assert ep.latency(100.0 + DECAY_SECONDS) == pytest.approx(0.5 / math.e)
    assert ep.latency(100.0 + 3 * DECAY_SECONDS) == pytest.approx(0.5 / math.e**3)


def test_a_now_before_the_last_sample_does_not_inflate_the_estimate() -> None:
    (ep,) = endpoints(1)
    ep.record(0.5, now=100.0)
    assert ep.latency(50.0) == 0.5
    # A fresh endpoint asked about a time long before it existed (a fake clock
    # at zero, say) used to overflow math.exp.
    (fresh,) = endpoints(1)
    assert fresh.latency(0.0) == INITIAL_LATENCY


def test_cost_is_latency_times_queue_length() -> None:
    (ep,) = endpoints(1)
    ep.record(0.1, now=100.0)
    assert ep.cost(100.0) == pytest.approx(0.1)
    ep.inflight = 3
    assert ep.cost(100.0) == pytest.approx(0.4)


# --- PeakEwma ------------------------------------------------------------------


def test_one_endpoint_is_returned() -> None:
    (ep,) = endpoints(1)
    assert PeakEwma(random.Random(1)).select([ep], REQUEST) is ep


def test_the_two_candidates_are_distinct() -> None:
    # With two endpoints every draw is the pair, so the costlier one is never
    # chosen -- unless the strategy could draw the same endpoint twice.
    fast, slow = endpoints(2)
    slow.inflight = 1
    assert traffic(PeakEwma(random.Random(1)), [fast, slow], 1000) == {"e0": 1000}


def test_a_slow_endpoint_gets_far_less_traffic() -> None:
    eps = endpoints(4)
    for ep in eps:
        ep.record(0.010)
    eps[2].record(1.0)  # one replica turned slow
    counts = traffic(PeakEwma(random.Random(2)), eps, 2000)
    # The costliest endpoint loses every pair it is drawn in; the others all
    # get some (who gets most depends on the microseconds between records).
    assert counts["e2"] == 0
    assert all(counts[name] > 0 for name in ("e0", "e1", "e3"))


def test_traffic_falls_with_rank_of_cost() -> None:
    # Of n endpoints ranked by cost, the k-th cheapest wins (n - k) of the
    # n(n-1)/2 possible pairs: 40 %, 30 %, 20 %, 10 %, 0 % for five.
    eps = endpoints(5)
    for rank, ep in enumerate(eps, start=1):
        ep.record(0.01 * rank)
    counts = traffic(PeakEwma(random.Random(3)), eps, 4000)
    for rank, expected in enumerate([0.4, 0.3, 0.2, 0.1, 0.0]):
        assert counts[f"e{rank}"] / 4000 == pytest.approx(expected, abs=0.03)


def test_rising_inflight_sends_traffic_elsewhere() -> None:
    eps = endpoints(4)
    eps[0].inflight = 5  # same latency as the others, but a queue
    counts = traffic(PeakEwma(random.Random(4)), eps, 2000)
    assert counts["e0"] == 0


def test_unanswered_calls_spread_evenly() -> None:
    # Every chosen endpoint keeps the call in flight: P2C keeps the queues
    # within a call or two of each other, where random choice would drift apart.
    eps = endpoints(4)
    strategy = PeakEwma(random.Random(5))
    for _ in range(400):
        strategy.select(eps, REQUEST).inflight += 1
    loads = [ep.inflight for ep in eps]
    assert sum(loads) == 400
    assert max(loads) - min(loads) <= 2


def test_a_seeded_rng_makes_the_choices_reproducible() -> None:
    eps = endpoints(6)
    # Costs all distinct, so no pair is decided by the microseconds between records.
    for ep, latency, inflight in zip(
        eps, [11, 17, 23, 31, 43, 59], [0, 1, 2, 0, 1, 2], strict=True
    ):
        ep.record(latency / 1000)
        ep.inflight = inflight

    def run(seed: int) -> list[str]:
        strategy = PeakEwma(random.Random(seed))
        return [strategy.select(eps, REQUEST).id for _ in range(200)]

    assert run(11) == run(11)
    assert run(11) != run(12)

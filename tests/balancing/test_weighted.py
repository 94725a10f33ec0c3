"""Weighted: random in proportion to the ``weight`` metadata."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from tests.balancing.helpers import REQUEST, endpoint

from flotilla.balancing import Endpoint, Weighted


def shares(strategy: Weighted, eps: list[Endpoint], calls: int) -> dict[str, float]:
    counts = Counter(strategy.select(eps, REQUEST).id for _ in range(calls))
    return {name: count / calls for name, count in counts.items()}


class FixedDraw(random.Random):
    """A generator that always draws the same number, to pin the edges."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(
    ("metadata", "weight"),
    [(None, 1.0), ("3", 3.0), ("0.5", 0.5), ("0", 1.0), ("-2", 1.0), ("lots", 1.0), ("nan", 1.0)],
)
def test_endpoint_weight_reads_the_metadata(metadata: str | None, weight: float) -> None:
    assert endpoint("e", metadata).weight == weight


def test_traffic_follows_the_weights() -> None:
    eps = [endpoint("a", "1"), endpoint("b", "2"), endpoint("c", "3"), endpoint("d", "4")]
    got = shares(Weighted(random.Random(1)), eps, 10_000)
    assert got == pytest.approx({"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}, abs=0.02)


def test_fractional_weights_work() -> None:
    eps = [endpoint("a", "0.25"), endpoint("b", "0.75")]
    got = shares(Weighted(random.Random(2)), eps, 10_000)
    assert got == pytest.approx({"a": 0.25, "b": 0.75}, abs=0.02)


def test_without_weights_the_choice_is_uniform() -> None:
    eps = [endpoint("a"), endpoint("b"), endpoint("c", "bad")]
    got = shares(Weighted(random.Random(3)), eps, 9_000)
    assert got == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, abs=0.02)


def test_the_extreme_draws_land_on_the_ends() -> None:
    eps = [endpoint("a", "0.1"), endpoint("b", "0.2"), endpoint("c", "0.3")]
    assert Weighted(FixedDraw(0.0)).select(eps, REQUEST).id == "a"
    # The largest draw random() can return must not fall off the end.
    assert Weighted(FixedDraw(1.0 - 2**-53)).select(eps, REQUEST).id == "c"


def test_a_seeded_rng_makes_the_choices_reproducible() -> None:
    eps = [endpoint("a", "1"), endpoint("b", "5"), endpoint("c", "2")]

    def run(seed: int) -> list[str]:
        strategy = Weighted(random.Random(seed))
        return [strategy.select(eps, REQUEST).id for _ in range(100)]

    assert run(5) == run(5)
    assert run(5) != run(6)

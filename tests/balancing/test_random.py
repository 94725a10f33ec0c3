"""Random: uniform choice."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from tests.balancing.helpers import REQUEST, endpoints

import flotilla.balancing.random as random_module
from flotilla.balancing import Random


def test_the_module_uses_the_standard_library_random() -> None:
    # The module is itself called random; its import must not find itself.
    assert vars(random_module)["_random"] is random


def test_choice_is_uniform() -> None:
    eps = endpoints(4)
    strategy = Random(random.Random(1))
    counts = Counter(strategy.select(eps, REQUEST).id for _ in range(8000))
    assert set(counts) == {"e0", "e1", "e2", "e3"}
    for name in counts:
        assert counts[name] / 8000 == pytest.approx(0.25, abs=0.02)


def test_load_is_ignored() -> None:
    eps = endpoints(2)
    eps[0].inflight = 100
    eps[0].record(5.0)
    strategy = Random(random.Random(2))
    counts = Counter(strategy.select(eps, REQUEST).id for _ in range(2000))
    assert counts["e0"] / 2000 == pytest.approx(0.5, abs=0.04)


def test_a_seeded_rng_makes_the_choices_reproducible() -> None:
    eps = endpoints(5)

    def run(seed: int) -> list[str]:
        strategy = Random(random.Random(seed))
        return [strategy.select(eps, REQUEST).id for _ in range(100)]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_one_endpoint_gets_everything() -> None:
    eps = endpoints(1)
    assert Random().select(eps, REQUEST) is eps[0]

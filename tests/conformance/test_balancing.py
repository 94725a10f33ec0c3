"""The suite every built-in balancing strategy passes, whatever its policy.

Each strategy is named as configuration names it (``resolve_strategy``), so a
new strategy joins the suite by joining ``STRATEGIES``.  Requests carry a
varying ``user_id`` so the key-based strategy spreads like the others.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Sequence

import pytest
from tests.balancing.helpers import Request, endpoints

from flotilla.balancing import Endpoint, PeakEwma, Random, Strategy, Weighted, resolve_strategy

STRATEGIES = ["p2c", "peak_ewma", "round_robin", "random", "weighted", "consistent_hash:user_id"]

# Strategies that draw random numbers take a generator; the others are
# deterministic by construction.
SEEDED: dict[str, Callable[[random.Random], Strategy]] = {
    "p2c": PeakEwma,
    "peak_ewma": PeakEwma,
    "random": Random,
    "weighted": Weighted,
}


def request(i: int) -> Request:
    return Request(args={"user_id": i})


def make(name: str, seed: int = 0) -> Strategy:
    seeded = SEEDED.get(name)
    return seeded(random.Random(seed)) if seeded else resolve_strategy(name)


def picks(strategy: Strategy, eps: Sequence[Endpoint], calls: int) -> list[str]:
    return [strategy.select(eps, request(i)).id for i in range(calls)]


@pytest.fixture(params=STRATEGIES)
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_every_built_in_strategy_is_in_the_suite() -> None:
    for spec in ("p2c", "peak_ewma", "round_robin", "random", "weighted"):
        assert spec in STRATEGIES
    assert any(spec.startswith("consistent_hash:") for spec in STRATEGIES)


def test_the_choice_is_always_one_of_the_given_endpoints(name: str) -> None:
    eps = endpoints(5)
    strategy = make(name)
    for i in range(500):
        chosen = strategy.select(eps, request(i))
        assert any(chosen is ep for ep in eps)


def test_one_endpoint_gets_every_call(name: str) -> None:
    (only,) = endpoints(1)
    strategy = make(name)
    assert all(strategy.select([only], request(i)) is only for i in range(50))


def test_equal_load_spreads_over_every_endpoint(name: str) -> None:
    # Equal load means equal state: the same latency sample taken at the same
    # instant, and nothing in flight.  (Endpoints merely created a few
    # microseconds apart are not equal to P2C: the older one's initial
    # latency estimate has decayed a hair further.)
    eps = endpoints(4)
    now = time.monotonic()
    for ep in eps:
        ep.record(0.01, now=now)
    counts = Counter(picks(make(name), eps, 2000))
    assert set(counts) == {"e0", "e1", "e2", "e3"}
    assert max(counts.values()) / 2000 < 0.4  # even within ±15 points of 25 %


def test_the_same_seed_gives_the_same_choices(name: str) -> None:
    eps = endpoints(6)
    assert picks(make(name, seed=7), eps, 300) == picks(make(name, seed=7), eps, 300)


def test_endpoints_may_come_and_go_between_calls(name: str) -> None:
    strategy = make(name)
    pool = endpoints(8)
    rng = random.Random(3)
    for i in range(500):
        current = rng.sample(pool, rng.randint(1, len(pool)))
        chosen = strategy.select(current, request(i))
        assert any(chosen is ep for ep in current)


def test_a_tuple_works_and_nothing_is_changed(name: str) -> None:
    eps = tuple(endpoints(3))
    for ep, load in zip(eps, (0, 2, 5), strict=True):
        ep.inflight = load
    strategy = make(name)
    for i in range(100):
        strategy.select(eps, request(i))
    assert [ep.inflight for ep in eps] == [0, 2, 5]
    assert [ep.id for ep in eps] == ["e0", "e1", "e2"]


def test_strategies_of_one_name_do_not_share_state(name: str) -> None:
    # Two callers, two strategies: what one chose must not shift the other.
    eps = endpoints(5)
    alone = picks(make(name, seed=1), eps, 50)
    busy, fresh = make(name, seed=1), make(name, seed=1)
    picks(busy, eps, 13)
    assert picks(fresh, eps, 50) == alone

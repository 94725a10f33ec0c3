"""RoundRobin: each endpoint in turn, through a changing set."""

from __future__ import annotations

from collections import Counter

from tests.balancing.helpers import REQUEST, endpoints

from flotilla.balancing import RoundRobin


def test_cycles_in_order() -> None:
    eps = endpoints(3)
    strategy = RoundRobin()
    picked = [strategy.select(eps, REQUEST).id for _ in range(7)]
    assert picked == ["e0", "e1", "e2", "e0", "e1", "e2", "e0"]


def test_spreads_exactly_evenly() -> None:
    eps = endpoints(4)
    strategy = RoundRobin()
    counts = Counter(strategy.select(eps, REQUEST).id for _ in range(400))
    assert counts == {"e0": 100, "e1": 100, "e2": 100, "e3": 100}


def test_survives_the_set_shrinking_and_growing() -> None:
    strategy = RoundRobin()
    five = endpoints(5)
    for _ in range(4):  # the counter now points at the fifth endpoint
        strategy.select(five, REQUEST)
    two = five[:2]
    counts = Counter(strategy.select(two, REQUEST).id for _ in range(100))
    assert counts == {"e0": 50, "e1": 50}
    counts = Counter(strategy.select(five, REQUEST).id for _ in range(500))
    assert counts == {f"e{i}": 100 for i in range(5)}


def test_one_endpoint_gets_everything() -> None:
    eps = endpoints(1)
    strategy = RoundRobin()
    assert all(strategy.select(eps, REQUEST) is eps[0] for _ in range(5))


def test_instances_do_not_share_a_counter() -> None:
    eps = endpoints(3)
    first, second = RoundRobin(), RoundRobin()
    first.select(eps, REQUEST)
    assert second.select(eps, REQUEST).id == "e0"


def test_services_sharing_a_strategy_each_cycle_evenly() -> None:
    # One strategy serves every service a caller talks to; calls alternating
    # between two services must not pin either to one endpoint.
    catalog, orders = endpoints(2, service="catalog"), endpoints(2, service="orders")
    strategy = RoundRobin()
    picked: dict[str, Counter[str]] = {"catalog": Counter(), "orders": Counter()}
    for _ in range(100):
        picked["catalog"][strategy.select(catalog, REQUEST).id] += 1
        picked["orders"][strategy.select(orders, REQUEST).id] += 1
    assert picked == {"catalog": {"e0": 50, "e1": 50}, "orders": {"e0": 50, "e1": 50}}

"""resolve_strategy: names from configuration to strategies, and the public API."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

import flotilla.balancing as balancing
from flotilla.balancing import (
    DEFAULT_STRATEGY,
    ConsistentHash,
    Endpoint,
    PeakEwma,
    Random,
    RequestView,
    RoundRobin,
    Weighted,
    resolve_strategy,
)
from flotilla.errors import ConfigError


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("p2c", PeakEwma),
        ("peak_ewma", PeakEwma),
        ("round_robin", RoundRobin),
        ("random", Random),
        ("weighted", Weighted),
    ],
)
def test_names_resolve_to_their_classes(name: str, cls: type) -> None:
    assert type(resolve_strategy(name)) is cls


def test_the_default_is_p2c() -> None:
    assert type(resolve_strategy(DEFAULT_STRATEGY)) is PeakEwma


def test_consistent_hash_takes_its_key_after_a_colon() -> None:
    strategy = resolve_strategy("consistent_hash:user_id")
    assert isinstance(strategy, ConsistentHash)
    assert strategy.key == "user_id"


@pytest.mark.parametrize("spec", ["consistent_hash", "consistent_hash:"])
def test_consistent_hash_without_a_key_is_refused(spec: str) -> None:
    with pytest.raises(ConfigError, match="needs a key"):
        resolve_strategy(spec)


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="least_conn") as caught:
        resolve_strategy("least_conn")
    for known in ("p2c", "peak_ewma", "round_robin", "random", "weighted", "consistent_hash:<key>"):
        assert known in caught.value.message


def test_an_option_on_a_strategy_that_takes_none_is_refused() -> None:
    with pytest.raises(ConfigError, match="takes no option"):
        resolve_strategy("round_robin:3")


def test_a_strategy_object_is_returned_as_is() -> None:
    class First:
        def select(self, endpoints: Sequence[Endpoint], request: RequestView) -> Endpoint:
            return endpoints[0]

    strategy = First()
    assert resolve_strategy(strategy) is strategy


def test_something_that_cannot_select_is_refused() -> None:
    with pytest.raises(ConfigError):
        resolve_strategy(42)  # type: ignore[arg-type]


def test_every_resolution_is_a_new_instance() -> None:
    # Strategies carry state (a counter, a ring): two callers must not share one.
    assert resolve_strategy("round_robin") is not resolve_strategy("round_robin")


def test_public_api() -> None:
    assert sorted(balancing.__all__) == sorted(
        [
            "DEFAULT_STRATEGY",
            "ConsistentHash",
            "Endpoint",
            "PeakEwma",
            "Random",
            "RequestView",
            "RoundRobin",
            "Strategy",
            "Weighted",
            "resolve_strategy",
        ]
    )
    assert all(hasattr(balancing, name) for name in balancing.__all__)

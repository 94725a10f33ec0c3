"""ConsistentHash: a key sticks to its endpoint, and few keys move when the set changes."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from tests.balancing.helpers import Request
from tests.balancing.helpers import endpoints as _endpoints

from flotilla.balancing import ConsistentHash, Endpoint, hashring
from flotilla.errors import ConfigError, InvalidArgument

KEYS = range(5000)


def endpoints(n: int, start: int = 0) -> list[Endpoint]:
    return _endpoints(n, start=start, prefix="node-")


def owners(strategy: ConsistentHash, eps: list[Endpoint]) -> dict[int, str]:
    return {key: strategy.select(eps, Request(args={"user_id": key})).id for key in KEYS}


def test_the_same_key_always_goes_to_the_same_endpoint() -> None:
    eps = endpoints(5)
    strategy = ConsistentHash("user_id")
    first = owners(strategy, eps)
    assert owners(strategy, eps) == first
    assert owners(ConsistentHash("user_id"), eps) == first


def test_the_ring_is_the_same_in_every_process_and_version() -> None:
    # Pinned: callers in other processes (Python's str hash is salted per
    # process) and on other releases must agree on where a key lives.
    strategy = ConsistentHash("user_id")
    eps = endpoints(5)
    got = [strategy.select(eps, Request(meta={"user_id": k})).id for k in ("alice", "bob", "frank")]
    assert got == ["node-1", "node-4", "node-3"]


def test_keys_spread_evenly() -> None:
    eps = endpoints(10)
    strategy = ConsistentHash("user_id")
    counts = Counter(strategy.select(eps, Request(args={"user_id": k})).id for k in range(20_000))
    assert len(counts) == 10
    assert all(1600 <= count <= 2400 for count in counts.values())  # mean 2000, ±20 %


def test_removing_an_endpoint_moves_only_its_keys() -> None:
    eps = endpoints(5)
    strategy = ConsistentHash("user_id")
    before = owners(strategy, eps)
    after = owners(strategy, [ep for ep in eps if ep.id != "node-2"])
    moved = {key for key in KEYS if before[key] != after[key]}
    assert moved == {key for key in KEYS if before[key] == "node-2"}
    # ...and they scatter over the survivors instead of piling onto one.
    assert len({after[key] for key in moved}) == 4


def test_adding_an_endpoint_takes_a_fair_share_from_the_others_only() -> None:
    eps = endpoints(5)
    strategy = ConsistentHash("user_id")
    before = owners(strategy, eps)
    after = owners(strategy, [*eps, *endpoints(1, start=5)])
    moved = {key for key in KEYS if before[key] != after[key]}
    assert {after[key] for key in moved} == {"node-5"}
    assert len(moved) / len(KEYS) == pytest.approx(1 / 6, abs=0.06)


def test_replacing_an_endpoint_is_a_removal_and_an_addition() -> None:
    # A replica restarting under a new id leaves the count unchanged; the
    # newcomer must take its own arcs, not inherit the old one's.
    eps = endpoints(5)
    strategy = ConsistentHash("user_id")
    before = owners(strategy, eps)
    after = owners(strategy, [*eps[:2], *eps[3:], *endpoints(1, start=7)])
    assert "node-2" not in after.values()
    taken_from = {before[key] for key in KEYS if after[key] == "node-7"}
    assert taken_from == {"node-0", "node-1", "node-2", "node-3", "node-4"}
    # Nothing else moves: every moved key left node-2 or went to node-7.
    moved = [key for key in KEYS if before[key] != after[key]]
    assert all(before[key] == "node-2" or after[key] == "node-7" for key in moved)


def test_the_order_of_the_endpoints_does_not_matter() -> None:
    eps = endpoints(5)
    assert owners(ConsistentHash("user_id"), eps) == owners(ConsistentHash("user_id"), eps[::-1])


def test_a_ring_is_built_once_per_set_of_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[tuple[str, ...]] = []
    build = ConsistentHash._build

    def counting_build(self: ConsistentHash, ids: tuple[str, ...]) -> Any:
        built.append(ids)
        return build(self, ids)

    monkeypatch.setattr(ConsistentHash, "_build", counting_build)
    strategy = ConsistentHash("user_id")
    request = Request(args={"user_id": 1})
    strategy.select(endpoints(3), request)
    strategy.select(endpoints(3), request)  # new Endpoint objects, same ids
    assert len(built) == 1
    strategy.select(endpoints(3, start=1), request)  # as many endpoints, not the same
    assert len(built) == 2
    # Sets that alternate (two services, or a retry that excludes one
    # endpoint) each keep their ring.
    for _ in range(3):
        strategy.select(endpoints(3), request)
        strategy.select(endpoints(3, start=1), request)
    assert len(built) == 2


def test_old_rings_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hashring, "MAX_RINGS", 2)
    strategy = ConsistentHash("user_id")
    request = Request(args={"user_id": 1})
    for start in range(5):
        assert strategy.select(endpoints(3, start=start), request).id in {
            f"node-{i}" for i in range(start, start + 3)
        }
    assert len(strategy._rings) == 2


def test_meta_wins_over_args_and_args_are_stringified() -> None:
    eps = endpoints(5)
    strategy = ConsistentHash("user_id")

    def owner(request: Request) -> str:
        return strategy.select(eps, request).id

    for key in range(50):
        expected = owner(Request(meta={"user_id": str(key)}))
        assert owner(Request(args={"user_id": key})) == expected
        assert owner(Request(args={"user_id": "other"}, meta={"user_id": str(key)})) == expected


def test_a_request_without_the_key_is_refused() -> None:
    strategy = ConsistentHash("user_id")
    with pytest.raises(InvalidArgument, match="user_id") as caught:
        strategy.select(endpoints(2), Request(args={"name": "x"}))
    assert caught.value.details == {"key": "user_id"}


def test_one_endpoint_gets_every_key() -> None:
    eps = endpoints(1)
    assert set(owners(ConsistentHash("user_id", replicas=1), eps).values()) == {"node-0"}


@pytest.mark.parametrize(("key", "replicas"), [("", 160), ("user_id", 0)])
def test_bad_options_are_config_errors(key: str, replicas: int) -> None:
    with pytest.raises(ConfigError):
        ConsistentHash(key, replicas=replicas)

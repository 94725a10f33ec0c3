"""The data layer's policies: checked when made, backoff by exact arithmetic."""

from __future__ import annotations

import pytest

from flotilla.data.policy import Backoff, DatabasePolicy, RelayPolicy
from flotilla.errors import ConfigError


def test_backoff_doubles_from_base_and_stops_at_max() -> None:
    backoff = Backoff(base=0.05, max=1.0)
    assert [backoff.delay(n) for n in range(7)] == [0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0]
    assert backoff.delay(10_000) == 1.0  # no overflow however long the outage


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Backoff(base=0), "backoff.base must be positive"),
        (lambda: Backoff(base=2, max=1), "must be at least backoff.base"),
        (lambda: DatabasePolicy(connect_timeout=0), "connect_timeout must be positive"),
        (lambda: RelayPolicy(poll=-1), "relay.poll must be positive"),
        (lambda: RelayPolicy(batch=0), "batch and relay.in_flight"),
    ],
)
def test_bad_values_are_refused_when_made(make: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()  # type: ignore[operator]

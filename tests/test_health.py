"""@health_check: what it records, and the mistakes it refuses at class definition."""

from __future__ import annotations

import pytest

from flotilla import Service
from flotilla.health import CheckSpec, declared_checks, health_check


class Orders(Service, name="orders"):
    @health_check(interval=5, timeout=0.5)
    async def database(self) -> bool:
        return True

    @health_check()
    async def queue(self) -> bool:
        return True


def test_declared_checks_carry_their_interval_and_timeout() -> None:
    assert declared_checks(Orders) == [
        CheckSpec(name="database", interval=5.0, timeout=0.5),
        CheckSpec(name="queue", interval=5.0, timeout=1.0),
    ]


def test_a_decorated_method_still_works_as_a_method() -> None:
    assert Orders.database.__name__ == "database"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"interval": 0}, "interval must be a positive number, not 0"),
        ({"timeout": -1}, "timeout must be a positive number, not -1"),
        ({"interval": float("inf")}, "interval must be a positive number"),
        ({"timeout": "1"}, "timeout must be a positive number, not '1'"),
    ],
)
def test_a_bad_interval_or_timeout_is_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        health_check(**options)  # type: ignore[arg-type]


def test_a_check_must_be_async_and_take_nothing() -> None:
    with pytest.raises(TypeError, match="must be `async def`"):

        class Sync(Service):
            @health_check()  # type: ignore[type-var]
            def check(self) -> bool:
                return True

    with pytest.raises(TypeError, match="must take no argument but self"):

        class Arguments(Service):
            @health_check()  # type: ignore[type-var]
            async def check(self, deep: bool) -> bool:
                return deep

"""The [resilience] section: levels merged field by field once, lookups, refusals at file:line."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from flotilla.errors import ConfigError
from flotilla.resilience.config import PolicyTable, policy_table
from flotilla.resilience.policy import BreakerPolicy, Policy, RetryPolicy
from flotilla.runtime.settings import Settings
from flotilla.runtime.system_file import parse_system

SERVICES = """\
[services.catalog]
class = "shop.catalog:Catalog"

[services.carts]
class = "shop.carts:Carts"
"""

WORKED = (
    SERVICES
    + """
[resilience]
panic_threshold = 0.6
breaker = { failure_rate = 0.4, window = 20 }
retry = { max_attempts = 2 }

[resilience.services.catalog]
breaker = { failure_rate = 0.3 }
hedge = { enabled = true, delay = 0.05 }

[resilience.services.catalog.methods.search]
retry = { max_attempts = 1 }
breaker.min_calls = 10
"""
)


def parse(text: str) -> PolicyTable:
    return parse_system(text, source="flotilla.toml", system_dir=Path("/srv/shop")).resilience


def refusal(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return caught.value.message


def test_nothing_configured_is_the_protected_defaults() -> None:
    table = parse(SERVICES)
    assert table == PolicyTable()
    assert table("catalog") == Policy()
    assert table("catalog", "search") == Policy()


def test_each_level_overrides_the_one_below_field_by_field() -> None:
    table = parse(WORKED)
    system = table("carts")  # no table of its own: the system level
    assert system.panic_threshold == 0.6
    assert system.breaker == BreakerPolicy(failure_rate=0.4, window=20)
    assert system.retry == RetryPolicy(max_attempts=2)

    catalog = table("catalog")
    assert catalog.breaker == BreakerPolicy(failure_rate=0.3, window=20)  # window inherited
    assert catalog.hedge.enabled
    assert catalog.retry.max_attempts == 2
    assert catalog.panic_threshold == 0.6

    search = table("catalog", "search")
    assert search.retry.max_attempts == 1
    assert search.breaker == BreakerPolicy(failure_rate=0.3, window=20, min_calls=10)
    assert search.hedge.delay == 0.05

    assert table("catalog", "get") is catalog  # a method without a table: its service's
    assert table("catalog", None) is catalog
    assert table("elsewhere") is table.system


def test_the_table_travels_as_json_and_comes_back_equal() -> None:
    table = parse(WORKED)
    text = msgspec.json.encode(table).decode()
    settings = Settings.from_env({"FLOTILLA_SECRET": "s", "FLOTILLA_RESILIENCE": text})
    assert settings.resilience == table
    assert settings.node_config().resilience == table


def test_a_mangled_table_in_the_environment_is_a_config_error() -> None:
    text = '{"system": {"breaker": {"window": 0}}}'
    with pytest.raises(ConfigError, match="FLOTILLA_RESILIENCE is not usable: breaker: window"):
        Settings.from_env({"FLOTILLA_SECRET": "s", "FLOTILLA_RESILIENCE": text})


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            "[resilience]\nbreaker = { windw = 5 }\n",
            "flotilla.toml:8: resilience.breaker.windw: Object contains unknown field `windw`",
        ),
        (
            "[resilience]\nretry = 3\n",
            "flotilla.toml:8: resilience.retry: Expected `object`, got `int`",
        ),
        (
            "[resilience]\n\n[resilience.breaker]\nwindow = 0\n",
            "flotilla.toml:10: resilience.breaker.window: window must be positive, not 0",
        ),
        (
            "[resilience.services.carts]\nbreaker = { failure_rate = -0.5 }\n",
            "flotilla.toml:8: resilience.services.carts.breaker.failure_rate: failure_rate must be"
            " between 0 and 1, not -0.5",
        ),
        (
            "[resilience.services.carts.methods.add]\nbudget.ratio = -1\n",
            "flotilla.toml:8: resilience.services.carts.methods.add.budget.ratio: ratio must not"
            " be negative, not -1",
        ),
        (
            "[resilience]\npanic_threshold = 2\n",
            "flotilla.toml:8: resilience.panic_threshold: panic_threshold must be between 0 and 1",
        ),
        (
            "[resilience.services.carts]\nbreaker = { state = 'ajar' }\n",
            "flotilla.toml:8: resilience.services.carts.breaker.state: Invalid enum value 'ajar'",
        ),
        (
            "[resilience]\nservices = 1\n",
            "flotilla.toml:8: resilience.services: must be a table, not int",
        ),
    ],
)
def test_a_bad_value_is_refused_at_its_line(section: str, message: str) -> None:
    assert refusal(SERVICES + "\n" + section).startswith(message)


def test_a_policy_for_a_service_the_system_does_not_run_names_the_known_ones() -> None:
    text = SERVICES + "\n[resilience.services.payments]\nbreaker = { state = 'forced_open' }\n"
    assert refusal(text) == (
        "flotilla.toml:7: resilience.services.payments:"
        " the system runs no service 'payments' (known: carts, catalog)"
    )


def test_a_merged_bound_is_checked_where_the_overriding_level_sets_it() -> None:
    # open_max 30 is fine over the default open_base 5; the service's open_base 40 is not.
    text = (
        SERVICES
        + "\n[resilience]\nbreaker = { open_max = 30 }\n"
        + "\n[resilience.services.catalog]\nbreaker = { open_base = 40 }\n"
    )
    assert refusal(text) == (
        "flotilla.toml:11: resilience.services.catalog.breaker.open_base:"
        " open_max must be at least open_base"
    )


def test_a_table_built_in_code_names_the_key_without_a_file() -> None:
    with pytest.raises(ConfigError, match=r"^resilience\.retry\.max_attempts: max_attempts"):
        policy_table({"retry": {"max_attempts": 0}})
    table = policy_table({"services": {"any": {"retry": {"max_attempts": 5}}}})
    assert table("any").retry.max_attempts == 5  # no known services given: any name is taken

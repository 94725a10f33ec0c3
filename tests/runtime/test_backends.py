"""Which registry, events and database a system run uses: option > environment > file > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from flotilla.errors import ConfigError
from flotilla.runtime.backends import choose_backends
from flotilla.runtime.system_file import SystemSpec, parse_system

SYSTEM = """\
[system]
name = "shop"
{system}

[services.orders]
class = "shop.orders:Orders"
{orders}

[services.users]
class = "shop.users:Users"
"""

FILE_LINES = """\
registry = "nats://file:4222"
events = "nats://file:4222?prefix=FILE"
database = "postgresql://file/shop"
"""


def spec(tmp_path: Path, system: str = "", orders: str = "") -> SystemSpec:
    text = SYSTEM.format(system=system, orders=orders)
    return parse_system(text, source="flotilla.toml", system_dir=tmp_path)


ENV = {
    "FLOTILLA_REGISTRY": "nats://env:4222",
    "FLOTILLA_EVENTS": "nats://env:4222?prefix=ENV",
    "FLOTILLA_DATABASE_URL": "postgresql://env/shop",
}


def test_without_anything_given_the_embedded_defaults_stay(tmp_path: Path) -> None:
    chosen = choose_backends(spec(tmp_path), {})
    data = tmp_path / ".flotilla"
    assert (chosen.registry, chosen.events) == (
        f"sqlite://{data}/registry.db",
        f"sqlite://{data}/events.db",
    )
    assert chosen.database is None
    assert all(service.database is None for service in chosen.services.values())


def test_the_file_wins_over_the_defaults(tmp_path: Path) -> None:
    chosen = choose_backends(spec(tmp_path, FILE_LINES), {})
    assert (chosen.registry, chosen.events, chosen.database) == (
        "nats://file:4222",
        "nats://file:4222?prefix=FILE",
        "postgresql://file/shop",
    )
    assert chosen.services["users"].database == "postgresql+asyncpg://file/shop?schema=shop_users"


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    chosen = choose_backends(spec(tmp_path, FILE_LINES), ENV)
    assert (chosen.registry, chosen.events, chosen.database) == (
        "nats://env:4222",
        "nats://env:4222?prefix=ENV",
        "postgresql://env/shop",
    )
    assert chosen.services["orders"].database == "postgresql+asyncpg://env/shop?schema=shop_orders"


def test_the_options_win_over_the_environment(tmp_path: Path) -> None:
    chosen = choose_backends(
        spec(tmp_path, FILE_LINES),
        ENV,
        registry="nats://opt:4222",
        events="nats://opt:4222?prefix=OPT",
        database="postgresql://opt/shop",
    )
    assert (chosen.registry, chosen.events, chosen.database) == (
        "nats://opt:4222",
        "nats://opt:4222?prefix=OPT",
        "postgresql://opt/shop",
    )
    assert chosen.services["users"].database == "postgresql+asyncpg://opt/shop?schema=shop_users"


def test_each_is_chosen_on_its_own(tmp_path: Path) -> None:
    chosen = choose_backends(
        spec(tmp_path, FILE_LINES), {"FLOTILLA_EVENTS": "memory://"}, registry="memory://"
    )
    assert (chosen.registry, chosen.events, chosen.database) == (
        "memory://",
        "memory://",
        "postgresql://file/shop",
    )


def test_a_services_own_database_wins_over_the_systems(tmp_path: Path) -> None:
    own = 'database = "postgresql://elsewhere/orders"'
    variable = {"FLOTILLA_DATABASE_URL_USERS": "postgresql://elsewhere/users"}
    chosen = choose_backends(spec(tmp_path, orders=own), variable, database="postgresql://db/x")
    assert chosen.services["orders"].database == "postgresql://elsewhere/orders"
    # Left unset: the process inherits its variable, which the node reads.
    assert chosen.services["users"].database is None
    assert "FLOTILLA_DATABASE_URL_USERS" not in chosen.call_environment("users")
    assert chosen.call_environment("orders")["FLOTILLA_DATABASE_URL_ORDERS"] == (
        "postgresql://elsewhere/orders"
    )


def test_a_systems_sqlite_directory_gives_a_file_per_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # relative to where the command runs, not the system's folder
    chosen = choose_backends(spec(tmp_path / "system"), {}, database="sqlite://state")
    assert chosen.services["orders"].database == f"sqlite://{tmp_path}/state/orders.db"
    relative = choose_backends(spec(tmp_path / "system"), {"FLOTILLA_REGISTRY": "reg.db"})
    assert relative.registry == f"sqlite://{tmp_path}/reg.db"


def test_a_database_that_cannot_be_shared_is_refused_naming_where_it_came_from(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError) as caught:
        choose_backends(spec(tmp_path), {"FLOTILLA_DATABASE_URL": "sqlite://"})
    assert caught.value.message.startswith("FLOTILLA_DATABASE_URL: a system's database cannot")
    with pytest.raises(ConfigError) as caught:
        choose_backends(spec(tmp_path, 'database = "shop.db"'), {})
    assert caught.value.message.startswith("flotilla.toml:3: system.database: a system's SQLite")


def test_errors_about_a_url_name_the_option_that_gave_it(tmp_path: Path) -> None:
    chosen = choose_backends(spec(tmp_path, FILE_LINES), {}, registry="bogus://x")
    assert chosen.where("system.registry") == "--registry"
    assert chosen.where("system.events") == "flotilla.toml:4: system.events"


def test_the_event_policy_variables_win_over_the_files(tmp_path: Path) -> None:
    text = SYSTEM.format(system="", orders="") + "[events]\ndelivery = { max_deliveries = 2 }\n"
    with_file = parse_system(text + "relay = { lease = 3.0 }\n", source="f", system_dir=tmp_path)
    kept = choose_backends(with_file, {})
    assert kept.delivery is not None
    assert kept.delivery.max_deliveries == 2
    assert kept.relay is not None
    assert kept.relay.lease == 3.0
    overridden = choose_backends(with_file, {"FLOTILLA_DELIVERY": '{"max_deliveries": 7}'})
    assert overridden.delivery is None  # the process reads the variable it inherits
    assert "FLOTILLA_DELIVERY" not in overridden.call_environment("orders")
    assert overridden.relay == kept.relay

"""Which database a service gets, and how its URL is checked and shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from flotilla.data.url import (
    choose_url,
    database_env_name,
    default_url,
    is_memory,
    mask,
    normalize_url,
    service_url,
)
from flotilla.errors import ConfigError


def test_plain_schemes_get_their_asyncio_driver() -> None:
    assert normalize_url("postgresql://app:pw@db:5432/shop").drivername == "postgresql+asyncpg"
    assert normalize_url("postgres://app@db/shop").drivername == "postgresql+asyncpg"
    assert normalize_url("sqlite:///var/x.db").drivername == "sqlite+aiosqlite"


def test_sqlite_paths_read_as_the_registrys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert normalize_url("sqlite:///var/lib/app/orders.db").database == "/var/lib/app/orders.db"
    monkeypatch.chdir(tmp_path)
    assert normalize_url("sqlite://rel/orders.db").database == str(tmp_path / "rel/orders.db")
    assert normalize_url("orders.db").database == str(tmp_path / "orders.db")


def test_sqlite_without_a_path_is_memory() -> None:
    assert is_memory(normalize_url("sqlite://"))
    assert is_memory(normalize_url("sqlite:///:memory:"))
    assert not is_memory(normalize_url("sqlite:///x.db"))


def test_an_unknown_scheme_is_refused_naming_the_url_masked() -> None:
    with pytest.raises(ConfigError) as caught:
        normalize_url("mysql://app:secret@db/shop")
    assert "mysql://app:***@db/shop" in caught.value.message
    assert "secret" not in caught.value.message
    assert "postgresql://" in caught.value.message  # says what is known


def test_something_that_is_no_url_is_refused() -> None:
    with pytest.raises(ConfigError, match="is not a URL"):
        normalize_url("not a url at all")


def test_mask_hides_the_password_of_parsed_and_unparsed_urls() -> None:
    assert mask("postgresql://app:s3cr3t@db/shop") == "postgresql://app:***@db/shop"
    assert mask(normalize_url("postgresql://app:s3cr3t@db/shop")) == (
        "postgresql+asyncpg://app:***@db/shop"
    )
    assert mask("postgresql://app@db/shop") == "postgresql://app@db/shop"


def test_the_env_name_of_a_service() -> None:
    assert database_env_name("orders") == "FLOTILLA_DATABASE_URL_ORDERS"
    assert database_env_name("order-book") == "FLOTILLA_DATABASE_URL_ORDER_BOOK"


def test_default_is_a_file_per_service_in_the_data_dir_or_memory() -> None:
    assert normalize_url(default_url("orders", "/srv/data")).database == "/srv/data/orders.db"
    assert is_memory(normalize_url(default_url("orders", None)))


def test_precedence_per_service_then_single_then_declared_then_default() -> None:
    every = {
        "per_service": {"order_book": "postgresql://a@h/per"},
        "single": "postgresql://a@h/single",
        "declared": "postgresql://a@h/declared",
        "data_dir": "/srv",
    }
    assert choose_url("order-book", **every).database == "per"  # type: ignore[arg-type]
    assert choose_url("other", **every).database == "single"  # type: ignore[arg-type]
    assert choose_url("other", **{**every, "single": None}).database == "declared"  # type: ignore[arg-type]
    none = {**every, "single": None, "declared": None}
    assert choose_url("other", **none).database == "/srv/other.db"  # type: ignore[arg-type]


def test_a_schema_option_must_be_a_plain_identifier() -> None:
    assert normalize_url("postgresql://db/shop?schema=shop_orders").query["schema"] == (
        "shop_orders"
    )
    for bad in ("Orders", "a-b", "1x", "x;drop", "a" * 64, "orders%0A"):
        with pytest.raises(ConfigError, match="schema must be one name"):
            normalize_url(f"postgresql://db/shop?schema={bad}")


def test_a_systems_postgresql_url_gives_each_service_a_schema_named_after_the_system() -> None:
    assert service_url("postgresql://app:pw@db/shop", "shop", "orders") == (
        "postgresql+asyncpg://app:pw@db/shop?schema=shop_orders"
    )
    # Lower case, other characters as '_' (service names may hold '-').
    assert service_url("postgres://db/x", "My-Shop", "gift-cards").endswith(
        "?schema=my_shop_gift_cards"
    )


def test_the_schema_option_of_a_systems_url_is_the_prefix() -> None:
    assert service_url("postgresql://db/x?schema=staging", "shop", "orders").endswith(
        "?schema=staging_orders"
    )


def test_a_schema_name_too_long_for_postgresql_is_refused() -> None:
    with pytest.raises(ConfigError, match="schema must be one name"):
        service_url("postgresql://db/x", "s" * 60, "orders")


def test_a_systems_sqlite_url_names_a_directory_with_a_file_per_service(tmp_path: Path) -> None:
    assert service_url(f"sqlite://{tmp_path}/state", "shop", "orders") == (
        f"sqlite://{tmp_path}/state/orders.db"
    )


def test_a_systems_sqlite_url_may_not_be_a_file_nor_memory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        service_url(f"sqlite://{tmp_path}/shop.db", "shop", "orders")
    with pytest.raises(ConfigError, match="in memory"):
        service_url("sqlite://", "shop", "orders")

"""How each kind of database is set up: private WAL files, one memory database, clear errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from tests.data.conftest import Target

from flotilla.data.engine import create_engine, reason
from flotilla.data.url import normalize_url
from flotilla.errors import ConfigError


async def test_a_file_database_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "orders.db"
    async with Target(f"sqlite://{path}", {}).opened() as database:
        assert database.ready
        await database.check()
        async with database.connect() as conn:
            assert await conn.scalar(text("PRAGMA journal_mode")) == "wal"
            assert await conn.scalar(text("PRAGMA busy_timeout")) == 5000
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700


def test_a_missing_driver_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # what an absent package looks like
    with pytest.raises(ConfigError, match=r"pip install 'flotilla-mesh\[postgres\]'"):
        create_engine(normalize_url("postgresql://app:pw@db/x"), {}, 5.0)


def test_a_bad_engine_option_is_a_config_error_naming_the_url() -> None:
    with pytest.raises(ConfigError, match=r"app:\*\*\*@db/x.*bad engine option"):
        create_engine(normalize_url("postgresql://app:pw@db/x"), {"no_such_option": 1}, 5.0)


def test_reason_names_the_driver_error_without_the_sql() -> None:
    wrapped = IntegrityError("INSERT INTO secret_table VALUES (1)", {}, ValueError("dup key"))
    assert reason(wrapped) == "ValueError: dup key"
    assert reason(TimeoutError()) == "timed out"

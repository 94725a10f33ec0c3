"""The URL resolver of backend families, and the SQLite URL helpers."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from flotilla.errors import ConfigError
from flotilla.resolve import (
    BackendFamily,
    anchor_sqlite,
    default_registry_url,
    expand_shorthand,
    mask_url,
    sqlite_path,
    sqlite_url,
)


def made(url: str, **options: Any) -> tuple[str, dict[str, Any]]:
    """A factory for the tests: what it was called with."""
    return url, options


class Namespace:
    @staticmethod
    def nested(url: str) -> str:
        return f"nested {url}"


FAMILY: BackendFamily[Any] = BackendFamily(
    "thing",
    {
        "plain": f"{__name__}:made",
        "dotted": f"{__name__}:Namespace.nested",
        "sqlite": f"{__name__}:made",
        "nats": "flotilla_no_such_module.nats:open",
        "typo": f"{__name__}:not_there",
        "ours": "flotilla.no_such_backend:open",
    },
    extras={"nats": "nats", "ours": "ours"},
)


def test_open_calls_the_factory_with_url_and_options() -> None:
    assert FAMILY.open("plain://host:1/x", clock="c") == ("plain://host:1/x", {"clock": "c"})
    assert FAMILY.open("dotted://y") == "nested dotted://y"


def test_db_shorthand_goes_to_sqlite() -> None:
    assert FAMILY.open("dir/reg.db") == ("sqlite://dir/reg.db", {})
    assert FAMILY.open("/abs/reg.db") == ("sqlite:///abs/reg.db", {})


def test_factories_are_imported_on_first_use_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = "tests_resolve_lazy_backend"
    (tmp_path / f"{module}.py").write_text("def make(url):\n    return ('made', url)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    family: BackendFamily[Any] = BackendFamily("thing", {"lazy": f"{module}:make"})
    assert module not in sys.modules  # declaring it imports nothing
    assert family.open("lazy://x") == ("made", "lazy://x")
    assert module in sys.modules
    monkeypatch.delitem(sys.modules, module)


@pytest.mark.parametrize("url", ["redis://x", "registry.sqlite", "", "no-scheme"])
def test_unknown_scheme_lists_the_known_ones(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        FAMILY.open(url)
    message = str(caught.value)
    assert f"unknown thing URL {url!r}" in message
    assert "plain://, dotted://, sqlite://, nats://, typo://, ours://" in message
    assert "(or a path ending in .db)" in message


def test_a_missing_extra_says_what_to_install() -> None:
    with pytest.raises(ConfigError) as caught:
        FAMILY.open("nats://localhost:4222")
    message = str(caught.value)
    assert "nats:// thing backend cannot be loaded" in message
    assert "flotilla_no_such_module" in message
    # The distribution's name: 'flotilla' on PyPI is an unrelated project.
    assert "pip install 'flotilla-mesh[nats]'" in message


def test_a_backend_missing_from_flotilla_itself_is_not_blamed_on_an_extra() -> None:
    with pytest.raises(ConfigError) as caught:
        FAMILY.open("ours://x")
    message = str(caught.value)
    assert "ours:// thing backend is not part of this installation of Flotilla" in message
    assert "flotilla.no_such_backend" in message
    assert "pip install" not in message


def test_a_factory_that_does_not_exist_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not_there"):
        FAMILY.open("typo://x")


def test_a_malformed_declaration_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="module:factory"):
        BackendFamily("thing", {"bad": "no_colon_here"})


def test_expand_shorthand() -> None:
    assert expand_shorthand("a/b.db") == "sqlite://a/b.db"
    assert expand_shorthand("/a/b.db") == "sqlite:///a/b.db"
    assert expand_shorthand("memory://") == "memory://"
    assert expand_shorthand("a/b.sqlite") == "a/b.sqlite"


def test_sqlite_url_is_absolute_with_three_slashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert sqlite_url("reg.db") == f"sqlite:///{str(tmp_path).lstrip('/')}/reg.db"
    assert sqlite_url("/x/reg.db") == "sqlite:///x/reg.db"
    assert sqlite_url("//x/reg.db").startswith("sqlite:///")
    assert not sqlite_url("//x/reg.db").startswith("sqlite:////")


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///abs/reg.db", Path("/abs/reg.db")),
        ("sqlite://rel/reg.db", Path("rel/reg.db")),
        ("rel/reg.db", Path("rel/reg.db")),
        ("sqlite://~/reg.db", Path.home() / "reg.db"),
    ],
)
def test_sqlite_path(url: str, path: Path) -> None:
    assert sqlite_path(url) == path


@pytest.mark.parametrize(
    ("url", "complaint"),
    [("sqlite://", "needs a file"), ("memory://", "not a sqlite"), ("x.sqlite", "not a sqlite")],
)
def test_sqlite_path_refuses(url: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        sqlite_path(url)


def test_anchor_sqlite_resolves_relative_paths_from_the_directory() -> None:
    base = Path("/srv/system")
    assert anchor_sqlite("state/reg.db", base) == "sqlite:///srv/system/state/reg.db"
    assert anchor_sqlite("sqlite://state/reg.db", base) == "sqlite:///srv/system/state/reg.db"
    assert anchor_sqlite("sqlite:///abs/reg.db", base) == "sqlite:///abs/reg.db"
    assert anchor_sqlite("memory://", base) == "memory://"
    assert anchor_sqlite("nats://h:4222", base) == "nats://h:4222"
    assert anchor_sqlite("sqlite://", base) == "sqlite://"  # left for open to complain about


def test_default_registry_url() -> None:
    assert default_registry_url(Path("/srv/app/.flotilla")) == (
        "sqlite:///srv/app/.flotilla/registry.db"
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret@db/shop", "postgresql://app:***@db/shop"),
        (
            "postgresql://app@db/shop?password=s3cret&x=1",
            "postgresql://app@db/shop?password=***&x=1",
        ),
        ("nats://s3cretToken@127.0.0.1:4222", "nats://***@127.0.0.1:4222"),
        ("nats://ada:s3cret@127.0.0.1:4222", "nats://ada:***@127.0.0.1:4222"),
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("nats://127.0.0.1:4222?token=s3cret", "nats://127.0.0.1:4222?token=***"),
        ("sqlite:///srv/app.db", "sqlite:///srv/app.db"),
    ],
)
def test_a_url_is_shown_without_its_secrets(url: str, shown: str) -> None:
    assert mask_url(url) == shown

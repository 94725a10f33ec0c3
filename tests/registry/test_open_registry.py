"""open_registry: the URL -> backend lookup."""

from __future__ import annotations

from pathlib import Path

import pytest

import flotilla.registry
from flotilla.clock import SystemClock
from flotilla.errors import ConfigError
from flotilla.registry import Instance, MemoryRegistry, Registry, SqliteRegistry, open_registry


def test_public_names() -> None:
    assert sorted(flotilla.registry.__all__) == [
        "Health",
        "Instance",
        "MemoryRegistry",
        "MethodInfo",
        "REGISTRIES",
        "Registry",
        "SqliteRegistry",
        "open_registry",
    ]


class StoppedClock(SystemClock):
    """Wall time that stands still unless the test moves it."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def time(self) -> float:
        return self.now


async def test_memory_with_the_given_clock() -> None:
    clock = StoppedClock()
    registry = open_registry("memory://", clock=clock)
    assert isinstance(registry, MemoryRegistry)
    await registry.register(
        Instance(id="a", service="s", address="h:1"), lease=await registry.grant(10)
    )
    clock.now += 10  # the lease runs out on the clock handed to open_registry
    assert await registry.list() == []
    await registry.aclose()


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///abs/dir/reg.db", Path("/abs/dir/reg.db")),
        ("sqlite://relative/reg.db", Path("relative/reg.db")),
        ("relative/reg.db", Path("relative/reg.db")),
        ("/abs/reg.db", Path("/abs/reg.db")),
        ("sqlite://~/reg.db", Path("~/reg.db").expanduser()),
    ],
)
async def test_sqlite(url: str, path: Path) -> None:
    # Nothing touches the file before the first call, so the paths need not exist.
    registry = open_registry(url)
    assert isinstance(registry, SqliteRegistry)
    assert registry.path == path
    await registry.aclose()


async def test_sqlite_url_opens_a_working_registry(tmp_path: Path) -> None:
    registry: Registry = open_registry(f"sqlite://{tmp_path}/reg.db")
    try:
        assert await registry.list() == []
    finally:
        await registry.aclose()
    assert (tmp_path / "reg.db").exists()


@pytest.mark.parametrize("url", ["etcd://localhost:2379", "redis://x", "registry.sqlite", ""])
def test_unknown_scheme_names_url_and_known_schemes(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_registry(url)
    message = str(caught.value)
    assert repr(url) in message
    assert "memory://" in message
    assert "sqlite://" in message


@pytest.mark.parametrize(
    ("url", "complaint"),
    [("sqlite://", "needs a file"), ("memory://x", "takes no path")],
)
def test_malformed_url(url: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        open_registry(url)

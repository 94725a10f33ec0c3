"""Settings from the environment, and the cluster secret kept in the data directory."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from flotilla.errors import ConfigError
from flotilla.runtime.settings import Settings, ensure_data_dir, load_secret


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    data_dir = tmp_path / ".flotilla"
    assert settings.data_dir == data_dir
    assert settings.data_dir.is_absolute()
    assert settings.registry == f"sqlite://{data_dir / 'registry.db'}"
    assert settings.events == f"sqlite://{data_dir / 'events.db'}"
    assert settings.node_config().events == settings.events
    assert settings.secret == (data_dir / "secret").read_text().strip().encode()
    assert settings.host == "127.0.0.1"
    assert settings.port == 0
    assert settings.advertise is None


def test_reads_os_environ_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOTILLA_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("FLOTILLA_SECRET", "from-environ")
    monkeypatch.setenv("FLOTILLA_PORT", "4321")
    settings = Settings.from_env()
    assert settings.data_dir == tmp_path / "d"
    assert settings.secret == b"from-environ"
    assert settings.port == 4321


def test_env_overrides(tmp_path: Path) -> None:
    env = {
        "FLOTILLA_DATA_DIR": str(tmp_path / "data"),
        "FLOTILLA_REGISTRY": "memory://",
        "FLOTILLA_EVENTS": "nats://127.0.0.1:4222",
        "FLOTILLA_SECRET": "s3cret",
        "FLOTILLA_HOST": "0.0.0.0",
        "FLOTILLA_PORT": "8123",
        "FLOTILLA_ADVERTISE": "10.1.2.3",
    }
    settings = Settings.from_env(env)
    assert settings == Settings(
        data_dir=tmp_path / "data",
        registry="memory://",
        events="nats://127.0.0.1:4222",
        secret=b"s3cret",
        host="0.0.0.0",
        port=8123,
        advertise="10.1.2.3",
    )
    assert not (tmp_path / "data").exists()  # a secret given needs no file


def test_empty_values_mean_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {name: "" for name in ("FLOTILLA_HOST", "FLOTILLA_PORT", "FLOTILLA_ADVERTISE")}
    settings = Settings.from_env({**env, "FLOTILLA_SECRET": "x"})
    assert (settings.host, settings.port, settings.advertise) == ("127.0.0.1", 0, None)


def test_relative_data_dir_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({"FLOTILLA_DATA_DIR": "state", "FLOTILLA_SECRET": "x"})
    assert settings.data_dir == tmp_path / "state"
    assert settings.registry == f"sqlite://{tmp_path / 'state' / 'registry.db'}"


@pytest.mark.parametrize(
    "port",
    ["http", "-1", "65536", "80.5", " 80", "0x50", "\u00b2"],
    ids=["word", "negative", "too-big", "fraction", "space", "hex", "superscript-two"],
)
def test_bad_port_is_a_config_error(port: str) -> None:
    with pytest.raises(ConfigError, match="FLOTILLA_PORT"):
        Settings.from_env({"FLOTILLA_PORT": port, "FLOTILLA_SECRET": "x"})


@pytest.mark.parametrize("port", ["0", "1", "65535"])
def test_port_bounds(port: str) -> None:
    assert Settings.from_env({"FLOTILLA_PORT": port, "FLOTILLA_SECRET": "x"}).port == int(port)


def test_the_ops_port_is_off_unless_set_and_checked_like_the_port() -> None:
    base = {"FLOTILLA_SECRET": "x"}
    assert Settings.from_env(base).node_config().ops_port is None
    settings = Settings.from_env({**base, "FLOTILLA_OPS_PORT": "0", "FLOTILLA_OPS_HOST": "0.0.0.0"})
    config = settings.node_config()
    assert (config.ops_port, config.ops_host) == (0, "0.0.0.0")
    with pytest.raises(ConfigError, match="FLOTILLA_OPS_PORT='http' is not a port number"):
        Settings.from_env({**base, "FLOTILLA_OPS_PORT": "http"})


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = Settings.from_env({"FLOTILLA_DATA_DIR": str(tmp_path), "FLOTILLA_SECRET": "x"})
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]


def test_secret_created_once_owner_only_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "a" / "b"
    first = load_secret(data_dir)
    path = data_dir / "secret"
    assert len(first) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    written = path.stat().st_mtime_ns
    assert load_secret(data_dir) == first
    assert path.stat().st_mtime_ns == written
    assert sorted(os.listdir(data_dir)) == ["secret"]  # no candidate left behind


def test_existing_secret_file_is_used(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("given-secret\n")
    assert load_secret(tmp_path) == b"given-secret"


def test_empty_secret_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("  \n")
    with pytest.raises(ConfigError, match="empty"):
        load_secret(tmp_path)


def test_concurrent_creation_yields_one_secret(tmp_path: Path) -> None:
    count = 16
    barrier = threading.Barrier(count)
    results: list[bytes] = []
    errors: list[BaseException] = []

    def load() -> None:
        barrier.wait()
        try:
            results.append(load_secret(tmp_path))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == count
    assert len(set(results)) == 1
    assert results[0] == (tmp_path / "secret").read_text().encode()
    assert sorted(os.listdir(tmp_path)) == ["secret"]


def test_data_dir_and_secret_are_private_under_a_permissive_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        load_secret(tmp_path / "data")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "data" / "secret").stat().st_mode) == 0o600


def test_an_existing_open_data_dir_is_tightened(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(0o777)
    ensure_data_dir(data_dir)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


def test_bad_call_options_in_the_environment_are_config_errors(tmp_path: Path) -> None:
    base = {"FLOTILLA_DATA_DIR": str(tmp_path), "FLOTILLA_SECRET": "s"}
    for name, value in [
        ("FLOTILLA_STRATEGIES", "carts=random"),
        ("FLOTILLA_STRATEGIES", '{"carts": 1}'),
        ("FLOTILLA_DEFAULT_TIMEOUT", "-1"),
    ]:
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({**base, name: value})


def test_database_urls_from_the_environment(tmp_path: Path) -> None:
    env = {
        "FLOTILLA_SECRET": "s",
        "FLOTILLA_DATA_DIR": str(tmp_path),
        "FLOTILLA_DATABASE_URL": "postgresql://app@db/one",
        "FLOTILLA_DATABASE_URL_ORDER_BOOK": "postgresql://app@db/books",
        "FLOTILLA_DATABASE_URL_EMPTY": "",
    }
    config = Settings.from_env(env).node_config()
    assert config.database == "postgresql://app@db/one"
    assert config.databases == {"order_book": "postgresql://app@db/books"}
    assert config.data_dir == str(tmp_path)  # where each service's SQLite file goes by default


def test_no_database_variables_mean_the_embedded_default(tmp_path: Path) -> None:
    config = Settings.from_env({"FLOTILLA_SECRET": "s", "FLOTILLA_DATA_DIR": str(tmp_path)})
    assert config.node_config().database is None
    assert config.node_config().databases == {}


def test_delivery_and_relay_policies_from_the_environment(tmp_path: Path) -> None:
    env = {
        "FLOTILLA_SECRET": "s",
        "FLOTILLA_DATA_DIR": str(tmp_path),
        "FLOTILLA_DELIVERY": '{"ack_wait": 2, "max_deliveries": 3}',
        "FLOTILLA_RELAY": '{"lease": 1.5, "backoff": {"base": 0.01, "max": 0.1}}',
    }
    config = Settings.from_env(env).node_config()
    assert (config.delivery.ack_wait, config.delivery.max_deliveries) == (2, 3)
    assert config.delivery.backoff_base == 0.5  # what the variable leaves out keeps its default
    assert config.relay.lease == 1.5
    assert config.relay.backoff.max == 0.1
    default = Settings.from_env({"FLOTILLA_SECRET": "s", "FLOTILLA_DATA_DIR": str(tmp_path)})
    assert default.node_config().relay.lease == 10.0


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("FLOTILLA_DELIVERY", '{"ack_wait": 0}', "ack_wait must be positive"),
        ("FLOTILLA_DELIVERY", '{"ack_wiat": 1}', "ack_wiat"),
        ("FLOTILLA_RELAY", '{"lease": -1}', "relay.lease must be positive"),
        ("FLOTILLA_RELAY", "lease=1", "FLOTILLA_RELAY='lease=1'"),
    ],
)
def test_bad_policies_in_the_environment_are_config_errors(
    tmp_path: Path, name: str, value: str, reason: str
) -> None:
    env = {"FLOTILLA_SECRET": "s", "FLOTILLA_DATA_DIR": str(tmp_path), name: value}
    with pytest.raises(ConfigError, match=name) as caught:
        Settings.from_env(env)
    assert reason in caught.value.message

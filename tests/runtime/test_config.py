"""NodeConfig and Timings: plain data, checked when built (a mistake fails before a start)."""

from __future__ import annotations

import math

import msgspec
import pytest

from flotilla import ConfigError, Node, NodeConfig, Timings
from flotilla.calls.deadline import DEFAULT_TIMEOUT


def test_defaults() -> None:
    config = NodeConfig()
    assert (config.registry, config.secret, config.host, config.port) == (
        "memory://",
        None,
        "127.0.0.1",
        0,
    )
    assert config.default_timeout == DEFAULT_TIMEOUT
    assert config.timings == Timings()
    assert config.timings.heartbeat + config.timings.check_timeout < config.timings.ttl


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"strategy": "fastest"}, "fastest"),
        ({"strategies": {"carts": "nope"}}, "nope"),
        ({"port": -1}, "port -1 is not a port number"),
        ({"port": 65536}, "port 65536 is not a port number"),
        ({"default_timeout": 0.0}, "default_timeout must be positive"),
        ({"default_timeout": -1.0}, "default_timeout must be positive"),
    ],
)
def test_a_bad_node_config_is_a_config_error(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        NodeConfig(**changes)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=message):
        NodeConfig().replace(**changes)  # checked again on every copy


def test_a_good_strategy_spec_is_accepted() -> None:
    config = NodeConfig(strategy="round_robin", strategies={"carts": "consistent_hash:cart_id"})
    assert config.replace(port=8080).strategies == {"carts": "consistent_hash:cart_id"}


@pytest.mark.parametrize(
    ("timings", "message"),
    [
        ({"ttl": 1.0, "heartbeat": 1.0}, "shorter than the lease ttl"),
        ({"ttl": 1.0, "heartbeat": 2.0}, "shorter than the lease ttl"),
        ({"ttl": 1.0, "heartbeat": 0.5, "health_timeout": 0.6}, "heartbeat \\+ health_timeout"),
        ({"ttl": 0.0}, "must be positive"),
        ({"heartbeat": 0.0}, "must be positive"),
        ({"health_timeout": 0.0}, "must be positive"),
        ({"ttl": -1.0}, "timings.ttl must be a finite number"),
        ({"grace": -0.1}, "timings.grace must be a finite number"),
        ({"drain": math.inf}, "timings.drain must be a finite number"),
        ({"ttl": math.nan}, "timings.ttl must be a finite number"),
    ],
)
def test_bad_timings_are_a_config_error(timings: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Timings(**timings)


def test_the_health_timeout_defaults_to_what_fits_in_a_beat() -> None:
    assert Timings(ttl=0.5, heartbeat=0.1).check_timeout == pytest.approx(0.2)
    assert Timings(ttl=10.0, heartbeat=1.0).check_timeout == 1.0  # capped at 1 s
    assert Timings(ttl=1.0, heartbeat=0.2, health_timeout=0.3).check_timeout == 0.3


def test_a_config_decoded_from_data_is_checked_too() -> None:
    # What the environment or flotilla.toml give is decoded into the same struct.
    decoded = msgspec.convert({"port": 9000, "timings": {"ttl": 3.0}}, NodeConfig)
    assert (decoded.port, decoded.timings.ttl) == (9000, 3.0)
    with pytest.raises(msgspec.ValidationError, match="port"):
        msgspec.convert({"port": 70000}, NodeConfig)
    with pytest.raises(msgspec.ValidationError, match="colour"):
        msgspec.convert({"colour": "red"}, NodeConfig)  # unknown fields refused
    # A rule across fields is the struct's own check, with its own error.
    with pytest.raises(ConfigError, match="heartbeat"):
        msgspec.convert({"timings": {"ttl": 1.0, "heartbeat": 1.0}}, NodeConfig)
    with pytest.raises(ConfigError, match="fastest"):
        msgspec.convert({"strategy": "fastest"}, NodeConfig)


def test_a_node_takes_its_settings_from_the_config() -> None:
    config = NodeConfig(secret=b"s" * 32, timings=Timings(ttl=2.0, heartbeat=0.5))
    node = Node(config=config)
    assert node.config is config
    assert node.secret == b"s" * 32
    assert node.timings.ttl == 2.0
    assert Node().secret != Node().secret  # no secret: a random one each

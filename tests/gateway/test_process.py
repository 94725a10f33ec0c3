"""The gateway process's pieces: routes loaded by name, configuration from the table and env."""

from __future__ import annotations

from pathlib import Path

import pytest

from flotilla.errors import ConfigError
from flotilla.gateway.process import gateway_config, load_routes
from flotilla.gateway.routes import RateLimit
from flotilla.runtime.gateway_spec import GatewaySpec, gateway_port


def test_routes_are_loaded_by_module_and_attribute() -> None:
    routes = load_routes("tests.gateway.notes_system:ROUTES")
    assert routes[0].name == "POST /notes"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_here:ROUTES", "cannot import 'no_such_module_here'"),
        ("tests.gateway.notes_system", "routes 'tests.gateway.notes_system' is not 'module:attr"),
        ("tests.gateway.notes_system:MISSING", "has no attribute 'MISSING'"),
        ("tests.gateway.notes_system:SECRET", "is not a non-empty list"),
        ("tests.gateway.test_process:NOT_ROUTES", r"\[0\] is a str, not a Route"),
    ],
)
def test_routes_that_cannot_be_used_are_a_config_error(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_routes(spec)


NOT_ROUTES = ["GET /x"]


def test_the_signing_key_comes_from_the_named_variable(tmp_path: Path) -> None:
    spec = GatewaySpec(routes="a:B", jwt_secret_env="SHOP_JWT_SECRET", rate=0, audience="shop")
    config = gateway_config(spec, {"SHOP_JWT_SECRET": "k" * 40}, tmp_path)
    assert config.tokens is not None
    assert config.tokens.secret == "k" * 40
    assert config.tokens.audience == "shop"
    assert config.rate_limit is None  # rate = 0: no limit
    assert not (tmp_path / "jwt.key").exists()


def test_else_a_key_is_generated_once_in_the_data_directory(tmp_path: Path) -> None:
    spec = GatewaySpec(routes="a:B", rate=5, burst=7)
    first = gateway_config(spec, {}, tmp_path)
    again = gateway_config(spec, {}, tmp_path)
    assert first.tokens is not None
    assert again.tokens is not None
    assert first.tokens.secret == again.tokens.secret
    assert (tmp_path / "jwt.key").stat().st_mode & 0o777 == 0o600
    assert first.rate_limit == RateLimit(rate=5, burst=7)


def test_the_port_comes_from_the_environment_first() -> None:
    spec = GatewaySpec(routes="a:B", port=9000)
    assert gateway_port(spec, {}) == 9000
    assert gateway_port(spec, {"FLOTILLA_GATEWAY_PORT": "8081"}) == 8081
    with pytest.raises(ConfigError, match="not a port number"):
        gateway_port(spec, {"FLOTILLA_GATEWAY_PORT": "http"})

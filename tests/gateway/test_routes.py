"""A route is checked on its own when made: each mistake named with the route."""

from __future__ import annotations

import pytest

from flotilla.errors import ConfigError
from flotilla.gateway.routes import RateLimit, Route, TokenRoute


def test_a_route_normalises_its_method_and_mappings() -> None:
    route = Route("get", "/orders/{id}", "orders.get", path={"id": "order_id"}, query=["all"])
    assert route.name == "GET /orders/{id}"
    assert route.placeholders == ["id"]
    assert route.query_args == {"all": "all"}
    assert route.bound_args() == {"order_id": "path {id}", "all": "query 'all'"}


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: Route("FETCH", "/x", "a.b"), "method must be one of"),
        (lambda: Route("GET", "x", "a.b"), "must start with '/'"),
        (lambda: Route("GET", "/x", "nodot"), "'service.method'"),
        (lambda: Route("GET", "/x", "a.b", status=404), "not a success status"),
        (lambda: Route("GET", "/x", "a.b", timeout=0), "timeout must be positive"),
        (lambda: Route("GET", "/x", "a.b", principal_arg="user"), "needs auth"),
        (lambda: Route("GET", "/x/{id}", "a.b", path={"key": "k"}), "does not name"),
        (lambda: Route("GET", "/x/{id}", "a.b", query=["id"]), "set from two places"),
        (lambda: TokenRoute("POST", "/t", "u.auth", auth="user"), "takes no token"),
        (lambda: RateLimit(rate=0, burst=1), "rate > 0"),
    ],
)
def test_a_mistake_is_a_config_error_naming_the_route(make: object, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        make()  # type: ignore[operator]

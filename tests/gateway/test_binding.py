"""Routes checked against the method tables at start, and request parts turned into arguments."""

from __future__ import annotations

import pytest

from flotilla.errors import ConfigError, InvalidArgument, Unavailable
from flotilla.gateway import Gateway, GatewayConfig, Route
from flotilla.gateway.binding import NO_BODY, bind
from flotilla.registry.base import MethodInfo
from flotilla.testing import Cluster

from .notes_system import TOKENS, Notes

GET = MethodInfo(
    name="get",
    params={
        "type": "object",
        "properties": {
            "order_id": {"type": "integer"},
            "verbose": {"type": "boolean", "default": False},
            "ratio": {"anyOf": [{"type": "number"}, {"type": "null"}], "default": None},
            "ids": {"type": "array", "items": {"type": "integer"}, "default": []},
            "user": {"type": "string"},
        },
        "required": ["order_id", "user"],
    },
)
TABLE = {"get": GET}


def no_query(name: str) -> list[str]:
    return []


def test_an_unknown_method_names_the_route_and_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"route GET /x -> orders.list: .*no method 'list'.*get"):
        bind(Route("GET", "/x", "orders.list"), TABLE)


def test_an_argument_that_is_not_a_parameter_is_refused() -> None:
    route = Route("GET", "/o/{id}", "orders.get", body=False)
    with pytest.raises(ConfigError, match=r"argument 'id' \(path \{id\}\) is not a parameter"):
        bind(route, TABLE)


def test_a_required_parameter_nothing_sets_is_refused() -> None:
    route = Route("GET", "/o/{id}", "orders.get", path={"id": "order_id"}, body=False)
    with pytest.raises(ConfigError, match=r"required parameter\(s\) \['user'\]"):
        bind(route, TABLE)


def test_a_service_without_a_table_is_refused() -> None:
    with pytest.raises(ConfigError, match="publishes no method table"):
        bind(Route("GET", "/x", "orders.get"), None)


def test_text_is_converted_to_the_parameters_types() -> None:
    route = Route(
        "GET",
        "/o/{id}",
        "orders.get",
        auth="user",
        path={"id": "order_id"},
        query=["verbose", "ratio", "ids"],
        principal_arg="user",
    )
    binding = bind(route, TABLE)
    values = {"verbose": ["true"], "ratio": ["0.5"], "ids": ["1", "2"]}
    args = binding.arguments({"id": "7"}, lambda q: values.get(q, []), {}, NO_BODY, "ada")
    assert args == {"order_id": 7, "verbose": True, "ratio": 0.5, "ids": [1, 2], "user": "ada"}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"verbose": ["maybe"]}, "query parameter 'verbose': expected true or false"),
        ({"ratio": ["half"]}, "query parameter 'ratio': expected a number"),
        ({"ids": ["1", "x"]}, r"query parameter 'ids'\[1\]: expected an integer"),
        ({"verbose": ["true", "false"]}, "given 2 times"),
    ],
)
def test_text_that_does_not_convert_is_invalid_naming_it(
    query: dict[str, list[str]], message: str
) -> None:
    route = Route("GET", "/o/{id}", "orders.get", path={"id": "order_id"}, query=list(query))
    binding = bind(route, TABLE)
    with pytest.raises(InvalidArgument, match=message):
        binding.arguments({"id": "1"}, lambda q: query.get(q, []), {}, {"user": "a"}, None)


def test_a_named_body_is_one_argument() -> None:
    info = MethodInfo(
        name="put",
        params={"type": "object", "properties": {"doc": {}}, "required": ["doc"]},
    )
    binding = bind(Route("PUT", "/d", "docs.put", body="doc"), {"put": info})
    assert binding.arguments({}, no_query, {}, [1, 2], None) == {"doc": [1, 2]}


async def test_start_fails_on_a_route_that_does_not_fit_and_names_it() -> None:
    async with Cluster() as cluster:
        await cluster.add(Notes())
        routes = [Route("GET", "/n/{id}", "notes.get", auth="user", principal_arg="owner")]
        gateway = Gateway(cluster.client_node, routes, GatewayConfig(tokens=TOKENS))
        with pytest.raises(ConfigError, match=r"route GET /n/\{id\} -> notes.get: argument 'id'"):
            await gateway.start()
        await gateway.aclose()


async def test_start_gives_up_on_a_service_nobody_runs() -> None:
    async with Cluster() as cluster:
        routes = [Route("GET", "/x", "ghost.get")]
        gateway = Gateway(cluster.client_node, routes, GatewayConfig(startup_timeout=0.2))
        with pytest.raises(Unavailable, match="service 'ghost' published no method table"):
            await gateway.start()
        await gateway.aclose()


def test_routes_that_cannot_work_are_refused_when_the_gateway_is_made() -> None:
    node = Cluster().client_node
    with pytest.raises(ConfigError, match="declared twice"):
        Gateway(node, [Route("GET", "/x", "a.b"), Route("GET", "/x", "a.c")])
    with pytest.raises(ConfigError, match="the gateway's own"):
        Gateway(node, [Route("GET", "/metrics", "a.b")])
    with pytest.raises(ConfigError, match="needs tokens"):
        Gateway(node, [Route("GET", "/x", "a.b", auth="user")])

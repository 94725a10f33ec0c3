"""The route table finds what Starlette's router finds, without walking it."""

from __future__ import annotations

from starlette.routing import Route

from flotilla.gateway.table import RouteTable


async def endpoint(request: object) -> None:  # never called: the table only matches
    raise AssertionError


def table(*routes: tuple[str, str]) -> RouteTable[str]:
    """A table of (method, template) routes, each targeting its own ``"METHOD template"``."""
    return RouteTable(
        [(Route(path, endpoint, methods=[method]), f"{method} {path}") for method, path in routes]
    )


def test_a_static_path_and_a_template_with_its_parameters() -> None:
    found = table(("GET", "/items"), ("GET", "/items/{id}"), ("POST", "/items"))
    assert found.match("GET", "/items") == ("GET /items", {})
    assert found.match("POST", "/items") == ("POST /items", {})
    assert found.match("GET", "/items/7") == ("GET /items/{id}", {"id": "7"})
    assert found.match("GET", "/items/7/more") is None


def test_what_it_does_not_match_is_left_to_starlette() -> None:
    found = table(("GET", "/items"), ("GET", "/items/{id}"))
    assert found.match("DELETE", "/items") is None  # a 405, Starlette's to answer
    assert found.match("GET", "/nowhere") is None  # a 404
    assert found.match("GET", "/items/") is None  # a redirect to /items


def test_head_is_taken_by_a_get_route_as_starlette_takes_it() -> None:
    found = table(("GET", "/items/{id}"))
    assert found.match("HEAD", "/items/1") == ("GET /items/{id}", {"id": "1"})


def test_the_first_route_declared_wins_as_in_starlette() -> None:
    # A template declared first takes a static path declared after it.
    shadowed = table(("GET", "/items/{id}"), ("GET", "/items/search"))
    assert shadowed.match("GET", "/items/search") == ("GET /items/{id}", {"id": "search"})
    first = table(("GET", "/items/search"), ("GET", "/items/{id}"))
    assert first.match("GET", "/items/search") == ("GET /items/search", {})


def test_typed_placeholders_are_converted_by_starlettes_convertors() -> None:
    found = table(("GET", "/pages/{n:int}"))
    assert found.match("GET", "/pages/12") == ("GET /pages/{n:int}", {"n": 12})
    assert found.match("GET", "/pages/twelve") is None


def test_each_match_gets_parameters_of_its_own() -> None:
    found = table(("GET", "/items"))
    first = found.match("GET", "/items")
    assert first is not None
    first[1]["id"] = "changed"
    assert found.match("GET", "/items") == ("GET /items", {})

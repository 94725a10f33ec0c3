"""Finding a request's route in one dict lookup (or a few regexes), as Starlette's router would.

Starlette's router tries each route in turn, and for each matches its regex
and builds a child scope: its cost grows with every route declared before
the one that answers.  :class:`RouteTable` gives the same answer from tables
made once:

* a path with no placeholder (``/api/products``): a dict keyed by method and
  path, holding whichever route Starlette would have picked for it (the
  first, in declaration order, that matches it: a template with a
  placeholder declared earlier can take a path that is also a template);
* any other path: the method's templates with placeholders, tried in
  declaration order with Starlette's own compiled regex and convertors.

It answers only a full match (path and method; ``HEAD`` too where Starlette
takes it for a ``GET`` route).  What it does not find (a 404, a 405, a
trailing slash to redirect, an ops route) is for the Starlette app behind
it, which answers those as before.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from starlette.routing import Route as StarletteRoute

__all__ = ["RouteTable"]

T = TypeVar("T")


class RouteTable(Generic[T]):
    """``(Starlette route, target)`` pairs, matched as Starlette matches them (module docstring)."""

    def __init__(self, routes: Sequence[tuple[StarletteRoute, T]]) -> None:
        self._templated: dict[str, list[tuple[StarletteRoute, T]]] = {}
        for route, target in routes:
            if route.param_convertors:
                for method in route.methods or ():
                    self._templated.setdefault(method, []).append((route, target))
        self._static: dict[tuple[str, str], tuple[T, dict[str, Any]]] = {}
        for route, _ in routes:
            if route.param_convertors:
                continue
            for method in route.methods or ():
                found = self._scan(routes, method, route.path)
                if found is not None:
                    self._static.setdefault((method, route.path), found)

    def match(self, method: str, path: str) -> tuple[T, dict[str, Any]] | None:
        """The target of the route for ``method path``, and its path parameters; None if none."""
        found = self._static.get((method, path))
        if found is not None:
            return found[0], dict(found[1])
        for route, target in self._templated.get(method, ()):
            matched = route.path_regex.match(path)
            if matched is not None:
                return target, _params(route, matched)
        return None

    @staticmethod
    def _scan(
        routes: Sequence[tuple[StarletteRoute, T]], method: str, path: str
    ) -> tuple[T, dict[str, Any]] | None:
        """The first route taking ``method path`` in declaration order (Starlette's rule)."""
        for route, target in routes:
            if route.methods and method not in route.methods:
                continue
            matched = route.path_regex.match(path)
            if matched is not None:
                return target, _params(route, matched)
        return None


def _params(route: StarletteRoute, matched: re.Match[str]) -> dict[str, Any]:
    convertors = route.param_convertors
    return {name: convertors[name].convert(value) for name, value in matched.groupdict().items()}

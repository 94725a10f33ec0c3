"""A route checked against its method's table, and the request parts it turns into arguments.

At start the gateway reads each routed service's method table from the
registry (:class:`~flotilla.registry.base.MethodInfo`: JSON Schemas of the
parameters and the result) and makes one :class:`Binding` per route.  A route
to a method that does not exist, an argument that is not a parameter, or a
required parameter nothing sets, is a :class:`~flotilla.errors.ConfigError`
naming the route, before any request is served.

Per request, :meth:`Binding.arguments` turns the path, query, headers, body
and principal into the method's keyword arguments.  Text (path, query,
headers) is converted to the type the schema gives; anything else the callee
validates, and its ``InvalidArgument`` (422) names the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flotilla.errors import ConfigError, InvalidArgument
from flotilla.gateway.routes import Route, TokenRoute
from flotilla.registry.base import MethodInfo

__all__ = ["NO_BODY", "Binding", "bind"]

_INTEGER = re.compile(r"-?[0-9]+")
"""An integer in a path or query: ASCII digits.  ``int()`` alone also takes ``" 1"``,
``"+1"``, ``"1_000"`` and other scripts' digits (Arabic-Indic ones, say), so one id would
have many URLs."""

NO_BODY: Any = object()
"""The body of a request that sent none."""


@dataclass(frozen=True)
class Binding:
    """A :class:`Route` whose method is known (made by :func:`bind`)."""

    route: Route
    info: MethodInfo

    @property
    def is_token_route(self) -> bool:
        return isinstance(self.route, TokenRoute)

    def parameter(self, name: str) -> dict[str, Any]:
        """The JSON Schema of one parameter ({} when unknown)."""
        schema: dict[str, Any] = self.info.params.get("properties", {}).get(name, {})
        return schema

    def arguments(
        self,
        path: Mapping[str, str],
        query: Callable[[str], list[str]],
        headers: Mapping[str, str],
        body: Any,
        subject: str | None,
    ) -> dict[str, Any]:
        """The call's arguments from the request's parts (``query(name)``: every value given).

        Raises :class:`InvalidArgument` naming the part that does not fit.
        """
        route = self.route
        args: dict[str, Any] = {}
        for placeholder in route.placeholders:
            arg = route.path_arg(placeholder)
            args[arg] = self._convert(path[placeholder], arg, f"path parameter {placeholder!r}")
        for name, arg in route.query_args.items():
            # ``?limit=`` means "not given" for a parameter that is not text.
            values = [value for value in query(name) if value or self._takes_text(arg)]
            if values:
                args[arg] = self._from_text(values, arg, f"query parameter {name!r}")
        for header, arg in route.headers.items():
            value = headers.get(header.lower())
            if value is not None:
                args[arg] = self._convert(value, arg, f"header {header!r}")
        if route.principal_arg and subject is not None:
            args[route.principal_arg] = subject
        if body is not NO_BODY and route.body is not False:
            args.update(self._from_body(body, set(args) | set(route.bound_args())))
        return args

    def _takes_text(self, arg: str) -> bool:
        types = _types(_resolve(self.parameter(arg), self.info.params))
        return not types or "string" in types

    def _from_body(self, body: Any, bound: set[str]) -> dict[str, Any]:
        if isinstance(self.route.body, str):
            return {self.route.body: body}
        if not isinstance(body, dict):
            raise InvalidArgument(f"the body must be a JSON object, not {_json_type(body)}")
        taken = sorted(bound & set(body))
        if taken:
            raise InvalidArgument(f"field {taken[0]!r} cannot be set in the body of this route")
        return body

    def _from_text(self, values: list[str], arg: str, where: str) -> Any:
        schema = _resolve(self.parameter(arg), self.info.params)
        if "array" in _types(schema):
            items = _resolve(schema.get("items", {}), self.info.params)
            return [_convert_text(value, items, f"{where}[{i}]") for i, value in enumerate(values)]
        if len(values) > 1:
            raise InvalidArgument(f"{where} is given {len(values)} times; it takes one value")
        return _convert_text(values[0], schema, where)

    def _convert(self, text: str, arg: str, where: str) -> Any:
        return _convert_text(text, _resolve(self.parameter(arg), self.info.params), where)


def bind(route: Route, methods: Mapping[str, MethodInfo] | None) -> Binding:
    """Check ``route`` against its service's method table (None: the service has none)."""
    service, _, method = route.target.partition(".")

    def bad(reason: str) -> ConfigError:
        return ConfigError(f"route {route.name} -> {route.target}: {reason}")

    if methods is None:
        raise bad(f"service {service!r} publishes no method table (is it running?)")
    info = methods.get(method)
    if info is None:
        known = ", ".join(sorted(methods)) or "none"
        raise bad(f"{service!r} has no method {method!r} (its methods: {known})")
    properties = info.params.get("properties", {})
    names = ", ".join(sorted(properties)) or "none"
    wanted = dict(route.bound_args())
    if isinstance(route.body, str):
        wanted[route.body] = "the body"
    for arg, source in wanted.items():
        if arg not in properties:
            raise bad(f"argument {arg!r} ({source}) is not a parameter (its parameters: {names})")
    if route.body is not None:  # no body spread over the rest: all required must be set
        missing = sorted(set(info.params.get("required", [])) - set(wanted))
        if missing:
            raise bad(f"required parameter(s) {missing} are set by nothing in the route")
    return Binding(route, info)


# -- text to typed values ------------------------------------------------------------------


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``$ref`` (``#/$defs/X``) once."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        resolved: dict[str, Any] = root.get("$defs", {}).get(ref.rpartition("/")[2], {})
        return resolved
    return schema


def _types(schema: dict[str, Any]) -> set[str]:
    """The JSON types a schema allows (through ``anyOf``; empty: anything)."""
    kind = schema.get("type")
    found = {kind} if isinstance(kind, str) else set(kind or ())
    for option in schema.get("anyOf", ()):
        found |= _types(option)
    return found


def _convert_text(text: str, schema: dict[str, Any], where: str) -> Any:
    """``text`` as the scalar ``schema`` wants; text stays text where a string is allowed."""
    types = _types(schema)
    if not types or "string" in types:
        return text
    if "integer" in types:
        number = _integer(text)
        if number is not None:
            return number
        if "number" not in types:
            raise InvalidArgument(f"{where}: expected an integer, got {text!r}")
    if "number" in types:
        try:
            return float(text)
        except ValueError:
            raise InvalidArgument(f"{where}: expected a number, got {text!r}") from None
    if "boolean" in types:
        if text.lower() in ("true", "1"):
            return True
        if text.lower() in ("false", "0"):
            return False
        raise InvalidArgument(f"{where}: expected true or false, got {text!r}")
    if "null" in types and text in ("", "null"):
        return None
    return text  # an object or array from text: the callee says what is wrong


def _integer(text: str) -> int | None:
    """``text`` as an integer if it is one in ASCII digits, else None."""
    if not _INTEGER.fullmatch(text):
        return None
    try:
        return int(text)
    except ValueError:
        return None  # more digits than Python converts: no id is that long


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")

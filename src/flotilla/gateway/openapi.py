"""The OpenAPI 3.1 document of a gateway, made from its routes and the methods' JSON Schemas.

Nothing is written twice: each route's parameters, request body and response
come from the method table its service publishes (msgspec's JSON Schemas,
which OpenAPI 3.1 takes as they are).  The named types of each service
(``$defs``) become ``components.schemas`` entries prefixed with the service
(``orders.Order``), so two services' ``Item`` do not collide.  Every
operation lists the error answers it can give, all with the one error body.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from flotilla.gateway.binding import Binding

__all__ = ["openapi_document"]

_NOT_NAME = re.compile(r"[^A-Za-z0-9]+")
_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
_TOKEN_SCHEMA = {
    "type": "object",
    "required": ["access_token", "token_type", "expires_in"],
    "properties": {
        "access_token": {"type": "string"},
        "token_type": {"type": "string", "const": "bearer"},
        "expires_in": {"type": "integer", "description": "seconds"},
    },
}
# Answers any route can give, besides its own success.
_COMMON_ERRORS = {
    "422": "The input does not validate (the message names the field)",
    "429": "Too many requests (see Retry-After)",
    "500": "Internal error (the message gives the request id)",
    "503": "The service is unavailable",
    "504": "The call's deadline passed",
}


def openapi_document(
    bindings: Sequence[Binding], *, title: str = "Flotilla gateway", version: str = "0"
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``bindings``."""
    schemas: dict[str, Any] = {"Error": _ERROR_SCHEMA, "Token": _TOKEN_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for binding in bindings:
        service = binding.route.target.partition(".")[0]
        params = _hoist(binding.info.params, service, schemas)
        result = _hoist(binding.info.result, service, schemas)
        operation = _operation(binding, params, result)
        paths.setdefault(binding.route.template, {})[binding.route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


def _operation(binding: Binding, params: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    route = binding.route
    operation: dict[str, Any] = {
        # From the method and path, which are unique together (a target may have two routes).
        "operationId": (route.method.lower() + _NOT_NAME.sub("_", route.template)).rstrip("_"),
        "summary": route.summary or route.target,
        "parameters": _parameters(binding, params),
    }
    body = _request_body(binding, params)
    if body is not None:
        operation["requestBody"] = body
    operation["responses"] = _responses(binding, result, has_body=body is not None)
    if route.auth is not None:
        operation["security"] = [{"bearer": []}]
    return operation


_TOKEN_SCHEMA_REF = {"$ref": "#/components/schemas/Token"}


def _responses(binding: Binding, result: dict[str, Any], *, has_body: bool) -> dict[str, Any]:
    """The route's success answer, then each error answer it can give."""
    route = binding.route
    success = _TOKEN_SCHEMA_REF if binding.is_token_route else result
    responses: dict[str, Any] = {
        str(route.status): {
            "description": "Success",
            "content": {"application/json": {"schema": success}},
        }
    }
    errors = dict(_COMMON_ERRORS)
    if route.placeholders:
        errors["404"] = "No such resource"
    if has_body:
        errors["400"] = "The body is not valid JSON"
        errors["413"] = "The body is over the size limit"
    if route.auth is not None or binding.is_token_route:
        errors["401"] = "No valid bearer token (or, on a login route, bad credentials)"
    if route.auth not in (None, "user"):
        errors["403"] = f"The token lacks the role {route.auth!r}"
    for status in sorted(errors):
        responses[status] = {
            "description": errors[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    return responses


def _parameters(binding: Binding, params: dict[str, Any]) -> list[dict[str, Any]]:
    route = binding.route
    properties = params.get("properties", {})
    required = set(params.get("required", []))
    found = [
        {"name": p, "in": "path", "required": True, "schema": properties[route.path_arg(p)]}
        for p in route.placeholders
    ]
    for name, arg in route.query_args.items():
        found.append(
            {"name": name, "in": "query", "required": arg in required, "schema": properties[arg]}
        )
    for header, arg in route.headers.items():
        found.append(
            {"name": header, "in": "header", "required": arg in required, "schema": properties[arg]}
        )
    return found


def _request_body(binding: Binding, params: dict[str, Any]) -> dict[str, Any] | None:
    route = binding.route
    properties = params.get("properties", {})
    if route.body is False:
        return None
    if isinstance(route.body, str):
        required = route.body in params.get("required", [])
        schema = properties[route.body]
    else:
        bound = set(route.bound_args())
        rest = {name: value for name, value in properties.items() if name not in bound}
        if not rest:
            return None
        needed = [name for name in params.get("required", []) if name not in bound]
        schema = {"type": "object", "properties": rest, "required": needed}
        required = bool(needed)
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _hoist(schema: dict[str, Any], service: str, schemas: dict[str, Any]) -> dict[str, Any]:
    """``schema`` without its ``$defs``, which go to ``schemas`` as ``service.Name``."""
    schema = dict(schema)
    for name, definition in schema.pop("$defs", {}).items():
        schemas[f"{service}.{name}"] = _rewrite(definition, service)
    rewritten: dict[str, Any] = _rewrite(schema, service)
    return rewritten


def _rewrite(value: Any, service: str) -> Any:
    """``value`` with each ``#/$defs/X`` reference pointing at ``components.schemas``."""
    if isinstance(value, dict):
        out = {key: _rewrite(item, service) for key, item in value.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            out["$ref"] = f"#/components/schemas/{service}.{ref.rpartition('/')[2]}"
        return out
    if isinstance(value, list):
        return [_rewrite(item, service) for item in value]
    return value

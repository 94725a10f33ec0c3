"""The OpenAPI document: valid OpenAPI 3.1, made from the routes and the method tables."""

from __future__ import annotations

from typing import Any

import httpx
from openapi_spec_validator import validate

from flotilla.gateway.binding import bind
from flotilla.gateway.openapi import openapi_document
from flotilla.gateway.routes import Route
from flotilla.registry.base import MethodInfo


async def test_the_document_is_valid_openapi_31(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema
    assert document["openapi"] == "3.1.0"


async def test_operations_carry_parameters_bodies_responses_and_security(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    get_note = document["paths"]["/notes/{id}"]["get"]
    assert get_note["parameters"] == [
        {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
    ]
    assert get_note["security"] == [{"bearer": []}]
    assert {"200", "401", "404", "422", "429", "500", "503", "504"} <= set(get_note["responses"])
    create = document["paths"]["/notes"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["text"]
    assert set(body["properties"]) == {"text"}  # owner and the key come from elsewhere
    assert body["properties"]["text"] == {"type": "string", "minLength": 1, "maxLength": 100}
    assert create["parameters"][0]["name"] == "Idempotency-Key"
    assert create["parameters"][0]["in"] == "header"
    assert "201" in create["responses"]
    search = document["paths"]["/notes"]["get"]
    assert [p["name"] for p in search["parameters"]] == ["text", "limit", "tags", "exact"]
    assert "security" not in search
    assert "403" in document["paths"]["/admin/whoami"]["get"]["responses"]
    token = document["paths"]["/auth/token"]["post"]["responses"]["200"]
    assert token["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Token"}
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_named_types_become_components_prefixed_by_service() -> None:
    item = {"type": "object", "properties": {"sku": {"type": "string"}}, "required": ["sku"]}
    info = MethodInfo(
        name="add",
        params={
            "type": "object",
            "properties": {"item": {"$ref": "#/$defs/Item"}},
            "required": ["item"],
            "$defs": {"Item": item},
        },
        result={"$ref": "#/$defs/Item", "$defs": {"Item": item}},
    )
    route = Route("POST", "/cart", "carts.add", body="item")
    document: dict[str, Any] = openapi_document([bind(route, {"add": info})])
    validate(document)
    assert document["components"]["schemas"]["carts.Item"] == item
    operation = document["paths"]["/cart"]["post"]
    ref = {"$ref": "#/components/schemas/carts.Item"}
    assert operation["requestBody"]["content"]["application/json"]["schema"] == ref
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == ref


async def test_docs_is_a_self_contained_page(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert 'fetch("openapi.json")' in response.text
    assert "http://" not in response.text
    assert "https://" not in response.text

"""The gateway's own routes (health, readiness, metrics), CORS, and life before it is ready."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from flotilla.gateway import Gateway, GatewayConfig
from flotilla.gateway.server import HttpServer
from flotilla.testing import Cluster

from .conftest import running_gateway
from .notes_system import ROUTES, TOKENS, Notes, Users


def samples(text: str, name: str) -> dict[tuple[str, ...], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value  # type: ignore[arg-type]
    return found


async def test_health_and_readiness_with_instances_per_service(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "alive", "state": "ready"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "instances": {"notes": 1, "users": 1}}


async def test_metrics_count_answers_by_route_template_and_status(
    client: httpx.AsyncClient,
) -> None:
    await client.get("/notes?limit=1")
    await client.get("/notes?limit=x")
    await client.get("/nowhere")
    text = (await client.get("/metrics")).text
    counts = samples(text, "flotilla_gateway_requests_total")
    assert counts[(("route", "GET /notes"), ("status", "200"))] == 1
    assert counts[(("route", "GET /notes"), ("status", "422"))] == 1
    assert counts[(("route", "unmatched"), ("status", "404"))] == 1
    latency = samples(text, "flotilla_gateway_request_seconds_count")
    assert latency[(("route", "GET /notes"),)] == 2


async def test_cors_answers_a_preflight_for_an_allowed_origin() -> None:
    async with running_gateway(cors_origins=("https://shop.example",)) as (_, client):
        preflight = await client.options(
            "/notes",
            headers={
                "Origin": "https://shop.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,idempotency-key",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://shop.example"
        other = await client.get("/notes", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


async def test_before_start_routes_answer_503_and_readyz_says_why() -> None:
    async with Cluster() as cluster:
        await cluster.add(Notes())
        await cluster.add(Users())
        gateway = Gateway(cluster.client_node, ROUTES, GatewayConfig(tokens=TOKENS))
        server = HttpServer(gateway.app)
        await server.start()
        try:
            async with httpx.AsyncClient(base_url=f"http://{server.address}") as client:
                early = await client.get("/notes")
                assert early.status_code == 503
                assert early.headers["retry-after"] == "1"
                assert (await client.get("/readyz")).json()["status"] == "made"
                await gateway.start()
                assert (await client.get("/notes")).status_code == 200
                await gateway.aclose()
                assert (await client.get("/notes")).status_code == 503
                assert (await client.get("/readyz")).status_code == 503
        finally:
            await server.stop()


async def test_a_routed_request_from_an_allowed_origin_gets_cors_headers() -> None:
    async with running_gateway(cors_origins=("https://shop.example",), rate_limit=None) as (
        _,
        client,
    ):
        allowed = await client.get("/notes?limit=1", headers={"Origin": "https://shop.example"})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
        assert allowed.headers["x-request-id"]
        plain = await client.get("/notes?limit=1")
        assert plain.status_code == 200
        assert "access-control-allow-origin" not in plain.headers


async def test_head_on_a_get_route_answers_its_head_without_a_body(
    client: httpx.AsyncClient,
) -> None:
    response = await client.head("/notes?limit=1")
    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["content-length"]) > 0

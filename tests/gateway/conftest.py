"""A gateway over real HTTP (uvicorn on a free port) in front of a Cluster running notes_system."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from flotilla.gateway import Gateway, GatewayConfig
from flotilla.gateway.server import HttpServer
from flotilla.testing import Cluster

from .notes_system import ROUTES, TOKENS, Notes, Users


@asynccontextmanager
async def running_gateway(**options: Any) -> AsyncIterator[tuple[Gateway, httpx.AsyncClient]]:
    """A started gateway with ``GatewayConfig(**options)`` and a client for it."""
    options.setdefault("tokens", TOKENS)
    routes = options.pop("routes", ROUTES)
    limiter = options.pop("limiter_object", None)
    async with Cluster() as cluster:
        await cluster.add(Notes())
        await cluster.add(Users())
        gateway = Gateway(cluster.client_node, routes, GatewayConfig(**options), limiter=limiter)
        server = HttpServer(gateway.app)
        await server.start()
        try:
            await gateway.start()
            async with httpx.AsyncClient(base_url=f"http://{server.address}") as client:
                yield gateway, client
        finally:
            await server.stop()
            await gateway.aclose()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with running_gateway(rate_limit=None) as (_, http):
        yield http


@pytest.fixture
def token() -> Callable[..., str]:
    """``token("ada", roles=("admin",))``: a valid bearer token's header value."""
    from flotilla.gateway import Tokens

    def make(subject: str = "ada", roles: tuple[str, ...] = ()) -> str:
        return f"Bearer {Tokens(TOKENS).issue(subject, roles)}"

    return make

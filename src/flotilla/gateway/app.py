"""The gateway: an ASGI app that maps HTTP routes onto RPC methods, with its own ops routes.

::

    async with Node(config=node_config) as node:            # a pure client node
        gateway = Gateway(node, ROUTES, GatewayConfig(tokens=TokenSettings(secret=...)))
        await gateway.start()     # waits for the routed services' method tables, binds
        ...                       # serve gateway.app (flotilla.gateway.server does, on uvicorn)
        await gateway.aclose()

Built on Starlette: its router, requests and CORS middleware are small,
well-tested pieces that do exactly this job (path templates, 404/405, query
parsing, streaming bodies), so the gateway holds only what is Flotilla's own.

The app, outermost first::

    Observe (request id, metrics) -> CORS (when configured) -> Starlette router
        -> a RouteHandler per route (auth, limits, body, call) | ops routes

Its life::

    made --start()--> binding (waiting for method tables) --> ready --aclose()--> closed

Before it is ready (and after it is closed) every routed request answers 503
and ``/readyz`` says why; ``/healthz`` answers 200 as long as the process
serves at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route as StarletteRoute

from flotilla.errors import ConfigError, FlotillaError, Unavailable
from flotilla.gateway.auth import Tokens
from flotilla.gateway.binding import Binding, bind
from flotilla.gateway.config import GatewayConfig
from flotilla.gateway.docs import docs_page
from flotilla.gateway.handler import Edge, RouteHandler
from flotilla.gateway.metrics import CONTENT_TYPE, GatewayMetrics
from flotilla.gateway.observe import ROUTE_KEY, Observe, request_id_of
from flotilla.gateway.openapi import openapi_document
from flotilla.gateway.problems import MethodNotAllowed, NoRoute, error_response
from flotilla.gateway.ratelimit import Limiter, open_limiter
from flotilla.gateway.routes import Route, TokenRoute
from flotilla.registry.base import MethodInfo
from flotilla.runtime.node import Node

__all__ = ["Gateway"]

log = logging.getLogger("flotilla.gateway")

_OPS_PATHS = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs")
# How often start looks again for a service's method table while it waits.
_TABLE_POLL = 0.05


class Gateway:
    """Routes HTTP requests to ``node``'s calls (see the module docstring).

    ``limiter`` replaces the one ``config.limiter`` names (a test's, say).
    Raises :class:`ConfigError` for routes that cannot work: two on one
    method and path, a path taken by an ops route, ``auth`` without token
    settings.
    """

    def __init__(
        self,
        node: Node,
        routes: Sequence[Route],
        config: GatewayConfig | None = None,
        *,
        limiter: Limiter | None = None,
    ) -> None:
        self.node = node
        self.routes = list(routes)
        self.config = config = config or GatewayConfig()
        _check_routes(self.routes, config)
        self.tokens = Tokens(config.tokens) if config.tokens is not None else None
        self.limiter = limiter or open_limiter(config.limiter, clock=node.clock)
        self.metrics = GatewayMetrics()
        self.edge = Edge(
            invoker=node.caller,
            tokens=self.tokens,
            limiter=self.limiter,
            rate_limit=config.rate_limit,
            max_body=config.max_body,
            trusted_proxies=config.trusted_proxies,
        )
        self.bindings: list[Binding] = []
        self.state = "made"
        self._handlers: dict[str, RouteHandler] = {}
        self._document = b"{}"
        self.app = Observe(self._starlette(), self.metrics)

    async def start(self) -> None:
        """Bind every route to its method's table; ready once all are bound.

        Waits up to ``config.startup_timeout`` for each routed service to
        publish its table (it may be starting beside the gateway).  Raises
        :class:`ConfigError` for a route that does not fit its method, and
        :class:`Unavailable` for a service that never showed up.
        """
        self.state = "binding"
        tables = {}
        for service in sorted({route.target.partition(".")[0] for route in self.routes}):
            tables[service] = await self._method_table(service)
        self.bindings = [
            bind(route, tables[route.target.partition(".")[0]]) for route in self.routes
        ]
        self._handlers = {
            binding.route.name: RouteHandler(binding, self.edge) for binding in self.bindings
        }
        document = openapi_document(self.bindings, title=self.config.title)
        self._document = msgspec.json.encode(document)
        self.state = "ready"
        log.info("gateway ready: %d route(s) bound", len(self.bindings))

    async def _method_table(self, service: str) -> dict[str, MethodInfo]:
        deadline = time.monotonic() + self.config.startup_timeout
        endpoints = await self.node.caller.directory.open(service, deadline=deadline)
        # The watch fills the table when an instance registers: poll it, bounded.
        while not endpoints.methods:
            if time.monotonic() >= deadline:
                raise Unavailable(
                    f"service {service!r} published no method table within "
                    f"{self.config.startup_timeout:g} s: is it running?"
                )
            await asyncio.sleep(_TABLE_POLL)
        return dict(endpoints.methods)

    async def aclose(self) -> None:
        """Stop answering routed requests (503) and release the limiter; idempotent."""
        if self.state == "closed":
            return
        self.state = "closed"
        await self.limiter.aclose()

    # -- the app ----------------------------------------------------------------------------

    def _starlette(self) -> Starlette:
        self._routed = [
            StarletteRoute(route.template, self._endpoint(route.name), methods=[route.method])
            for route in self.routes
        ]
        routes = [
            *self._routed,
            StarletteRoute("/healthz", self._healthz, methods=["GET"]),
            StarletteRoute("/readyz", self._readyz, methods=["GET"]),
            StarletteRoute("/metrics", self._metrics, methods=["GET"]),
            StarletteRoute("/openapi.json", self._openapi, methods=["GET"]),
            StarletteRoute("/docs", self._docs, methods=["GET"]),
        ]
        middleware = [self._cors()] if self.config.cors_origins else []
        return Starlette(
            routes=routes,
            middleware=middleware,
            exception_handlers={HTTPException: self._http_error},
        )

    def _cors(self) -> Middleware:
        """Starlette's CORS middleware for the configured origins and the routes' methods."""
        return Middleware(
            CORSMiddleware,
            allow_origins=list(self.config.cors_origins),
            allow_methods=sorted({route.method for route in self.routes} | {"GET"}),
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Idempotency-Key",
                "X-Request-Id",
                "traceparent",
            ],
            expose_headers=["X-Request-Id", "Retry-After"],
        )

    def _endpoint(self, name: str) -> Callable[[Request], Awaitable[Response]]:
        """The Starlette endpoint of route ``name``: its handler once bound, 503 before."""

        async def endpoint(request: Request) -> Response:
            handler = self._handlers.get(name)
            if handler is None or self.state != "ready":
                request.scope[ROUTE_KEY] = name
                error = Unavailable(f"the gateway is {self.state}, not ready")
                return error_response(error, request_id_of(request.scope), {"Retry-After": "1"})
            return await handler(request)

        return endpoint

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        """The router's own refusals (no such path, wrong method), in the one error shape."""
        assert isinstance(exc, HTTPException)
        error: FlotillaError
        headers: dict[str, str] = {}
        if exc.status_code == 405:
            error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
            # Starlette names the methods of the first route on the path only.
            allowed = {
                method
                for route in self._routed
                if route.path_regex.match(request.url.path)
                for method in route.methods or ()
            }
            headers = {"Allow": ", ".join(sorted(allowed))}
        else:
            error = NoRoute(f"no route for {request.method} {request.url.path}")
        return error_response(error, request_id_of(request.scope), headers)

    # -- ops routes -------------------------------------------------------------------------

    async def _healthz(self, request: Request) -> Response:
        request.scope[ROUTE_KEY] = "GET /healthz"
        return _json({"status": "alive", "state": self.state})

    async def _readyz(self, request: Request) -> Response:
        request.scope[ROUTE_KEY] = "GET /readyz"
        services = {}
        for service in sorted({route.target.partition(".")[0] for route in self.routes}):
            endpoints = self.node.caller.directory.get(service)
            services[service] = len(endpoints.available) if endpoints is not None else 0
        ready = self.state == "ready" and self.node.state == "running"
        body = {"status": "ready" if ready else self.state, "instances": services}
        return _json(body, 200 if ready else 503)

    async def _metrics(self, request: Request) -> Response:
        request.scope[ROUTE_KEY] = "GET /metrics"
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    async def _openapi(self, request: Request) -> Response:
        request.scope[ROUTE_KEY] = "GET /openapi.json"
        return Response(self._document, media_type="application/json")

    async def _docs(self, request: Request) -> Response:
        request.scope[ROUTE_KEY] = "GET /docs"
        return HTMLResponse(docs_page(self.config.title))


def _json(body: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(body), status, media_type="application/json")


def _check_routes(routes: list[Route], config: GatewayConfig) -> None:
    seen: set[str] = set()
    for route in routes:
        if route.name in seen:
            raise ConfigError(f"route {route.name} is declared twice")
        seen.add(route.name)
        if route.template in _OPS_PATHS:
            raise ConfigError(f"route {route.name}: {route.template} is the gateway's own")
        needs_tokens = route.auth is not None or isinstance(route, TokenRoute)
        if needs_tokens and config.tokens is None:
            raise ConfigError(f"route {route.name} needs tokens: set GatewayConfig.tokens")

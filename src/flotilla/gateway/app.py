"""The gateway: an ASGI app that maps HTTP routes onto RPC methods, with its own ops routes.

::

    async with Node(config=node_config) as node:            # a pure client node
        gateway = Gateway(node, ROUTES, GatewayConfig(tokens=TokenSettings(secret=...)))
        await gateway.start()     # waits for the routed services' method tables, binds
        ...                       # serve gateway.app (flotilla.gateway.server does, on uvicorn)
        await gateway.aclose()

Built on Starlette where it earns its place: its router's rules (path
templates, 404/405, ``HEAD``, trailing-slash redirects), its CORS middleware,
the ops routes and docs.  A routed request skips it: Starlette's middleware
stack, router walk and request/response objects cost more per request than
the gateway's own work, so a precompiled :class:`RouteTable` finds the route
Starlette would have found and hands the raw ASGI request straight to its
:class:`RouteHandler`.

The app, outermost first::

    Observe (request id, metrics) -> RouteTable: a routed request -> its RouteHandler
        (auth, limits, body, call)
      | anything else, or any request with an Origin when CORS is configured
        -> Starlette: CORS (when configured) -> router -> the same RouteHandler | ops routes

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
from collections.abc import Sequence
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route as StarletteRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from flotilla.errors import ConfigError, FlotillaError, Unavailable
from flotilla.gateway.answer import send_json
from flotilla.gateway.auth import Tokens
from flotilla.gateway.binding import Binding, bind
from flotilla.gateway.config import GatewayConfig
from flotilla.gateway.docs import docs_page
from flotilla.gateway.handler import Edge, RouteHandler
from flotilla.gateway.metrics import CONTENT_TYPE, GatewayMetrics
from flotilla.gateway.observe import ROUTE_KEY, Observe, request_id_of
from flotilla.gateway.openapi import openapi_document
from flotilla.gateway.problems import MethodNotAllowed, NoRoute, error_answer, error_response
from flotilla.gateway.ratelimit import Limiter, open_limiter
from flotilla.gateway.routes import Route, TokenRoute
from flotilla.gateway.table import RouteTable
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
        starlette = self._starlette()
        table = RouteTable([(route, route.app) for route in self._routed])
        self.app = Observe(_Front(table, starlette, cors=bool(config.cors_origins)), self.metrics)

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
            StarletteRoute(route.template, _Routed(self, route.name), methods=[route.method])
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


class _Routed:
    """The ASGI app of route ``name``: its handler once the gateway is ready, 503 before."""

    def __init__(self, gateway: Gateway, name: str) -> None:
        self.gateway = gateway
        self.name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self.gateway
        handler = gateway._handlers.get(self.name)
        if handler is not None and gateway.state == "ready":
            await handler(scope, receive, send)
            return
        scope[ROUTE_KEY] = self.name
        error = Unavailable(f"the gateway is {gateway.state}, not ready")
        status, body = error_answer(error, request_id_of(scope))
        await send_json(send, status, body, ((b"retry-after", b"1"),))


class _Front:
    """Routed requests straight to their route's app; the rest to Starlette (module docstring).

    With CORS configured, a request with an ``Origin`` goes through Starlette,
    whose CORS middleware answers preflights and adds the headers; one without
    needs neither (the middleware passes it through untouched).
    """

    def __init__(self, table: RouteTable[ASGIApp], starlette: ASGIApp, *, cors: bool) -> None:
        self.table = table
        self.starlette = starlette
        self.cors = cors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not (self.cors and _has_origin(scope)):
            found = self.table.match(scope["method"], scope["path"])
            if found is not None:
                app, scope["path_params"] = found
                await app(scope, receive, send)
                return
        await self.starlette(scope, receive, send)


def _has_origin(scope: Scope) -> bool:
    return any(name == b"origin" for name, _ in scope["headers"])


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

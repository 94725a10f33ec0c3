"""Running a gateway as a process: what ``flotilla gateway`` (and ``flotilla run``) execute.

The process is a pure-client node (it hosts no service, so it registers
nothing) with the gateway's app served on uvicorn.  Its life::

    node starts -> HTTP listens (routes answer 503, /readyz "binding")
      -> routes bound to the method tables (ready) -> ... SIGTERM/SIGINT/SIGHUP
      -> HTTP stops (finishes requests in flight) -> gateway closes -> node closes

A mistake in the routes (a module that does not import, a route that does
not fit its method) is a :class:`~flotilla.errors.ConfigError`, which
``flotilla gateway`` turns into exit code 2: the supervisor does not restart
it.  A routed service that never shows up is ``Unavailable`` (exit 1: it is
restarted with backoff, and may find it next time).

The token key: the variable ``jwt_secret_env`` names (``FLOTILLA_JWT_SECRET``
by default), else ``jwt.key`` in the data directory, generated on first use
(readable by its owner only), so that every restart signs with the same key.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import msgspec

from flotilla.aio import wait_first
from flotilla.errors import ConfigError
from flotilla.gateway.app import Gateway
from flotilla.gateway.auth import TokenSettings
from flotilla.gateway.binding import bind
from flotilla.gateway.config import GatewayConfig
from flotilla.gateway.routes import RateLimit, Route
from flotilla.gateway.server import HttpServer
from flotilla.registry.base import MethodInfo
from flotilla.runtime.gateway_spec import GatewaySpec, gateway_port
from flotilla.runtime.named import import_named
from flotilla.runtime.node import Node
from flotilla.runtime.serve import stopped_by
from flotilla.runtime.settings import Settings, load_secret

__all__ = ["check_routes", "gateway_config", "load_routes", "run_gateway"]

log = logging.getLogger("flotilla.gateway")

_KEY_FILE = "jwt.key"


def load_routes(spec: str) -> list[Route]:
    """Import ``"package.module:ATTRIBUTE"``, a list of :class:`Route`."""
    routes = import_named(spec, "routes")
    if not isinstance(routes, list | tuple) or not routes:
        raise ConfigError(f"routes {spec!r} is not a non-empty list of flotilla.gateway routes")
    for index, route in enumerate(routes):
        if not isinstance(route, Route):
            raise ConfigError(f"routes {spec!r}[{index}] is a {type(route).__name__}, not a Route")
    return list(routes)


def check_routes(spec: str, tables: Mapping[str, list[MethodInfo]]) -> list[Route]:
    """Load the routes ``spec`` names and bind each to ``tables`` (service -> method table).

    What ``flotilla run`` checks before it starts anything (the classes'
    tables stand in for the registry's).  Raises :class:`ConfigError` naming
    every route that does not fit.
    """
    routes = load_routes(spec)
    problems = []
    for route in routes:
        service = route.target.partition(".")[0]
        if service not in tables:
            known = ", ".join(sorted(tables)) or "none"
            problems.append(
                f"route {route.name} -> {route.target}: the system runs no service "
                f"{service!r} (its services: {known})"
            )
            continue
        try:
            bind(route, {info.name: info for info in tables[service]})
        except ConfigError as exc:
            problems.append(exc.message)
    if problems:
        raise ConfigError("; ".join(problems))
    return routes


def gateway_config(spec: GatewaySpec, environ: Mapping[str, str], data_dir: Path) -> GatewayConfig:
    """The gateway's configuration from its ``[gateway]`` table and the environment."""
    secret = environ.get(spec.jwt_secret_env) or load_secret(data_dir, _KEY_FILE).decode()
    tokens = TokenSettings(
        secret=secret, audience=spec.audience, issuer=spec.issuer, ttl=spec.token_ttl
    )
    return GatewayConfig(
        title=spec.title,
        max_body=spec.max_body,
        tokens=tokens,
        rate_limit=RateLimit(rate=spec.rate, burst=spec.burst) if spec.rate > 0 else None,
        limiter=spec.limiter,
        cors_origins=tuple(spec.cors_origins),
        trusted_proxies=tuple(spec.trusted_proxies),
        startup_timeout=spec.startup_timeout,
    )


async def run_gateway(
    spec: GatewaySpec,
    settings: Settings,
    *,
    environ: Mapping[str, str] | None = None,
    parent: int | None = None,
) -> None:
    """Serve the gateway ``spec`` describes until a stop signal (or ``parent`` dies)."""
    environ = os.environ if environ is None else environ
    routes = load_routes(spec.routes)
    config = gateway_config(spec, environ, settings.data_dir)
    port = gateway_port(spec, environ)
    # The gateway answers its own probes; a second (ops) port would serve no one.
    node = Node(config=msgspec.structs.replace(settings, ops_port=None).node_config())
    stop = asyncio.Event()
    async with stopped_by(stop.set, parent=parent):
        await node.start()
        try:
            await _serve(node, routes, config, spec.host, port, stop)
        finally:
            await node.aclose()


async def _serve(
    node: Node,
    routes: list[Route],
    config: GatewayConfig,
    host: str,
    port: int,
    stop: asyncio.Event,
) -> None:
    gateway = Gateway(node, routes, config)
    server = HttpServer(gateway.app, host=host, port=port)
    await server.start()
    log.info("gateway listening on http://%s (%d routes)", server.address, len(routes))
    try:
        await wait_first(gateway.start(), stop.wait())
        await stop.wait()
        log.info("gateway stopping")
    finally:
        await server.stop()
        await gateway.aclose()

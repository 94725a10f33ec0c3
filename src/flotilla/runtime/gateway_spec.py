"""The ``[gateway]`` table of a system file: the HTTP gateway ``flotilla run`` starts.

::

    [gateway]
    routes = "shop.routes:ROUTES"       # module:ATTRIBUTE, a list of flotilla.gateway routes
    port = 8080                         # optional; FLOTILLA_GATEWAY_PORT / run --port override
    # host = "127.0.0.1"
    # title = "Shop API"                # the OpenAPI document's title
    # max_body = 1048576                # bytes
    # rate = 50.0                       # requests/s per client (0: no limit) ...
    # burst = 100                       # ... in bursts of up to this many
    # limiter = "redis://127.0.0.1:6379/0"   # shared buckets; default memory://
    # cors_origins = ["https://shop.example"]
    # trusted_proxies = ["10.0.0.5"]    # peers whose X-Forwarded-For names the client
    # jwt_secret_env = "SHOP_JWT_SECRET"     # else FLOTILLA_JWT_SECRET, else a key
    #                                          generated in the data directory (jwt.key)
    # token_ttl = 3600.0
    # audience = "shop"  issuer = "shop"
    # env = { ... }                     # extra environment of the gateway's process

This module holds the data only (the runtime does not import the gateway,
which needs the ``gateway`` extra); :mod:`flotilla.gateway.process` runs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

import msgspec

from flotilla.errors import ConfigError

__all__ = ["GATEWAY_ENTRY", "GatewaySpec", "gateway_port"]

GATEWAY_ENTRY = "gateway"
"""The gateway's name in process names (``gateway.1``) and the status table."""

_Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
_Positive = Annotated[float, msgspec.Meta(gt=0)]


class GatewaySpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``[gateway]`` table (see the module docstring)."""

    routes: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")]
    host: str = "127.0.0.1"
    port: _Port = 8080
    title: str = "Flotilla gateway"
    max_body: Annotated[int, msgspec.Meta(ge=1)] = 1 << 20
    rate: Annotated[float, msgspec.Meta(ge=0)] = 50.0
    burst: Annotated[int, msgspec.Meta(ge=1)] = 100
    limiter: str = "memory://"
    cors_origins: list[str] = msgspec.field(default_factory=list)
    trusted_proxies: list[str] = msgspec.field(default_factory=list)
    jwt_secret_env: str = "FLOTILLA_JWT_SECRET"
    token_ttl: _Positive = 3600.0
    audience: str | None = None
    issuer: str | None = None
    startup_timeout: _Positive = 30.0
    env: dict[str, str] = msgspec.field(default_factory=dict)


def gateway_port(spec: GatewaySpec, environ: Mapping[str, str]) -> int:
    """The port to listen on: ``FLOTILLA_GATEWAY_PORT`` when set, else the file's."""
    text = environ.get("FLOTILLA_GATEWAY_PORT", "")
    if not text:
        return spec.port
    if not (text.isascii() and text.isdigit() and int(text) <= 65535):
        raise ConfigError(f"FLOTILLA_GATEWAY_PORT={text!r} is not a port number")
    return int(text)

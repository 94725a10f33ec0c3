"""The HTTP gateway: declarative routes onto RPC methods, JWT auth, rate limits, OpenAPI.

Needs the ``gateway`` extra (``pip install flotilla-mesh[gateway]``).  See
:mod:`flotilla.gateway.app` for how the pieces fit, and the README's "The HTTP
gateway" section for how to use it.
"""

from flotilla.gateway.app import Gateway
from flotilla.gateway.auth import Tokens, TokenSettings
from flotilla.gateway.config import GatewayConfig
from flotilla.gateway.routes import RateLimit, Route, TokenRoute

__all__ = [
    "Gateway",
    "GatewayConfig",
    "RateLimit",
    "Route",
    "TokenRoute",
    "TokenSettings",
    "Tokens",
]

"""Flotilla: microservices for Python.

Write services as small typed classes, run them on one machine with no server
to install, and call them through a pipeline that balances, propagates
deadlines and survives dead replicas::

    from flotilla import Service, rpc, Context

    class Greeter(Service, name="greeter"):
        @rpc
        async def hello(self, name: str) -> str:
            return f"Hello, {name}"
"""

from typing import TYPE_CHECKING, Any

from flotilla.context import Context
from flotilla.errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    ConfigError,
    ConnectFailed,
    DeadlineExceeded,
    FailedPrecondition,
    FlotillaError,
    HandshakeFailed,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ProtocolError,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from flotilla.events import AlreadyHandled, DeadLetter, Envelope
from flotilla.events.policy import DeliveryPolicy
from flotilla.headers import Headers, Principal
from flotilla.health import health_check
from flotilla.pipeline import Handler, Middleware
from flotilla.registry import Health, Instance
from flotilla.registry.base import MethodInfo
from flotilla.request import Attempt, Request
from flotilla.resilience.fallback import Fallbacks, fallback
from flotilla.runtime.config import NodeConfig, Timings
from flotilla.runtime.dispatcher import Incoming
from flotilla.runtime.node import Node
from flotilla.service import Service, on_event, rpc

if TYPE_CHECKING:
    from flotilla.data import Database, Transaction

__version__ = "0.1.0"

# Imported on first use: SQLAlchemy takes longer to import than the rest of
# Flotilla, and a process whose services have no database never needs it.
_LAZY = {"Database": "flotilla.data.database", "Transaction": "flotilla.data.transaction"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flotilla' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "Aborted",
    "AlreadyExists",
    "AlreadyHandled",
    "Attempt",
    "Cancelled",
    "ConfigError",
    "ConnectFailed",
    "Context",
    "Database",
    "DeadLetter",
    "DeadlineExceeded",
    "DeliveryPolicy",
    "Envelope",
    "FailedPrecondition",
    "Fallbacks",
    "FlotillaError",
    "Handler",
    "HandshakeFailed",
    "Headers",
    "Health",
    "Incoming",
    "Instance",
    "Internal",
    "InvalidArgument",
    "MethodInfo",
    "Middleware",
    "Node",
    "NodeConfig",
    "NotFound",
    "PermissionDenied",
    "Principal",
    "ProtocolError",
    "Request",
    "ResourceExhausted",
    "Service",
    "Timings",
    "Transaction",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "fallback",
    "health_check",
    "on_event",
    "rpc",
]

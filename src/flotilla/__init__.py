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
from flotilla.registry import Health, Instance
from flotilla.runtime.node import Node, Timings
from flotilla.service import Service, on_event, rpc

__version__ = "0.1.0"

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "ConfigError",
    "ConnectFailed",
    "Context",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FlotillaError",
    "Health",
    "Instance",
    "Internal",
    "InvalidArgument",
    "Node",
    "NotFound",
    "PermissionDenied",
    "ProtocolError",
    "ResourceExhausted",
    "Service",
    "Timings",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "on_event",
    "rpc",
]

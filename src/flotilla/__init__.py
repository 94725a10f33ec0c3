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

from flotilla.calls.pipeline import Handler, Middleware
from flotilla.calls.request import Attempt, Request
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
from flotilla.registry import Health, Instance
from flotilla.registry.base import MethodInfo
from flotilla.runtime.config import NodeConfig, Timings
from flotilla.runtime.dispatcher import Incoming
from flotilla.runtime.node import Node
from flotilla.service import Service, on_event, rpc

__version__ = "0.1.0"

__all__ = [
    "Aborted",
    "AlreadyExists",
    "AlreadyHandled",
    "Attempt",
    "Cancelled",
    "ConfigError",
    "ConnectFailed",
    "Context",
    "DeadLetter",
    "DeadlineExceeded",
    "DeliveryPolicy",
    "Envelope",
    "FailedPrecondition",
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
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "on_event",
    "rpc",
]

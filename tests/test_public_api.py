"""The public API is exactly what ``flotilla.__all__`` names, and all of it imports."""

from __future__ import annotations

import importlib

import flotilla

PUBLIC = [
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


def test_all_is_pinned() -> None:
    assert flotilla.__all__ == PUBLIC


def test_all_is_sorted_and_unique() -> None:
    assert sorted(set(flotilla.__all__)) == flotilla.__all__


def test_every_name_is_importable() -> None:
    module = importlib.import_module("flotilla")
    for name in PUBLIC:
        assert getattr(module, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from flotilla import *", namespace)
    assert set(PUBLIC) <= set(namespace)


def test_version() -> None:
    assert flotilla.__version__ == "0.1.0"


def test_the_call_path_types_are_the_ones_the_core_uses() -> None:
    # Re-exports, not copies: a user's layer annotated with flotilla.Request
    # gets exactly what the pipeline passes.
    from flotilla import pipeline, request
    from flotilla.headers import Headers, Principal
    from flotilla.runtime.config import NodeConfig
    from flotilla.runtime.dispatcher import Incoming

    assert flotilla.Request is request.Request
    assert flotilla.Attempt is request.Attempt
    assert flotilla.Middleware is pipeline.Middleware
    assert flotilla.Handler is pipeline.Handler
    assert flotilla.Headers is Headers
    assert flotilla.Principal is Principal
    assert flotilla.NodeConfig is NodeConfig
    assert flotilla.Incoming is Incoming


def test_the_event_types_are_the_ones_the_core_uses() -> None:
    from flotilla.events import backend, envelope, policy

    assert flotilla.AlreadyHandled is backend.AlreadyHandled
    assert flotilla.Envelope is envelope.Envelope
    assert flotilla.DeadLetter is envelope.DeadLetter
    assert flotilla.DeliveryPolicy is policy.DeliveryPolicy


def test_the_data_types_are_the_ones_the_runtime_uses() -> None:
    from flotilla.data import database, transaction

    assert flotilla.Database is database.Database
    assert flotilla.Transaction is transaction.Transaction

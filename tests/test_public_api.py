"""The public API is exactly what ``flotilla.__all__`` names, and all of it imports."""

from __future__ import annotations

import importlib

import flotilla

PUBLIC = [
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

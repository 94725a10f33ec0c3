"""Service discovery: where the instances of a service are, and whether they are alive.

A registry is anything that implements :class:`Registry`; the built-in ones
are named by URL so configuration can pick one through :func:`open_registry`::

    memory://                      this process only (tests, single-node apps)
    sqlite:///abs/path.db          one file shared by every process on a machine
    sqlite://relative/path.db      the same, relative to the working directory
    path/to/file.db                shorthand for sqlite://path/to/file.db
    nats://host:4222               a NATS JetStream KV bucket (``?bucket=name``; extra ``nats``)
"""

from __future__ import annotations

from flotilla.clock import Clock
from flotilla.registry.base import Health, Instance, MethodInfo, Registry
from flotilla.registry.memory import MemoryRegistry
from flotilla.registry.sqlite import SqliteRegistry
from flotilla.resolve import BackendFamily

__all__ = [
    "REGISTRIES",
    "Health",
    "Instance",
    "MemoryRegistry",
    "MethodInfo",
    "Registry",
    "SqliteRegistry",
    "open_registry",
]

# A backend that needs an extra (nats, etcd) names it here; its module is
# imported only when its URL is used.
REGISTRIES: BackendFamily[Registry] = BackendFamily(
    "registry",
    {
        "memory": "flotilla.registry.memory:MemoryRegistry.from_url",
        "sqlite": "flotilla.registry.sqlite:SqliteRegistry.from_url",
        "nats": "flotilla.registry.nats_kv:NatsKvRegistry.from_url",
    },
    extras={"nats": "nats"},
)


def open_registry(url: str, *, clock: Clock | None = None) -> Registry:
    """A new registry for ``url`` (see the module docstring for the forms).

    Raises :class:`~flotilla.errors.ConfigError` for a URL of no known scheme.
    """
    return REGISTRIES.open(url, clock=clock)

"""Service discovery: where the instances of a service are, and whether they are alive.

A registry is anything that implements :class:`Registry`; the built-in ones
are named by URL so configuration can pick one through :func:`open_registry`::

    memory://                      this process only (tests, single-node apps)
    sqlite:///abs/path.db          one file shared by every process on a machine
    sqlite://relative/path.db      the same, relative to the working directory
    path/to/file.db                shorthand for sqlite://path/to/file.db
"""

from __future__ import annotations

from collections.abc import Callable

from flotilla.clock import Clock
from flotilla.errors import ConfigError
from flotilla.registry.base import Health, Instance, Registry
from flotilla.registry.memory import MemoryRegistry
from flotilla.registry.sqlite import SqliteRegistry

__all__ = [
    "Health",
    "Instance",
    "MemoryRegistry",
    "Registry",
    "SqliteRegistry",
    "open_registry",
]

# A factory gets what follows "scheme://" and the clock.  The two backends here
# need only the standard library; a backend that needs an extra (nats, etcd)
# must import it inside its factory, so it costs nothing until its URL is used.
_Factory = Callable[[str, Clock | None], Registry]


def _memory(rest: str, clock: Clock | None) -> Registry:
    if rest:
        raise ConfigError(f"memory:// takes no path, got 'memory://{rest}'")
    return MemoryRegistry(clock=clock)


def _sqlite(rest: str, clock: Clock | None) -> Registry:
    if not rest:
        raise ConfigError("sqlite:// needs a file, as in 'sqlite:///var/lib/app/registry.db'")
    return SqliteRegistry(rest, clock=clock)


_BY_SCHEME: dict[str, _Factory] = {
    "memory": _memory,
    "sqlite": _sqlite,
}


def open_registry(url: str, *, clock: Clock | None = None) -> Registry:
    """A new registry for ``url`` (see the module docstring for the forms).

    Raises :class:`~flotilla.errors.ConfigError` for a URL of no known scheme.
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        scheme, rest = ("sqlite", url) if url.endswith(".db") else ("", url)
    factory = _BY_SCHEME.get(scheme)
    if factory is None:
        known = ", ".join(f"{name}://" for name in _BY_SCHEME)
        raise ConfigError(
            f"unknown registry URL {url!r}; known schemes: {known} (or a path ending in .db)"
        )
    return factory(rest, clock)

"""Running a node as a process: the event loop, signals, and loading services by name.

This is what ``flotilla serve module:Class`` and every process started by
``flotilla run`` execute.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

from flotilla.errors import ConfigError
from flotilla.runtime.config import NodeConfig
from flotilla.runtime.node import Node
from flotilla.runtime.settings import Settings
from flotilla.service import Service

__all__ = ["load_service_class", "run", "serve"]

log = logging.getLogger("flotilla.runtime")

T = TypeVar("T")


def load_service_class(spec: str) -> type[Service]:
    """Import ``"package.module:ClassName"`` and check it is a :class:`Service` subclass."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"service {spec!r} is not 'module:Class'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a missing module, or one that fails as it is imported
        message = f"cannot import {module_name!r} for service {spec!r}: {exc!r}"
        raise ConfigError(message) from None
    cls = getattr(module, attribute, None)
    if not (isinstance(cls, type) and issubclass(cls, Service)):
        raise ConfigError(f"{spec!r} is not a flotilla.Service subclass")
    try:
        cls.methods()  # read the specs now: a bad annotation fails here, not on a call
    except (NameError, TypeError) as exc:
        raise ConfigError(f"service {spec!r} cannot be served: {exc}") from None
    return cls


async def serve(services: list[Service], settings: Settings) -> None:
    """Host ``services`` until SIGTERM or SIGINT, then drain and return."""
    config = NodeConfig(
        registry=settings.registry,
        secret=settings.secret,
        host=settings.host,
        port=settings.port,
        advertise=settings.advertise,
        metadata={"replica": replica} if (replica := os.environ.get("FLOTILLA_REPLICA")) else {},
    )
    node = Node(*services, config=config)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, node.stop)
    await node.start()
    names = ", ".join(instance.id for instance in node.instances)
    log.info("serving %s on %s", names, node.address)
    await node.wait_stopped()
    log.info("stopped %s", names)


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when it is installed, else on the default asyncio loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)

"""Running a node as a process: the event loop, signals, and loading services by name.

This is what ``flotilla serve module:Class`` and every process started by
``flotilla run`` execute.

A process started by a supervisor has ``FLOTILLA_PARENT_PID`` in its
environment and stops (gracefully, as on SIGTERM) when that process dies:
:func:`follow_parent` and the watch in :func:`serve`.  Why both a kernel
signal and a poll is told in :mod:`flotilla.runtime.supervisor`.  SIGHUP (its
terminal closed) stops a node like SIGTERM does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, MutableMapping
from typing import Any, TypeVar

from flotilla.errors import ConfigError, FailedPrecondition
from flotilla.runtime.named import import_named
from flotilla.runtime.node import Node
from flotilla.runtime.settings import Settings
from flotilla.service import Service

__all__ = ["follow_parent", "load_service_class", "run_loop", "serve", "stopped_by"]

log = logging.getLogger("flotilla.runtime")

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# How often a process checks that its supervisor is still its parent.
_PARENT_POLL = 1.0


def load_service_class(spec: str) -> type[Service]:
    """Import ``"package.module:ClassName"`` and check it is a :class:`Service` subclass."""
    cls = import_named(spec, "service", form="module:Class")
    if not (isinstance(cls, type) and issubclass(cls, Service)):
        what = f"class {cls.__name__}" if isinstance(cls, type) else type(cls).__name__
        raise ConfigError(f"{spec!r} is a {what}, not a flotilla.Service subclass")
    try:
        cls.methods()  # read the specs now: a bad annotation fails here, not on a call
    except (NameError, TypeError) as exc:
        raise ConfigError(f"service {spec!r} cannot be served: {exc}") from None
    return cls


def follow_parent(environ: MutableMapping[str, str]) -> int | None:
    """Tie this process's life to the supervisor named by ``FLOTILLA_PARENT_PID``.

    Returns that pid (None when the variable is not set: not supervised).
    The variable is removed from ``environ``, so a process this one starts does
    not take this one's supervisor for its own.  Raises
    :class:`FailedPrecondition` when the supervisor is already gone.
    """
    text = environ.pop("FLOTILLA_PARENT_PID", "")
    if not text:
        return None
    if not (text.isascii() and text.isdigit()):
        raise ConfigError(f"FLOTILLA_PARENT_PID={text!r} is not a process id")
    parent = int(text)
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    # Checked after prctl: a parent that died before it would send no signal.
    if os.getppid() != parent:
        raise FailedPrecondition(f"the supervisor (pid {parent}) is gone; not starting")
    return parent


async def serve(services: list[Service], settings: Settings, *, parent: int | None = None) -> None:
    """Host ``services`` until SIGTERM, SIGINT or SIGHUP, then drain and return.

    With ``parent`` (from :func:`follow_parent`), also stop when this process
    stops being that process's child.
    """
    replica = os.environ.get("FLOTILLA_REPLICA")
    config = settings.node_config({"replica": replica} if replica else None)
    node = Node(*services, config=config)
    async with stopped_by(node.stop, parent=parent):
        await node.start()
        names = ", ".join(instance.id for instance in node.instances)
        ops = f" (ops port {node.ops.address})" if node.ops is not None else ""
        log.info("serving %s on %s%s", names, node.address, ops)
        await node.wait_stopped()
        log.info("stopped %s", names)


async def _watch_parent(parent: int, stop: Callable[[], None]) -> None:
    """Call ``stop`` once this process is re-parented (its supervisor died)."""
    # A poll: no event tells a process that its parent died (PDEATHSIG aside).
    while os.getppid() == parent:  # noqa: ASYNC110
        await asyncio.sleep(_PARENT_POLL)
    log.warning("the supervisor (pid %d) is gone; stopping", parent)
    stop()


@contextlib.asynccontextmanager
async def stopped_by(stop: Callable[[], None], *, parent: int | None) -> AsyncIterator[None]:
    """Within the block, SIGTERM, SIGINT or SIGHUP call ``stop``; so does ``parent``
    ceasing to be this process's parent (the watch is a task this block owns)."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    for signum in signals:
        loop.add_signal_handler(signum, stop)
    watch = asyncio.create_task(_watch_parent(parent, stop)) if parent else None
    try:
        yield
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        if watch is not None:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when it is installed, else on the default asyncio loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)

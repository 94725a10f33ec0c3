"""Health checks a service declares: ``@health_check(interval=5, timeout=1)``.

::

    class Orders(Service, name="orders"):
        @health_check(interval=5, timeout=1)
        async def payments(self) -> bool:
            return await self.gateway.ping()  # a dependency the service reaches itself

A check is an ``async`` method taking nothing, returning ``True`` (passing) or
``False`` (failing); raising, or taking longer than ``timeout`` seconds, fails
it too.  :meth:`~flotilla.service.Service.health` is every service's first
check (named ``health``, on the node's heartbeat, with the node's
``timings.health_timeout``).  The node runs each check on its own interval
(:mod:`flotilla.runtime.health`); one failing check makes every instance of
the service unhealthy, so callers stop picking it, and makes the node not
ready (``/readyz``).  A service that declares a database gets a check of it
(named ``database``) without declaring one.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

__all__ = ["DEFAULT_CHECK", "CheckSpec", "declared_checks", "health_check"]

F = TypeVar("F", bound=Callable[[Any], Awaitable[bool]])

DEFAULT_CHECK = "health"
"""The name of the check every service has: its :meth:`~flotilla.service.Service.health`."""


class CheckSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One declared check: the method to call, how often and how long it may take."""

    name: str
    """The method's name; it names the check in ``/readyz`` and ``/status``."""
    interval: float
    """Seconds between the end of one run and the start of the next."""
    timeout: float
    """Seconds a run may take before it counts as failed."""


def health_check(*, interval: float = 5.0, timeout: float = 1.0) -> Callable[[F], F]:
    """Declare an ``async`` method a health check, run every ``interval`` seconds.

    Refused at class definition: a method that is not ``async`` or takes
    arguments, or an interval or timeout that is not a positive number.
    """
    for what, value in (("interval", interval), ("timeout", timeout)):
        if not (isinstance(value, int | float) and 0 < value < math.inf):
            raise ValueError(f"@health_check {what} must be a positive number, not {value!r}")

    def mark(method: F) -> F:
        where = getattr(method, "__qualname__", repr(method))
        if not _is_async(method):
            raise TypeError(f"@health_check {where} must be `async def`")
        if len(inspect.signature(method).parameters) != 1:
            raise TypeError(f"@health_check {where} must take no argument but self")
        spec = CheckSpec(name=method.__name__, interval=float(interval), timeout=float(timeout))
        method.__flotilla_check__ = spec  # type: ignore[attr-defined]
        return method

    return mark


def _is_async(method: object) -> bool:
    # A function of its own: the TypeGuard of iscoroutinefunction would narrow
    # the method's type and lose the caller's.
    return inspect.iscoroutinefunction(method)


def declared_checks(cls: type) -> list[CheckSpec]:
    """The ``@health_check`` methods of ``cls`` (its ``health`` method not included), by name."""
    return [
        member.__flotilla_check__
        for _, member in inspect.getmembers(cls)
        if isinstance(getattr(member, "__flotilla_check__", None), CheckSpec)
    ]

"""A pytest plugin that runs ``async def`` tests no other plugin claims: the kit needs no setup.

Installing Flotilla registers it (the ``pytest11`` entry point ``flotilla``),
so the README's test runs as written::

    async def test_describe():
        async with Cluster() as cluster:
            ...

It only takes what nobody else takes.  pytest-asyncio replaces the tests it
claims (every ``async def`` test in auto mode, the ones marked
``@pytest.mark.asyncio`` in strict mode) by synchronous wrappers before any
call hook runs, so this hook no longer sees a coroutine function there; tests
marked for anyio or trio (or asking for ``anyio_backend``) are left to their
plugins.  The hook cannot simply run last and take the leftovers: pytest's own
fallback, which fails every ``async def`` test, is itself ``trylast`` and
registered first, so it would always come before.  The rest run here, each on
a fresh event loop of its own (uvloop when installed, as nodes run, else
asyncio's), closed when the test ends.  ``-p no:flotilla`` turns it off.

Async *fixtures* are not run here: a plugin that owns loops across tests
(pytest-asyncio, anyio) does that better; this one keeps simple tests simple.

The module imports nothing of Flotilla, and uvloop only when a test runs:
pytest loads it in every run where Flotilla is installed.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable

import pytest

__all__ = ["pytest_pyfunc_call"]


# Markers (and a fixture) by which other async plugins claim a test.
OTHER_FRAMEWORKS = ("anyio", "trio")


def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an ``async def`` test left unclaimed; ``None`` leaves any other test to pytest."""
    test = pyfuncitem.obj
    if not inspect.iscoroutinefunction(test) or _claimed_elsewhere(pyfuncitem):
        return None
    # The test's own parameters, as pytest's default call does (funcargs also
    # holds autouse and indirect fixtures the function does not take).
    names = pyfuncitem._fixtureinfo.argnames
    arguments = {name: pyfuncitem.funcargs[name] for name in names}
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(test(**arguments))
    return True


def _claimed_elsewhere(item: pytest.Function) -> bool:
    if "anyio_backend" in item.fixturenames:
        return True
    return any(item.get_closest_marker(name) is not None for name in OTHER_FRAMEWORKS)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None  # asyncio's default loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory

"""The health part of a node: runs every service's checks on their intervals, keeps the results.

::

    start:  run every check once, all at once (each bounded by its timeout)
            -> one task per check, owned by the part's task group:
               loop: sleep(interval) on the node's clock -> run -> keep the result
    stop:   cancel the task group, wait for it

A service's health, from the last result of each of its checks::

    any check without a result yet  -> unknown
    any check failing               -> unhealthy   (callers stop picking it)
    every check passing             -> healthy

The first round runs before :meth:`HealthMonitor.start` returns, so the
instances are registered with a real result rather than ``unknown`` (which
callers would not pick).  The lease keeper publishes these results on each
beat (:mod:`flotilla.runtime.lease`), and readiness (``/readyz``) reads the
same results: one set of checks, never run twice for two readers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import msgspec

from flotilla.aio import cancel_and_wait
from flotilla.clock import Clock
from flotilla.data.node_hooks import check_databases, databases_of
from flotilla.health import DEFAULT_CHECK, CheckSpec, declared_checks
from flotilla.registry.base import Health
from flotilla.service import Service

__all__ = ["DATABASE_CHECK", "CheckResult", "HealthMonitor"]

log = logging.getLogger("flotilla.runtime")


class CheckResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one run of one check."""

    service: str
    check: str
    ok: bool
    reason: str | None = None
    """Why it failed (None when it passed)."""
    at: float
    """When the run ended, wall-clock Unix seconds."""
    seconds: float
    """How long the run took."""


DATABASE_CHECK = "database"
"""The check a service with a database gets: every database of it answers."""


class _Check:
    """One check of one service, bound to what runs it."""

    def __init__(self, service: str, spec: CheckSpec, run: Callable[[], Awaitable[object]]) -> None:
        self.service = service
        self.spec = spec
        self.run = run
        self.result: CheckResult | None = None


def _checks_of(service: Service, default: CheckSpec) -> list[_Check]:
    """The default check, those the class declares, and its databases' if it has any."""
    declared = {spec.name: spec for spec in declared_checks(type(service))}
    specs = {DEFAULT_CHECK: declared.pop(DEFAULT_CHECK, default), **declared}
    checks = [_Check(service.name, spec, getattr(service, spec.name)) for spec in specs.values()]
    if databases_of(service):

        async def databases_answer() -> bool:
            await check_databases(service)  # Unavailable names the (masked) URL and why
            return True

        spec = msgspec.structs.replace(default, name=DATABASE_CHECK)
        checks.append(_Check(service.name, spec, databases_answer))
    return checks


class HealthMonitor:
    """Runs the checks of ``services``; ``interval`` and ``timeout`` are those of each
    service's default check (the node's heartbeat and ``timings.check_timeout``)."""

    name = "health"

    def __init__(
        self, services: Sequence[Service], *, interval: float, timeout: float, clock: Clock
    ) -> None:
        self.services = services
        self._clock = clock
        default = CheckSpec(name=DEFAULT_CHECK, interval=interval, timeout=timeout)
        self._checks = {service.name: _checks_of(service, default) for service in services}
        self._runner: asyncio.Task[None] | None = None

    # -- the results -------------------------------------------------------------------------

    def results(self) -> list[CheckResult | None]:
        """The last result of every check (None: not run yet), service by service."""
        return [check.result for checks in self._checks.values() for check in checks]

    def check_names(self) -> list[tuple[str, str]]:
        """``(service, check)`` of every check, in the order of :meth:`results`."""
        return [(c.service, c.spec.name) for checks in self._checks.values() for c in checks]

    def health(self, service: str) -> Health:
        """The service's health from its checks' last results (see the module docstring)."""
        results = [check.result for check in self._checks[service]]
        if any(result is None for result in results):
            return Health.UNKNOWN
        if all(result is not None and result.ok for result in results):
            return Health.HEALTHY
        return Health.UNHEALTHY

    async def healths(self) -> list[Health]:
        """Each service's health, in the order the node hosts them (what the lease publishes)."""
        return [self.health(service.name) for service in self.services]

    # -- the part ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("a health monitor starts once")
        every = [check for checks in self._checks.values() for check in checks]
        await asyncio.gather(*(self._run(check) for check in every))
        self._runner = asyncio.create_task(self._keep_running(every), name="health checks")

    async def stop(self) -> None:
        if self._runner is None or self._runner.done():
            return
        await cancel_and_wait(self._runner, log)

    async def _keep_running(self, checks: list[_Check]) -> None:
        async with asyncio.TaskGroup() as group:
            for check in checks:
                group.create_task(
                    self._repeat(check), name=f"check {check.service}.{check.spec.name}"
                )

    async def _repeat(self, check: _Check) -> None:
        while True:
            await self._clock.sleep(check.spec.interval)
            await self._run(check)

    async def _run(self, check: _Check) -> None:
        """Run ``check`` once and keep its result; a failure is a result, never an exception."""
        started = time.monotonic()
        reason: str | None = None
        try:
            async with asyncio.timeout(check.spec.timeout):
                outcome = await check.run()
            if outcome is False:
                reason = "returned False"
            elif outcome is not True:
                reason = f"returned {outcome!r}, not a bool"
        except TimeoutError:
            reason = f"took longer than its timeout ({check.spec.timeout:g} s)"
        except Exception as exc:  # the check's own failure; CancelledError passes
            reason = f"raised {type(exc).__name__}: {exc}"
        result = CheckResult(
            service=check.service,
            check=check.spec.name,
            ok=reason is None,
            reason=reason,
            at=time.time(),
            seconds=time.monotonic() - started,
        )
        _log_change(check.result, result)
        check.result = result


def _log_change(before: CheckResult | None, after: CheckResult) -> None:
    """One line when a check starts failing, one when it passes again (not one per run)."""
    was_ok = before is None or before.ok
    if was_ok and not after.ok:
        log.warning("health check %s.%s failed: %s", after.service, after.check, after.reason)
    elif not was_ok and after.ok:
        log.warning("health check %s.%s passes again", after.service, after.check)

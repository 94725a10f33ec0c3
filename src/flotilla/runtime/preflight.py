"""Checking a system before any of it starts: classes, names, the registry and events URLs.

``flotilla run`` calls :func:`check_system` after reading the system file.  A
mistake found here is reported as ``file:line: key: reason`` (one line per
mistake, all of them at once) and nothing starts; found later, it would make
every replica exit and be restarted forever.

- each ``class`` imports, names an attribute of its module, and that attribute
  is a :class:`~flotilla.service.Service` subclass whose methods can be read;
- the service's name is its entry's: ``[services.orders]`` runs the service
  named ``orders``.  Process names (``orders.1``), log prefixes and the status
  table use the entry's name while callers and the registry use the
  service's, so a difference would show one system under two sets of names.
  A class without ``name=`` is named after itself (``OrderBook`` ->
  ``order_book``), and the same rule applies;
- each method named in ``[resilience.services.NAME.methods.METHOD]`` is an
  ``@rpc`` method of the service (a misspelt one would silently get the
  service's policy);
- the registry and events URLs have known schemes (nothing is opened or created);
- the ``[gateway]``'s routes import and fit the method tables of the system's
  classes (``flotilla check-routes``, in a subprocess too): a route to a
  method or an argument that does not exist is reported at the
  ``gateway.routes`` line, before anything starts.

Each class is imported in a short subprocess (``flotilla check-class``) with
the environment and working directory its replicas will have, not in the
supervisor: importing user code runs it, and its side effects (threads,
connections, memory, reading a variable meant for the replica) have no place
in the long-lived supervisor.  The subprocesses run in parallel, so the check
costs about one interpreter start.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import msgspec

from flotilla.errors import ConfigError
from flotilla.events import EVENT_BACKENDS
from flotilla.registry import open_registry
from flotilla.registry.base import MethodInfo
from flotilla.runtime.system_file import ServiceSpec, SystemSpec

__all__ = ["ClassReport", "check_system", "service_environment"]

# A module whose import takes longer than this is reported, not waited for.
_IMPORT_TIMEOUT = 60.0


class ClassReport(msgspec.Struct, frozen=True, kw_only=True):
    """What ``flotilla check-class`` prints (its last line of stdout) for a good class."""

    name: str
    """The service's name (``Service.name``)."""
    methods: list[str] = msgspec.field(default_factory=list)
    """The wire names of its ``@rpc`` methods."""
    table: list[MethodInfo] = msgspec.field(default_factory=list)
    """Its method table, as it will publish it (the gateway's routes are checked against it)."""


def service_environment(
    base: Mapping[str, str], spec: ServiceSpec, system_dir: Path
) -> dict[str, str]:
    """The environment of a process of ``spec``: ``base``, the entry's ``env``, the system dir
    first on ``PYTHONPATH``."""
    env = {**base, **spec.env}
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{system_dir}{os.pathsep}{path}" if path else str(system_dir)
    return env


async def check_system(spec: SystemSpec, system_dir: Path, environ: Mapping[str, str]) -> None:
    """Raise :class:`ConfigError` listing every mistake found (one per line), else return.

    ``system_dir`` must be absolute: it becomes the working directory and the
    ``PYTHONPATH`` of the processes that import the classes.
    """
    if not system_dir.is_absolute():
        raise ValueError(f"system_dir must be absolute, not {system_dir}")
    limit = asyncio.Semaphore(max(2, os.cpu_count() or 2))
    problems: list[str | None] = [await _check_registry(spec), await _check_events(spec)]
    results = await asyncio.gather(
        *(
            _check_service(spec, name, service, system_dir, environ, limit)
            for name, service in spec.services.items()
        )
    )
    problems += [problem for problem, _ in results]
    reports = [report for _, report in results if report is not None]
    if spec.gateway is not None and len(reports) == len(results):
        problems.append(await _check_gateway(spec, system_dir, environ, reports))
    found = [problem for problem in problems if problem]
    if found:
        raise ConfigError("\n".join(found))


async def _check_registry(spec: SystemSpec) -> str | None:
    try:
        registry = open_registry(spec.registry)
    except ConfigError as exc:
        return f"{spec.where('system.registry')}: {exc.message}"
    await registry.aclose()  # opening creates nothing: it only resolved the URL
    return None


async def _check_events(spec: SystemSpec) -> str | None:
    try:
        EVENT_BACKENDS.check(spec.events or "memory://")  # the scheme only: opening may create
    except ConfigError as exc:
        return f"{spec.where('system.events')}: {exc.message}"
    return None


async def _check_service(
    spec: SystemSpec,
    name: str,
    service: ServiceSpec,
    system_dir: Path,
    environ: Mapping[str, str],
    limit: asyncio.Semaphore,
) -> tuple[str | None, ClassReport | None]:
    """A problem with one service entry (or None), and its class's report (None if none)."""
    where = spec.where(f"services.{name}.class")
    env = service_environment(environ, service, system_dir)
    async with limit:
        code, out, err = await _probe(["check-class", service.class_], env, system_dir)
    if code is None:
        return f"{where}: importing {service.class_!r} took more than {_IMPORT_TIMEOUT:.0f} s", None
    if code != 0:
        return f"{where}: {_reason(err, code)}", None
    try:
        report = msgspec.json.decode(out.strip().splitlines()[-1], type=ClassReport)
    except (IndexError, msgspec.DecodeError):
        return f"{where}: checking {service.class_!r} printed no report", None
    if report.name != name:
        return (
            f"{where}: {service.class_!r} is the service {report.name!r}, but its entry is "
            f"[services.{name}]; name the entry [services.{report.name}] "
            f"(or give the class name={name!r})"
        ), None
    return _check_policy_methods(spec, name, report.methods), report


async def _check_gateway(
    spec: SystemSpec,
    system_dir: Path,
    environ: Mapping[str, str],
    reports: list[ClassReport],
) -> str | None:
    """The gateway's routes import and fit the method tables of the system's classes."""
    assert spec.gateway is not None
    where = spec.where("gateway.routes")
    tables = {report.name: report.table for report in reports}
    env = service_environment(environ, ServiceSpec(class_="", env=spec.gateway.env), system_dir)
    command = ["check-routes", spec.gateway.routes, msgspec.json.encode(tables).decode()]
    code, _, err = await _probe(command, env, system_dir)
    if code is None:
        return f"{where}: importing {spec.gateway.routes!r} took more than {_IMPORT_TIMEOUT:.0f} s"
    return None if code == 0 else f"{where}: {_reason(err, code)}"


async def _probe(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int | None, str, str]:
    """Run ``flotilla ARGS`` to its end: (exit code, stdout, stderr); None on a timeout."""
    env.pop("FLOTILLA_PARENT_PID", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flotilla",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    try:
        async with asyncio.timeout(_IMPORT_TIMEOUT):
            out, err = await process.communicate()
    except TimeoutError:
        return None, "", ""
    finally:
        if process.returncode is None:  # timed out or cancelled: leave no process behind
            process.kill()
            await process.wait()
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def _check_policy_methods(spec: SystemSpec, name: str, methods: list[str]) -> str | None:
    """A method policy for a method the service does not have, at its line."""
    for method in spec.resilience.methods.get(name, {}):
        if method not in methods:
            where = spec.where(f"resilience.services.{name}.methods.{method}")
            known = ", ".join(methods) or "none"
            return f"{where}: {name} has no @rpc method {method!r} (its methods: {known})"
    return None


def _reason(stderr: str, code: int | None) -> str:
    """The ``error: ...`` line of a failed check, else the last line of its output."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error: "):
            return line.removeprefix("error: ")
    return lines[-1] if lines else f"checking the class exited with code {code}"

"""``flotilla run [PATH]``: run a whole system from its ``flotilla.toml`` until Ctrl-C.

The data directory is ``--data-dir``, else ``FLOTILLA_DATA_DIR``, else the
file's ``data_dir`` (default ``.flotilla`` beside the file).
Before anything starts, the system is checked (:mod:`flotilla.runtime.preflight`)
and the data directory claimed (one supervisor per data directory); either
failing exits 2.  SIGINT, SIGTERM and SIGHUP (the terminal closed) stop every
process gracefully and exit 0.  When every replica exits with a configuration
mistake, nothing is left to run: the command exits 2.

The registry, the event backend and the database are each the option's
(``--registry``, ``--events``, ``--database``), else the environment's
(``FLOTILLA_REGISTRY``, ``FLOTILLA_EVENTS``, ``FLOTILLA_DATABASE_URL``), else
the system file's, else SQLite files in the data directory
(:mod:`flotilla.runtime.backends`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import Annotated

import typer

from flotilla.aio import wait_first
from flotilla.cli.check import system_dir_of
from flotilla.cli.common import DataDirOption, LogLevelOption, configure_logging, fail
from flotilla.cli.status_view import show_status
from flotilla.data.url import DATABASE_ENV, mask
from flotilla.errors import ConfigError, FailedPrecondition
from flotilla.runtime.backends import choose_backends
from flotilla.runtime.preflight import check_system
from flotilla.runtime.serve import run_loop
from flotilla.runtime.supervisor import Supervisor
from flotilla.runtime.system_file import SYSTEM_FILE, SystemSpec, load_system_file

__all__ = ["run_command"]

log = logging.getLogger("flotilla.cli")

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run_command(
    path: Annotated[
        Path, typer.Argument(metavar="PATH", help=f"The system's directory, or its {SYSTEM_FILE}.")
    ] = Path("."),
    status: Annotated[
        bool,
        typer.Option(
            "--status/--no-status",
            help="Show a live status table (only on a terminal); else plain log lines.",
        ),
    ] = True,
    duration: Annotated[
        float | None,
        typer.Option("--for", min=0, metavar="SECONDS", help="Stop by itself after this long."),
    ] = None,
    data_dir: DataDirOption = None,
    port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="The gateway's port (else FLOTILLA_GATEWAY_PORT, else the file's).",
        ),
    ] = None,
    registry: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="The registry (else FLOTILLA_REGISTRY, else the file's, else SQLite in the"
            " data directory), e.g. nats://127.0.0.1:4222?bucket=shop_registry.",
        ),
    ] = None,
    events: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="The event backend (else FLOTILLA_EVENTS, else the file's, else SQLite in the"
            " data directory), e.g. nats://127.0.0.1:4222?prefix=SHOP.",
        ),
    ] = None,
    database: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="The whole system's database (else FLOTILLA_DATABASE_URL, else the file's,"
            " else a SQLite file per service in the data directory); each service gets a"
            " schema of its own, e.g. postgresql://127.0.0.1/shop gives orders schema"
            " shop_orders (?schema=PREFIX picks the prefix). A service's own `database` or"
            " FLOTILLA_DATABASE_URL_<SERVICE> wins.",
        ),
    ] = None,
    log_level: LogLevelOption = "INFO",
) -> None:
    """Run every service of the system in PATH, restart what crashes, stop all on Ctrl-C."""
    level = configure_logging(log_level)
    try:
        spec = load_system_file(path, data_dir=_chosen_data_dir(data_dir, os.environ))
        spec = choose_backends(
            spec, os.environ, registry=registry, events=events, database=database
        )
    except ConfigError as exc:
        fail(exc.message)
    system_dir = system_dir_of(path)
    live = status and sys.stdout.isatty()
    environ = {**os.environ, "FLOTILLA_LOG_LEVEL": level}
    # Shared out per service above: passed on as is, it would name one database
    # for a process that may host several.
    environ.pop(DATABASE_ENV, None)
    if port is not None:
        environ["FLOTILLA_GATEWAY_PORT"] = str(port)
    try:
        run_loop(_run_system(spec, system_dir, environ=environ, live=live, duration=duration))
    except (ConfigError, FailedPrecondition) as exc:  # a class that does not import, ...
        fail(exc.message)
    except OSError as exc:  # the data directory cannot be created, ...
        fail(str(exc), 1)


def _chosen_data_dir(option: Path | None, env: Mapping[str, str]) -> Path | None:
    """``--data-dir``, else ``FLOTILLA_DATA_DIR``, else None (the file's ``data_dir``)."""
    # The variable names the system's data directory for every command
    # (``call``, ``ps``...): ``run`` honours it too, under the option.
    if option is None and env.get("FLOTILLA_DATA_DIR"):
        return Path(env["FLOTILLA_DATA_DIR"])
    return option


async def _run_system(
    spec: SystemSpec,
    system_dir: Path,
    *,
    environ: Mapping[str, str],
    live: bool,
    duration: float | None,
) -> None:
    await check_system(spec, system_dir, environ)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    try:
        async with Supervisor(spec, system_dir, environ=environ) as supervisor:
            log.info("running system %s from %s", spec.name, supervisor.system_dir)
            log.info(
                "registry %s, events %s, database %s",
                mask(spec.registry),
                mask(spec.events),
                mask(spec.database) if spec.database else "a SQLite file per service",
            )
            # wait_stopped: should the supervisor fail, leaving raises its error.
            waits: list[Awaitable[object]] = [stop.wait(), supervisor.wait_stopped()]
            if duration is not None:
                waits.append(asyncio.sleep(duration))
            if live:
                waits.append(show_status(supervisor, spec.registry, title=f"system {spec.name}"))
            await wait_first(*waits)
            if not supervisor.all_failed:
                log.info("stopping system %s", spec.name)
    finally:
        for signum in _STOP_SIGNALS:
            loop.remove_signal_handler(signum)
    if supervisor.all_failed:
        raise ConfigError(
            f"every process of system {spec.name} exited with a configuration mistake "
            "(see their output above)"
        )
    log.info("stopped system %s", spec.name)

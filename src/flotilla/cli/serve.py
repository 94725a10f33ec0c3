"""``flotilla serve module:Class ...``: host services in this process until SIGTERM or Ctrl-C."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from flotilla.cli.common import LogLevelOption, configure_logging, fail, fail_with
from flotilla.cli.queued_output import QueuedOutput
from flotilla.errors import ConfigError, FlotillaError
from flotilla.runtime.serve import follow_parent, load_service_class, run_loop, serve
from flotilla.runtime.settings import Settings
from flotilla.service import Service

__all__ = ["serve_command"]


def serve_command(
    classes: Annotated[
        list[str],
        typer.Argument(metavar="MODULE:CLASS", help="The services to host, as module:Class."),
    ],
    log_level: LogLevelOption = "INFO",
) -> None:
    """Host one or more services in this process (the registry etc. come from FLOTILLA_*)."""
    # A reader that stalls (a supervisor stopped with Ctrl-Z) must not freeze
    # this process on a full pipe: see flotilla.cli.queued_output.
    sys.stdout = stdout = QueuedOutput(sys.stdout.fileno())
    sys.stderr = stderr = QueuedOutput(sys.stderr.fileno())
    try:
        _serve(classes, log_level)
    finally:
        stdout.drain()  # bounded: a reader that never comes back is not waited for
        stderr.drain()


def _serve(classes: list[str], log_level: str) -> None:
    configure_logging(log_level)
    # As uvicorn does: `flotilla serve app:Svc` finds ./app.py, whichever way
    # flotilla itself was started (`python -m` adds the directory, a script does not).
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        parent = follow_parent(os.environ)
        services = _load(classes)
        settings = Settings.from_env()
    except FlotillaError as exc:
        fail_with(exc)
    try:
        run_loop(serve(services, settings, parent=parent))
    except FlotillaError as exc:
        fail_with(exc)
    except OSError as exc:  # the port is taken, the registry file is not writable, ...
        fail(str(exc), 1)
    except KeyboardInterrupt:
        # Ctrl-C before the signal handlers were installed: nothing to drain yet.
        raise typer.Exit(130) from None


def _load(classes: list[str]) -> list[Service]:
    services = [load_service_class(spec)() for spec in classes]
    names = [service.name for service in services]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"a process hosts each service once; repeated: {', '.join(duplicates)}")
    return services

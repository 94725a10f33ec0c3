"""What the commands share: failing with a message, logging, and finding a running system.

A command that talks to a running system (``call``, ``ps``, ``describe``)
finds its data directory as git finds ``.git``: ``--data-dir``, else
``FLOTILLA_DATA_DIR``, else a ``.flotilla`` directory in the current folder or
the nearest of its parents.  Unless it was given with ``--data-dir``, the one
used is named in one line on stderr, so a command run from the wrong folder
says where it looked.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, NoReturn

import msgspec
import typer

from flotilla.codec import encode_json
from flotilla.errors import ConfigError, FlotillaError
from flotilla.registry import Instance, open_registry
from flotilla.runtime.serve import run_loop
from flotilla.runtime.settings import Settings

__all__ = [
    "DATA_DIR_NAME",
    "DataDirOption",
    "LogLevelOption",
    "client_settings",
    "configure_logging",
    "fail",
    "find_data_dir",
    "pretty_json",
    "read_instances",
]

DATA_DIR_NAME = ".flotilla"

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="The system's data directory (sets FLOTILLA_DATA_DIR).",
        show_default=False,
    ),
]
LogLevelOption = Annotated[
    str,
    typer.Option("--log-level", envvar="FLOTILLA_LOG_LEVEL", help="DEBUG, INFO, WARNING or ERROR."),
]


HEALTH_STYLE = {
    "healthy": "green",
    "unhealthy": "red",
    "unknown": "yellow",
    "dead": "red",
    "wrong secret": "red",
}
"""How a health status is coloured in tables."""


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` to stderr and exit with ``code`` (2: a usage mistake).

    A message of several lines (several mistakes) prints one ``error:`` line each.
    """
    for line in message.splitlines() or [""]:
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


def fail_with(error: FlotillaError) -> NoReturn:
    """Exit for ``error``: 2 for a configuration mistake, 1 for an operation that failed."""
    if isinstance(error, ConfigError):
        fail(error.message)
    fail(f"{error.code}: {error.message}", 1)


def configure_logging(level: str) -> str:
    """Send log records to stderr at ``level``; returns the level's canonical name."""
    name = level.upper()
    if name not in logging.getLevelNamesMapping():
        fail(f"unknown log level {level!r}; use DEBUG, INFO, WARNING or ERROR")
    handler = _CurrentStderr()
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(name)
    return name


def find_data_dir(explicit: Path | None, env: Mapping[str, str]) -> tuple[Path, str]:
    """The data directory a client command uses, and how it was found (see the module doc)."""
    if explicit is not None:
        return explicit.absolute(), "--data-dir"
    if env.get("FLOTILLA_DATA_DIR"):
        return Path(env["FLOTILLA_DATA_DIR"]).absolute(), "FLOTILLA_DATA_DIR"
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / DATA_DIR_NAME).is_dir():
            where = "the current directory" if folder == here else "a parent directory"
            return folder / DATA_DIR_NAME, f"found in {where}"
    return here / DATA_DIR_NAME, "the default"


def client_settings(data_dir: Path | None) -> Settings:
    """The settings of a command that talks to a running system (``call``, ``ps``, ``describe``).

    Unlike a node, a client never creates a data directory: a missing secret
    means there is no system here, which is worth saying instead of making one.
    """
    env = dict(os.environ)
    directory, source = find_data_dir(data_dir, env)
    env["FLOTILLA_DATA_DIR"] = str(directory)
    if source != "--data-dir" and not (env.get("FLOTILLA_SECRET") and env.get("FLOTILLA_REGISTRY")):
        typer.echo(f"flotilla: data directory {directory} ({source})", err=True)
    if not env.get("FLOTILLA_SECRET") and not (directory / "secret").is_file():
        fail(
            f"no flotilla system at {directory} (no secret there); "
            "start one with `flotilla run`, or point at it with --data-dir"
        )
    try:
        return Settings.from_env(env)
    except ConfigError as exc:
        fail(exc.message)
    except OSError as exc:  # a secret that cannot be read, a data dir that is a file...
        fail(f"cannot use the data directory {directory}: {exc.strerror or exc}")


def read_instances(data_dir: Path | None) -> tuple[Settings, list[Instance]]:
    """The settings of a command that reads the registry, and the live instances there.

    Exits with the error's message when the registry cannot be read.
    """
    settings = client_settings(data_dir)
    try:
        return settings, run_loop(_list_instances(settings.registry))
    except FlotillaError as exc:
        fail_with(exc)


async def _list_instances(registry_url: str) -> list[Instance]:
    registry = open_registry(registry_url)
    try:
        return await registry.list()
    finally:
        await registry.aclose()


def pretty_json(value: Any) -> str:
    """``value`` as indented JSON text."""
    return msgspec.json.format(encode_json(value), indent=2).decode()


class _CurrentStderr(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time of each record.

    ``logging.StreamHandler`` binds the stream once; the live status display
    of ``flotilla run`` swaps ``sys.stderr`` to keep log lines above itself.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stderr, flush=True)
        except Exception:
            self.handleError(record)

"""What the commands share: failing with a message, logging, and finding a running system."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import msgspec
import typer

from flotilla.codec import encode_json
from flotilla.errors import ConfigError, FlotillaError
from flotilla.runtime.settings import Settings

__all__ = [
    "DataDirOption",
    "LogLevelOption",
    "client_settings",
    "configure_logging",
    "fail",
    "pretty_json",
]

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


HEALTH_STYLE = {"healthy": "green", "unhealthy": "red", "unknown": "yellow"}
"""How a health status is coloured in tables."""


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` to stderr and exit with ``code`` (2: a usage mistake)."""
    typer.echo(f"error: {message}", err=True)
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


def client_settings(data_dir: Path | None) -> Settings:
    """The settings of a command that talks to a running system (``call``, ``ps``).

    Unlike a node, a client never creates a data directory: a missing secret
    means there is no system here, which is worth saying instead of making one.
    """
    env = dict(os.environ)
    if data_dir is not None:
        env["FLOTILLA_DATA_DIR"] = str(data_dir)
    directory = Path(env.get("FLOTILLA_DATA_DIR") or ".flotilla").absolute()
    if not env.get("FLOTILLA_SECRET") and not (directory / "secret").is_file():
        fail(
            f"no flotilla system at {directory} (no secret there); "
            "start one with `flotilla run`, or point at it with --data-dir"
        )
    try:
        return Settings.from_env(env)
    except ConfigError as exc:
        fail(exc.message)


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

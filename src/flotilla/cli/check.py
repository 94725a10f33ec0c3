"""``flotilla check [PATH]``: check a system before running it; and the per-class probe it uses.

``flotilla check-class module:Class`` (hidden) imports one class in a process
of its own and prints a :class:`~flotilla.runtime.preflight.ClassReport` as its
last line of stdout; :mod:`flotilla.runtime.preflight` runs it for each entry
of a system file.  ``flotilla check-routes module:ATTR TABLES`` (hidden) does
the same for the ``[gateway]``'s routes, against the classes' method tables.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import msgspec
import typer

from flotilla.cli.common import fail
from flotilla.errors import ConfigError
from flotilla.registry.base import MethodInfo
from flotilla.runtime.backends import choose_backends
from flotilla.runtime.preflight import ClassReport, check_system
from flotilla.runtime.serve import load_service_class, run_loop
from flotilla.runtime.system_file import SYSTEM_FILE, load_system_file

__all__ = ["check_class_command", "check_command", "check_routes_command", "system_dir_of"]


def check_command(
    path: Annotated[
        Path, typer.Argument(metavar="PATH", help=f"The system's directory, or its {SYSTEM_FILE}.")
    ] = Path("."),
) -> None:
    """Check a system file and every class it names, as `flotilla run` does first
    (with the registry, events and database of FLOTILLA_REGISTRY, FLOTILLA_EVENTS and
    FLOTILLA_DATABASE_URL when set)."""
    try:
        spec = choose_backends(load_system_file(path), os.environ)
        run_loop(check_system(spec, system_dir_of(path), os.environ))
    except ConfigError as exc:
        fail(exc.message)
    typer.echo(f"{spec.source}: ok ({len(spec.services)} services)")


def check_class_command(
    class_: Annotated[str, typer.Argument(metavar="MODULE:CLASS")],
) -> None:
    """Import one service class and print its name as JSON (used by `flotilla run`)."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `flotilla serve` does
    try:
        cls = load_service_class(class_)
    except ConfigError as exc:
        fail(exc.message)
    report = ClassReport(
        name=cls.name, methods=sorted(cls.methods()), table=list(cls.method_table())
    )
    typer.echo(msgspec.json.encode(report).decode())


def check_routes_command(
    routes: Annotated[str, typer.Argument(metavar="MODULE:ATTR")],
    tables: Annotated[str, typer.Argument(metavar="JSON", help="service -> method table")],
) -> None:
    """Import the gateway's routes and check them against method tables (used by `flotilla run`)."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        from flotilla.gateway.process import check_routes
    except ImportError as exc:
        fail(f"the gateway needs its extra: pip install 'flotilla-mesh[gateway]' ({exc})")
    try:
        parsed = msgspec.json.decode(tables, type=dict[str, list[MethodInfo]])
        checked = check_routes(routes, parsed)
    except msgspec.DecodeError as exc:
        fail(f"method tables are not usable: {exc}")
    except ConfigError as exc:
        fail(exc.message)
    typer.echo(f"{len(checked)} routes ok")


def system_dir_of(path: Path) -> Path:
    """The directory (absolute) of a system given as its directory or as its file."""
    return (path if path.is_dir() else path.parent).absolute()

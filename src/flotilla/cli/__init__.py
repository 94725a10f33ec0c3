"""The ``flotilla`` command: one module per subcommand, assembled here.

::

    flotilla serve module:Class ...        host services in this process
    flotilla run [PATH]                    run a whole system from its flotilla.toml
    flotilla gateway [--routes M:A]        serve the HTTP gateway in this process
    flotilla check [PATH]                  check a system file and its classes, start nothing
    flotilla call SERVICE.METHOD [JSON]    call a method, print the result as JSON
    flotilla ps [--json]                   list the live instances
    flotilla describe SERVICE [--json]     the methods of a service, from its live instances
    flotilla events tail TOPIC             events as they are published
    flotilla events dlq [--topic T]        dead letters with their last error
    flotilla events replay ID... | --all   deliver dead letters again
    flotilla --version

Exit codes: 0 done, 1 the operation failed (a call's error, say), 2 a usage
or configuration mistake (reported before anything started).  No traceback
reaches the user: an unexpected exception is one ``error: internal: ...`` line
and exit 1 (``FLOTILLA_TRACEBACK=1`` shows the traceback, for bug reports).
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from flotilla.cli.call import call_command
from flotilla.cli.check import check_class_command, check_command, check_routes_command
from flotilla.cli.describe import describe_command
from flotilla.cli.events import events_app
from flotilla.cli.gateway import gateway_command
from flotilla.cli.ps import ps_command
from flotilla.cli.run import run_command
from flotilla.cli.serve import serve_command

__all__ = ["app", "main"]

app = typer.Typer(
    name="flotilla",
    help="Microservices for Python: serve, run, call and list services.",
    no_args_is_help=True,
    add_completion=False,
    # A traceback's locals could include the cluster secret.
    pretty_exceptions_show_locals=False,
)
app.command("serve")(serve_command)
app.command("run")(run_command)
app.command("gateway")(gateway_command)
app.command("check")(check_command)
app.command("check-class", hidden=True)(check_class_command)
app.command("check-routes", hidden=True)(check_routes_command)
app.command("call")(call_command)
app.command("ps")(ps_command)
app.command("describe")(describe_command)
app.add_typer(events_app, name="events")


def _flotilla_version() -> str:
    import flotilla

    return flotilla.__version__


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"flotilla {_flotilla_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Microservices for Python: serve, run, call and list services."""


def main() -> None:
    """Entry point of the ``flotilla`` console script and of ``python -m flotilla``."""
    try:
        app(prog_name="flotilla")
    except Exception as exc:
        # Each command turns the failures it expects into a message; this is
        # what nobody expected.  One line for the user, the traceback on request.
        if os.environ.get("FLOTILLA_TRACEBACK"):
            raise
        print(f"error: internal: {type(exc).__name__}: {exc}", file=sys.stderr)
        print("(set FLOTILLA_TRACEBACK=1 to see where; please report it)", file=sys.stderr)
        sys.exit(1)

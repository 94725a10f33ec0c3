"""The ``flotilla`` command: one module per subcommand, assembled here.

::

    flotilla serve module:Class ...        host services in this process
    flotilla run [PATH]                    run a whole system from its flotilla.toml
    flotilla call SERVICE.METHOD [JSON]    call a method, print the result as JSON
    flotilla ps [--json]                   list the live instances

Exit codes: 0 done, 1 the operation failed (a call's error, say), 2 a usage
or configuration mistake (reported before anything started).
"""

from __future__ import annotations

import typer

from flotilla.cli.call import call_command
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
app.command("call")(call_command)
app.command("ps")(ps_command)


def main() -> None:
    """Entry point of the ``flotilla`` console script and of ``python -m flotilla``."""
    app(prog_name="flotilla")

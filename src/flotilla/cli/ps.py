"""``flotilla ps``: the live instances of a running system, as a table or as JSON."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from flotilla.cli.common import HEALTH_STYLE, DataDirOption, client_settings, fail_with, pretty_json
from flotilla.codec import to_builtins
from flotilla.errors import FlotillaError
from flotilla.registry import Instance, open_registry
from flotilla.runtime.serve import run_loop

__all__ = ["instances_table", "ps_command"]


def ps_command(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON array instead of a table.")
    ] = False,
    data_dir: DataDirOption = None,
) -> None:
    """List the live instances in the registry, with their health."""
    settings = client_settings(data_dir)
    try:
        instances = run_loop(_list(settings.registry))
    except FlotillaError as exc:
        fail_with(exc)
    if as_json:
        typer.echo(pretty_json([to_builtins(instance) for instance in instances]))
    elif instances:
        Console().print(instances_table(instances))
    else:
        typer.echo("no live instances", err=True)


def instances_table(instances: list[Instance]) -> Table:
    """One row per instance: service, id, address, version, health."""
    table = Table("SERVICE", "INSTANCE", "ADDRESS", "VERSION", "HEALTH", box=None)
    for instance in instances:
        style = HEALTH_STYLE.get(instance.health, "")
        table.add_row(
            instance.service,
            instance.id,
            instance.address,
            instance.version,
            f"[{style}]{instance.health}[/]" if style else str(instance.health),
        )
    return table


async def _list(url: str) -> list[Instance]:
    registry = open_registry(url)
    try:
        return await registry.list()
    finally:
        await registry.aclose()

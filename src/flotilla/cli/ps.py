"""``flotilla ps``: the live instances of a running system, as a table or as JSON.

The table shows each instance's ``pid`` and ``replica`` (from its metadata).
A row whose lease has not run out yet but whose process is gone (an instance
on this machine, a loopback address, whose pid no longer exists) shows
``dead`` instead of its last reported health.  ``--json`` prints the
registry's rows as they are.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from flotilla.cli.common import HEALTH_STYLE, DataDirOption, client_settings, fail_with, pretty_json
from flotilla.cli.status_view import DEAD, instance_pid
from flotilla.codec import to_builtins
from flotilla.errors import FlotillaError
from flotilla.registry import Instance, open_registry
from flotilla.runtime.serve import run_loop

__all__ = ["instances_table", "known_dead", "ps_command"]


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
    """One row per instance: service, id, address, version, health, pid, replica."""
    table = Table("SERVICE", "INSTANCE", "ADDRESS", "VERSION", "HEALTH", "PID", "REPLICA", box=None)
    for instance in instances:
        health = DEAD if known_dead(instance) else str(instance.health)
        # Text, not markup: an id or an address ("[::1]:80") may hold brackets.
        table.add_row(
            Text(instance.service),
            Text(instance.id),
            Text(instance.address),
            Text(instance.version),
            Text(health, style=HEALTH_STYLE.get(health, "")),
            Text(instance.metadata.get("pid", "-")),
            Text(instance.metadata.get("replica", "-")),
        )
    return table


def known_dead(instance: Instance) -> bool:
    """The instance runs on this machine (a loopback address) and its pid is gone."""
    pid = instance_pid(instance)
    if pid is None or not _is_loopback(instance.host):
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it exists, owned by somebody else
    return False


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def _list(url: str) -> list[Instance]:
    registry = open_registry(url)
    try:
        return await registry.list()
    finally:
        await registry.aclose()

"""``flotilla ps``: the live instances of a running system, as a table or as JSON.

The table shows each instance's ``pid`` and ``replica`` (from its metadata).
A row whose lease has not run out yet but whose process is gone (an instance
on this machine, a loopback address, whose pid no longer exists) shows
``dead`` instead of its last reported health.  A row whose ``secret_id`` (the
public fingerprint of the cluster secret its node was started with) differs
from the one of the secret ``ps`` reads shows ``wrong secret``: its handshakes
fail, so callers never reach it, however healthy it says it is (the usual
cause is a process started with another ``FLOTILLA_SECRET``).  ``--json``
prints the registry's rows as they are.

The BREAKERS column asks each node's ops port (``/status``, the address its
instances publish as ``ops``) which circuit breakers it holds open toward
others: ``closed`` (none), ``2 open, 1 half_open``, ``?`` when the port does
not answer within half a second (``ps`` goes on), ``-`` for a node without one.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from typing import Annotated

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from flotilla.cli.common import (
    HEALTH_STYLE,
    DataDirOption,
    pretty_json,
    read_instances,
)
from flotilla.cli.status_view import DEAD, instance_pid
from flotilla.codec import to_builtins
from flotilla.registry import Instance
from flotilla.runtime.node import secret_id
from flotilla.runtime.ops_client import breaker_summaries
from flotilla.runtime.serve import run_loop

__all__ = ["WRONG_SECRET", "instances_table", "known_dead", "ps_command", "shown_health"]

WRONG_SECRET = "wrong secret"
"""What the HEALTH column shows for an instance started with another cluster secret."""


def ps_command(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON array instead of a table.")
    ] = False,
    data_dir: DataDirOption = None,
) -> None:
    """List the live instances in the registry, with their health."""
    settings, instances = read_instances(data_dir)
    if as_json:
        typer.echo(pretty_json([to_builtins(instance) for instance in instances]))
    elif instances:
        breakers = run_loop(breaker_summaries(instances))
        table = instances_table(instances, secret_id=secret_id(settings.secret), breakers=breakers)
        _console_for(table).print(table)
    else:
        typer.echo("no live instances", err=True)


def _console_for(table: Table) -> Console:
    """A console as wide as the table when the output is no terminal (a pipe, a file):
    nothing there gets cut to 80 columns."""
    console = Console()
    if console.is_terminal:
        return console
    needed = Measurement.get(console, console.options.update_width(1000), table).maximum
    return Console(width=max(console.width, needed))


def instances_table(
    instances: list[Instance],
    *,
    secret_id: str | None = None,
    breakers: Mapping[str, str] | None = None,
) -> Table:
    """One row per instance: service, id, address, version, health, pid, replica, breakers.

    With ``secret_id`` (of the reader's cluster secret), an instance published
    under another one shows :data:`WRONG_SECRET` as its health.  ``breakers``
    maps an ops address to what its node's breakers column says.
    """
    table = Table(
        "SERVICE", "INSTANCE", "ADDRESS", "VERSION", "HEALTH", "PID", "REPLICA", "BREAKERS",
        box=None,
    )  # fmt: skip
    breakers = breakers or {}
    for instance in instances:
        health = shown_health(instance, secret_id)
        # Text, not markup: an id or an address ("[::1]:80") may hold brackets.
        table.add_row(
            Text(instance.service),
            Text(instance.id),
            Text(instance.address),
            Text(instance.version),
            Text(health, style=HEALTH_STYLE.get(health, "")),
            Text(instance.metadata.get("pid", "-")),
            Text(instance.metadata.get("replica", "-")),
            Text(breakers.get(instance.metadata.get("ops", ""), "-")),
        )
    return table


def shown_health(instance: Instance, secret_id: str | None = None) -> str:
    """``dead``, else ``wrong secret``, else the health the instance reports.

    A dead process comes first (nothing else about it matters); an instance
    that publishes no ``secret_id`` (an older node) is not judged.
    """
    if known_dead(instance):
        return DEAD
    published = instance.metadata.get("secret_id")
    if secret_id is not None and published is not None and published != secret_id:
        return WRONG_SECRET
    return str(instance.health)


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

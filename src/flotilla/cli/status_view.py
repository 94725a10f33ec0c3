"""The live status table of ``flotilla run``: registry instances joined with their processes.

An instance is joined to its process by the ``pid`` its node puts in the
instance's metadata.  A killed replica's row stays in the registry until its
lease runs out, but the supervisor knows at once that the process exited: the
row is shown ``dead`` from that moment, not ``healthy`` with its old pid.

The BREAKERS column is what each replica's ops port says of the circuit
breakers it holds toward others (as in ``flotilla ps``): ``closed``, ``2 open``,
``?`` when the port did not answer this refresh.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from flotilla.cli.common import HEALTH_STYLE
from flotilla.registry import Instance, open_registry
from flotilla.runtime.ops_client import breaker_summaries
from flotilla.runtime.replica import ProcessState, ProcessStatus
from flotilla.runtime.supervisor import Supervisor

__all__ = ["DEAD", "instance_pid", "show_status", "status_table"]

DEAD = "dead"
"""What the health column says of an instance whose process is known to have exited."""

log = logging.getLogger("flotilla.cli")

# Each refresh asks every ops port: short, so one stuck node does not stall the table.
_OPS_TIMEOUT = 0.3

_STATE_STYLE = {
    ProcessState.STARTING: "cyan",
    ProcessState.RUNNING: "cyan",
    ProcessState.RESTARTING: "red",
    ProcessState.STOPPING: "yellow",
    ProcessState.STOPPED: "dim",
    ProcessState.FAILED: "red",
}


async def show_status(
    supervisor: Supervisor, registry_url: str, *, title: str, interval: float = 0.5
) -> None:
    """Redraw the status table on the terminal every ``interval`` seconds, until cancelled.

    While it shows, anything written to stderr (child output, log lines) is
    printed above the table.
    """
    registry = open_registry(registry_url)
    problem = ""
    try:
        with Live(console=Console(), refresh_per_second=2, redirect_stderr=True) as live:
            while True:
                try:
                    instances = await registry.list()
                    problem = ""
                except Exception as exc:  # a busy registry file: show it, try again
                    problem = f"registry: {exc}"
                    instances = []
                breakers = await breaker_summaries(instances, timeout=_OPS_TIMEOUT)
                table = status_table(
                    title,
                    supervisor.status(),
                    instances,
                    problem,
                    supervisor.exited_pids(),
                    breakers=breakers,
                )
                live.update(table)
                await asyncio.sleep(interval)
    finally:
        await registry.aclose()


def status_table(
    title: str,
    processes: list[ProcessStatus],
    instances: list[Instance],
    problem: str = "",
    exited_pids: frozenset[int] = frozenset(),
    *,
    breakers: Mapping[str, str] | None = None,
) -> Table:
    """One row per registered instance, then one per process not (yet) registered.

    An instance whose pid is in ``exited_pids`` is shown ``dead``.  ``breakers``
    maps an ops address to what the BREAKERS column says of its node.
    """
    table = Table(
        "SERVICE", "INSTANCE", "ADDRESS", "HEALTH", "PROCESS", "PID", "RESTARTS", "BREAKERS",
        title=title,
    )  # fmt: skip
    breakers = breakers or {}
    by_pid = {process.pid: process for process in processes if process.pid is not None}
    shown: set[str] = set()
    for instance in instances:
        pid = instance_pid(instance)
        process = by_pid.get(pid) if pid is not None else None
        if process is not None:
            shown.add(process.name)
        health = DEAD if pid is not None and pid in exited_pids else str(instance.health)
        table.add_row(
            Text(instance.service),  # Text, not markup: brackets in an id are not styles
            Text(instance.id),
            Text(instance.address),
            Text(health, style=HEALTH_STYLE.get(health, "")),
            process.name if process else "-",
            str(pid) if pid is not None else "-",
            str(process.restarts) if process else "-",
            Text(breakers.get(instance.metadata.get("ops", ""), "-")),
        )
    for process in processes:
        if process.name not in shown:
            table.add_row(*_process_row(process))
    if problem:
        table.caption = Text(problem, style="red")
    return table


def instance_pid(instance: Instance) -> int | None:
    """The pid its node put in the instance's metadata, if any (and if it is a number)."""
    text = instance.metadata.get("pid", "")
    return int(text) if text.isascii() and text.isdigit() else None


def _process_row(process: ProcessStatus) -> tuple[str | Text, ...]:
    state = process.state.value
    if process.exit_code is not None and process.state is not ProcessState.RUNNING:
        state = f"{state} (exit {process.exit_code})"
    return (
        process.service,
        "-",
        Text(process.address or "-"),
        Text(state, style=_STATE_STYLE[process.state]),
        process.name,
        str(process.pid) if process.pid is not None else "-",
        str(process.restarts),
        "-",
    )

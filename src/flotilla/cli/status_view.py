"""The live status table of ``flotilla run``: registry instances joined with their processes."""

from __future__ import annotations

import asyncio
import logging

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from flotilla.cli.common import HEALTH_STYLE
from flotilla.registry import Instance, open_registry
from flotilla.runtime.supervisor import ProcessState, ProcessStatus, Supervisor

__all__ = ["instance_pid", "show_status", "status_table"]

log = logging.getLogger("flotilla.cli")

_STATE_STYLE = {
    ProcessState.STARTING: "cyan",
    ProcessState.RUNNING: "cyan",
    ProcessState.RESTARTING: "red",
    ProcessState.STOPPING: "yellow",
    ProcessState.STOPPED: "dim",
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
                live.update(status_table(title, supervisor.status(), instances, problem))
                await asyncio.sleep(interval)
    finally:
        await registry.aclose()


def status_table(
    title: str, processes: list[ProcessStatus], instances: list[Instance], problem: str = ""
) -> Table:
    """One row per registered instance, then one per process not (yet) registered."""
    table = Table(
        "SERVICE", "INSTANCE", "ADDRESS", "HEALTH", "PROCESS", "PID", "RESTARTS", title=title
    )
    by_pid = {process.pid: process for process in processes if process.pid is not None}
    shown: set[str] = set()
    for instance in instances:
        pid = instance_pid(instance)
        process = by_pid.get(pid) if pid is not None else None
        if process is not None:
            shown.add(process.name)
        table.add_row(
            instance.service,
            instance.id,
            instance.address,
            Text(instance.health, style=HEALTH_STYLE.get(instance.health, "")),
            process.name if process else "-",
            str(pid) if pid is not None else "-",
            str(process.restarts) if process else "-",
        )
    for process in processes:
        if process.name not in shown:
            table.add_row(*_process_row(process))
    if problem:
        table.caption = Text(problem, style="red")
    return table


def instance_pid(instance: Instance) -> int | None:
    """The pid in a node's instance id (``service-<pid>-<random>``), if it has that shape."""
    parts = instance.id.rsplit("-", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def _process_row(process: ProcessStatus) -> tuple[str | Text, ...]:
    state = process.state.value
    if process.exit_code is not None and process.state is not ProcessState.RUNNING:
        state = f"{state} (exit {process.exit_code})"
    return (
        process.service,
        "-",
        "-",
        Text(state, style=_STATE_STYLE[process.state]),
        process.name,
        str(process.pid) if process.pid is not None else "-",
        str(process.restarts),
    )

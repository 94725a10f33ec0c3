"""One replica of a service: the process that runs it now, and the loop that keeps one running.

A replica's life, one task per replica (the supervisor's, see
:mod:`flotilla.runtime.supervisor`)::

    start -> running --exit--> restarting --backoff--> start      (until stop)
                |                   |
              stop               stop
                v                   v
    SIGTERM, wait <= stop_timeout, SIGKILL  -> stopped

    exit with CONFIG_EXIT_CODE -> failed (never restarted)
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import msgspec

from flotilla.aio import wait_first
from flotilla.runtime.preflight import service_environment
from flotilla.runtime.system_file import ServiceSpec

__all__ = ["CONFIG_EXIT_CODE", "Backoff", "ProcessState", "ProcessStatus", "Replica"]

log = logging.getLogger("flotilla.supervisor")

# After its process exits, a replica waits this long for the rest of its output
# (a grandchild may hold the pipe open) before it stops reading.
_OUTPUT_DRAIN = 2.0
_CHUNK = 65536
CONFIG_EXIT_CODE = 2
"""The exit code of ``flotilla serve`` for a configuration mistake: never restarted."""


class ProcessState(enum.StrEnum):
    """Where a replica is in its life (see the module docstring)."""

    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
    """Exited with :data:`CONFIG_EXIT_CODE`: not restarted."""


class ProcessStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one replica, for status displays."""

    name: str
    """``service.replica``, as in ``greeter.1``."""
    service: str
    replica: int
    """1-based; also in the process's ``FLOTILLA_REPLICA``."""
    state: ProcessState
    pid: int | None
    restarts: int
    exit_code: int | None
    """The last exit's code (negative: killed by that signal), None before any exit."""
    address: str | None = None
    """Where it serves, when that is known without the registry (the gateway's URL)."""


class Backoff:
    """How long to wait before restarting a process that exited, given how long it ran."""

    def __init__(self, first: float = 0.5, cap: float = 30.0, reset_after: float = 30.0) -> None:
        self.first = first
        self.cap = cap
        self.reset_after = reset_after
        self._next = first

    def delay(self, uptime: float) -> float:
        """The pause before the next start; each call after a short run doubles it."""
        if uptime >= self.reset_after:
            self._next = self.first  # it ran fine for a while: this is a fresh failure
        delay = self._next
        self._next = min(delay * 2, self.cap)
        return delay


class Replica:
    """One slot of one service: the current process and the loop that keeps one running."""

    def __init__(
        self,
        service: str,
        spec: ServiceSpec,
        number: int,
        *,
        system_dir: Path,
        call_environment: Mapping[str, str],
        stopping: asyncio.Event,
        stop_timeout: float,
        output: Callable[[str], None],
        on_exit: Callable[[int], None],
        command: Sequence[str] | None = None,
        address: str | None = None,
    ) -> None:
        self.system_dir = system_dir
        """The working directory of the process, first on its ``PYTHONPATH``."""
        self.call_environment = call_environment
        """The ``FLOTILLA_*`` call options of the service (from the system file)."""
        self.stopping = stopping
        """Set once, when the whole system stops."""
        self.stop_timeout = stop_timeout
        self.output = output
        """Receives each line the process writes, prefixed with the replica's name."""
        self.on_exit = on_exit
        """Told the pid of each process that exits."""
        self.service = service
        self.spec = spec
        self.number = number
        self.command = list(command) if command else _command(spec)
        """What the process runs (default: ``flotilla serve`` of the spec's class)."""
        self.address = address
        """Where it serves, when known before it starts (the gateway's URL)."""
        self.name = f"{service}.{number}"
        self.state = ProcessState.STARTING
        self.pid: int | None = None
        self.restarts = 0
        self.exit_code: int | None = None

    def snapshot(self) -> ProcessStatus:
        """What status displays show of this replica now."""
        return ProcessStatus(
            name=self.name,
            service=self.service,
            replica=self.number,
            state=self.state,
            pid=self.pid,
            restarts=self.restarts,
            exit_code=self.exit_code,
            address=self.address,
        )

    async def keep_running(self, base_env: Mapping[str, str]) -> None:
        """Start the process, restart it when it exits, until the supervisor stops."""
        stopping = self.stopping
        backoff = Backoff()
        loop = asyncio.get_running_loop()
        try:
            while not stopping.is_set():
                started = loop.time()
                await self._run_once(self._environment(base_env))
                if stopping.is_set():
                    break
                if self.exit_code == CONFIG_EXIT_CODE:
                    self.state = ProcessState.FAILED
                    log.error(
                        "%s exited with code %d (a configuration mistake; see its output): "
                        "not restarting it",
                        self.name,
                        CONFIG_EXIT_CODE,
                    )
                    return
                delay = backoff.delay(loop.time() - started)
                self.state = ProcessState.RESTARTING
                log.warning("%s %s; restarting in %.1f s", self.name, _exit(self.exit_code), delay)
                await wait_first(stopping.wait(), asyncio.sleep(delay))
                if not stopping.is_set():
                    self.restarts += 1
        finally:
            if self.state is not ProcessState.FAILED:
                self.state = ProcessState.STOPPED
            self.pid = None

    async def _run_once(self, env: dict[str, str]) -> None:
        """One process, from start to exit; on stop or cancellation it is terminated first."""
        self.state = ProcessState.STARTING
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=self.system_dir,
                # Its own session (so its own process group): a Ctrl-C in the
                # terminal reaches only the supervisor, which then stops the
                # children in order instead of racing them (their exit would
                # look like a crash to restart from).
                start_new_session=True,
            )
        except OSError as exc:
            log.error("cannot start %s: %s", self.name, exc)
            self.exit_code = None
            return
        self.state, self.pid = ProcessState.RUNNING, process.pid
        log.info("started %s (pid %d)", self.name, process.pid)
        assert process.stdout is not None
        pump = asyncio.create_task(self._pump(process.stdout), name=f"{self.name} output")
        try:
            await wait_first(process.wait(), self.stopping.wait())
        finally:
            # Reached on exit, on stop and on cancellation alike.
            await self._terminate(process)
            self.exit_code = process.returncode
            self.on_exit(process.pid)
            await _finish(pump, _OUTPUT_DRAIN)

    async def _terminate(self, process: asyncio.subprocess.Process) -> None:
        if process.returncode is not None:
            return
        self.state = ProcessState.STOPPING
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(self.stop_timeout):
                await process.wait()
        except TimeoutError:
            log.warning("%s did not stop within %.0f s; killing it", self.name, self.stop_timeout)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def _pump(self, stream: asyncio.StreamReader) -> None:
        """Copy the child's output, line by line with this replica's prefix, to the output."""
        pending = b""
        while chunk := await stream.read(_CHUNK):
            *lines, pending = (pending + chunk).split(b"\n")
            if len(pending) >= _CHUNK:  # a line that never ends: show it in pieces
                lines.append(pending)
                pending = b""
            for line in lines:
                self._emit(line)
        if pending:
            self._emit(pending)

    def _emit(self, line: bytes) -> None:
        text = line.decode(errors="replace").rstrip("\r")
        self.output(f"{self.name} | {text}")

    def _environment(self, base: Mapping[str, str]) -> dict[str, str]:
        env = service_environment(base, self.spec, self.system_dir)
        env.update(self.call_environment)
        env["FLOTILLA_REPLICA"] = str(self.number)
        return env


def _command(spec: ServiceSpec) -> list[str]:
    return [sys.executable, "-m", "flotilla", "serve", spec.class_]


async def _finish(task: asyncio.Task[None], within: float) -> None:
    """Give ``task`` ``within`` seconds to end by itself, then cancel it; it has ended on return."""
    await asyncio.wait([task], timeout=within)
    if not task.done():
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _exit(code: int | None) -> str:
    if code is None:
        return "could not start"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"

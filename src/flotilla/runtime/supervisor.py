"""Running a whole system on one machine: one OS process per service replica, kept alive.

::

    async with Supervisor(load_system_file("examples/hello"), Path("examples/hello")) as sup:
        ...                       # sup.status() says what runs where
    # leaving the block stops every process (SIGTERM, then SIGKILL after a bound)

Each replica is ``python -m flotilla serve module:Class`` with the system's
registry, data directory and secret in its environment, so the replicas find
each other through the embedded registry with nothing else to configure.

A replica's life, one task per replica::

    start -> running --exit--> restarting --backoff--> start      (until stop)
                |                   |
              stop               stop
                v                   v
    SIGTERM, wait <= stop_timeout, SIGKILL  -> stopped

A process that exits while the system runs is restarted (a service is meant
to run until stopped): after 0.5 s, then 1, 2, 4 ... up to 30 s for a process
that keeps failing; a process that stayed up 30 s starts the count again.  The
exception is exit code 2, which ``flotilla serve`` uses for a configuration
mistake (a class that cannot be imported, a bad ``FLOTILLA_*`` value): running
it again cannot help, so the replica is ``failed`` and stays so; once every
replica of the system has failed, :meth:`Supervisor.supervise` returns and
:attr:`Supervisor.all_failed` says why.

What a replica's process gets:

- its working directory is the system's directory (the one holding
  ``flotilla.toml``), which is also first on its ``PYTHONPATH``: relative paths
  in a service and ``module:Class`` names resolve from there;
- ``FLOTILLA_DATA_DIR``, ``FLOTILLA_REGISTRY``, ``FLOTILLA_SECRET``: the
  system's, so every replica finds the others with nothing to configure;
- ``FLOTILLA_REPLICA``: its 1-based number within its service (``greeter.2``
  has ``2``); a node publishes it in its instances' metadata as ``replica``;
- ``FLOTILLA_PARENT_PID``: this process's pid, see below;
- the service's ``env`` table from the system file, over all of the above.

Replicas never outlive their supervisor.  Two mechanisms, because each alone
has a hole:

- on Linux, the child (``flotilla serve``) asks the kernel for
  ``PR_SET_PDEATHSIG = SIGTERM``: whatever kills the supervisor, ``kill -9``
  included, each replica gets SIGTERM at once and drains as on a normal stop.
  The child then checks that its parent is still ``FLOTILLA_PARENT_PID``,
  since the supervisor may have died between the fork and the ``prctl``.
  The signal follows the death of the *thread* that started the child, so the
  supervisor starts children from its event loop's thread only;
- everywhere, the child also polls its parent pid every second and stops when
  it changes (re-parented: the supervisor is gone): the portable path, and the
  one that covers a platform without ``prctl``.

A pipe whose EOF tells the child would be portable too, but it needs a reader
in every child and an inherited descriptor the child's own children could keep
open; the parent-pid check needs neither.

Only one supervisor runs a data directory at a time
(:class:`~flotilla.runtime.system_lock.SystemLock`): a second one is refused
with the pid of the first.

Child output (stdout and stderr, merged) goes line by line to this process's
stderr, prefixed with the replica's name (``greeter.1 | ...``), as foreman and
docker compose do: the output of a system run in a terminal is where its user
looks, in the order it happened, and nothing accumulates on disk.  The line is
written through whatever ``sys.stderr`` is at that moment, so a live status
display that redirects stderr keeps it above the display.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

import msgspec

from flotilla.aio import wait_first
from flotilla.runtime.preflight import service_environment
from flotilla.runtime.settings import ensure_data_dir, load_secret
from flotilla.runtime.system_file import ServiceSpec, SystemSpec
from flotilla.runtime.system_lock import SystemLock

__all__ = ["CONFIG_EXIT_CODE", "Backoff", "ProcessState", "ProcessStatus", "Supervisor"]

log = logging.getLogger("flotilla.supervisor")

# After its process exits, a replica waits this long for the rest of its output
# (a grandchild may hold the pipe open) before it stops reading.
_OUTPUT_DRAIN = 2.0
_CHUNK = 65536
# How many pids of exited processes the supervisor remembers, for status
# displays that still see their registry rows (until the leases run out).
_EXITED_PIDS_KEPT = 1024

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


class Supervisor:
    """Runs the processes of ``spec``; use as ``async with`` or ``supervise()`` / ``stop()``.

    ``system_dir`` is put first on the children's ``PYTHONPATH`` and is their
    working directory.  ``environ`` is the environment the children inherit
    (``os.environ`` by default); ``output`` receives each line of child output
    (default: write it to ``sys.stderr``).
    """

    def __init__(
        self,
        spec: SystemSpec,
        system_dir: Path,
        *,
        stop_timeout: float = 15.0,
        environ: Mapping[str, str] | None = None,
        output: Callable[[str], None] | None = None,
    ) -> None:
        self.spec = spec
        self.system_dir = system_dir.absolute()
        self.stop_timeout = stop_timeout
        self._environ = dict(os.environ if environ is None else environ)
        self._output = output or _to_stderr
        self._stopping = asyncio.Event()
        self._replicas = [
            _Replica(name, service, number, self)
            for name, service in spec.services.items()
            for number in range(1, service.replicas + 1)
        ]
        self._done = asyncio.Event()
        self._started = False
        self._runner: asyncio.Task[None] | None = None
        self._env: dict[str, str] | None = None
        self._lock = SystemLock(spec.data_dir)
        self._exited_pids: dict[int, None] = {}  # insertion-ordered set, oldest first

    @property
    def all_failed(self) -> bool:
        """Every replica exited with the configuration exit code (so nothing runs)."""
        return all(replica.state is ProcessState.FAILED for replica in self._replicas)

    def exited_pids(self) -> frozenset[int]:
        """Pids of this supervisor's processes that have exited (the most recent ones)."""
        return frozenset(self._exited_pids)

    def _exited(self, pid: int) -> None:
        self._exited_pids[pid] = None
        if len(self._exited_pids) > _EXITED_PIDS_KEPT:
            del self._exited_pids[next(iter(self._exited_pids))]

    def status(self) -> list[ProcessStatus]:
        """Every replica's state, in the order of the system file."""
        return [replica.snapshot() for replica in self._replicas]

    async def supervise(self) -> None:
        """Run every replica until :meth:`stop`.

        Cancelling this stops every process first (as :meth:`stop` does), so no
        child outlives it.
        """
        if self._started:
            raise RuntimeError("a Supervisor runs once")
        self._started = True
        try:
            if self._stopping.is_set():
                return  # stopped before it started: claim nothing, start nothing
            base_env = self._env or self._base_environment()
            async with asyncio.TaskGroup() as tasks:
                for replica in self._replicas:
                    tasks.create_task(replica.keep_running(base_env), name=replica.name)
        finally:
            for replica in self._replicas:
                if replica.state is not ProcessState.FAILED:
                    replica.state = ProcessState.STOPPED
            self._lock.release()
            self._done.set()

    async def stop(self) -> None:
        """Stop every process and return once all have exited; idempotent.

        Each gets SIGTERM (a node drains on it), and SIGKILL if it is still
        running ``stop_timeout`` seconds later.
        """
        self._stopping.set()
        if self._started:
            await self._done.wait()

    async def wait_stopped(self) -> None:
        """Return once :meth:`supervise` has ended (after :meth:`stop`, or on a failure)."""
        await self._done.wait()

    async def __aenter__(self) -> Supervisor:
        # A data dir that cannot be made, or that another supervisor runs, fails here.
        self._env = self._base_environment()
        self._runner = asyncio.create_task(self.supervise(), name="supervisor")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._runner is not None
        try:
            await self.stop()
        except BaseException:
            # Cancelled again while stopping: the runner terminates what is
            # left itself once cancelled; it must not be left running.
            self._runner.cancel()
            raise
        await self._runner  # raises what the runner raised, if anything

    def _base_environment(self) -> dict[str, str]:
        """What every child's environment starts from.

        Creates the data dir and the secret, and claims the directory
        (:class:`SystemLock`) before any process starts.
        """
        ensure_data_dir(self.spec.data_dir)
        self._lock.acquire()
        try:
            secret = load_secret(self.spec.data_dir)
        except BaseException:
            self._lock.release()
            raise
        env = dict(self._environ)
        env["FLOTILLA_PARENT_PID"] = str(os.getpid())
        env["FLOTILLA_DATA_DIR"] = str(self.spec.data_dir)
        env["FLOTILLA_REGISTRY"] = self.spec.registry
        env["FLOTILLA_SECRET"] = secret.decode()
        # Output goes through a pipe: without this, a child's print() would
        # sit in a block buffer and show up late, out of order with its logs.
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env


class _Replica:
    """One slot of one service: the current process and the loop that keeps one running."""

    def __init__(self, service: str, spec: ServiceSpec, number: int, owner: Supervisor) -> None:
        # What the replicas share with their supervisor, read once.
        self.system_dir = owner.system_dir
        self.stop_timeout = owner.stop_timeout
        self.stopping = owner._stopping  # set once, by Supervisor.stop
        self.output = owner._output
        self.on_exit = owner._exited
        self.service = service
        self.spec = spec
        self.call_environment = owner.spec.call_environment(service)
        self.number = number
        self.name = f"{service}.{number}"
        self.state = ProcessState.STARTING
        self.pid: int | None = None
        self.restarts = 0
        self.exit_code: int | None = None

    def snapshot(self) -> ProcessStatus:
        return ProcessStatus(
            name=self.name,
            service=self.service,
            replica=self.number,
            state=self.state,
            pid=self.pid,
            restarts=self.restarts,
            exit_code=self.exit_code,
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
                *_command(self.spec),
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


def _to_stderr(line: str) -> None:
    # sys.stderr is looked up on every line, not bound once: see the module docstring.
    print(line, file=sys.stderr, flush=True)

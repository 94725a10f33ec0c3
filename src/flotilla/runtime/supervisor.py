"""Running a whole system on one machine: one OS process per service replica, kept alive.

::

    async with Supervisor(load_system_file("examples/hello"), Path("examples/hello")) as sup:
        ...                       # sup.status() says what runs where
    # leaving the block stops every process (SIGTERM, then SIGKILL after a bound)

Each replica is ``python -m flotilla serve module:Class`` with the system's
registry, data directory and secret in its environment, so the replicas find
each other through the embedded registry with nothing else to configure.  A
system with a ``[gateway]`` table also runs ``python -m flotilla gateway``
(process ``gateway.1``), supervised the same way.

A replica's life, one task per replica, is :mod:`flotilla.runtime.replica`'s.
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
- ``FLOTILLA_DATA_DIR``, ``FLOTILLA_REGISTRY``, ``FLOTILLA_EVENTS``,
  ``FLOTILLA_SECRET``: the system's (the spec's URLs, which ``flotilla run``
  chose by :mod:`flotilla.runtime.backends`), so every replica finds the
  others with nothing to configure;
- ``FLOTILLA_DATABASE_URL_<SERVICE>``: its service's database, when its
  entry or the system's database names one (a schema of its own on a shared
  PostgreSQL, see :func:`flotilla.data.url.service_url`);
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
import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

from flotilla.runtime.gateway_spec import GATEWAY_ENTRY, GatewaySpec, gateway_port
from flotilla.runtime.replica import ProcessState, ProcessStatus, Replica
from flotilla.runtime.settings import ensure_data_dir, load_secret
from flotilla.runtime.system_file import ServiceSpec, SystemSpec
from flotilla.runtime.system_lock import SystemLock

__all__ = ["Supervisor"]

log = logging.getLogger("flotilla.supervisor")

# How many pids of exited processes the supervisor remembers, for status
# displays that still see their registry rows (until the leases run out).
_EXITED_PIDS_KEPT = 1024


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
            Replica(
                name,
                service,
                number,
                system_dir=self.system_dir,
                call_environment=spec.call_environment(name),
                stopping=self._stopping,
                stop_timeout=stop_timeout,
                output=self._output,
                on_exit=self._exited,
            )
            for name, service in spec.services.items()
            for number in range(1, service.replicas + 1)
        ]
        if spec.gateway is not None:
            self._replicas.append(self._gateway_replica(spec.gateway))
        self._done = asyncio.Event()
        self._started = False
        self._runner: asyncio.Task[None] | None = None
        self._env: dict[str, str] | None = None
        self._lock = SystemLock(spec.data_dir)
        self._exited_pids: dict[int, None] = {}  # insertion-ordered set, oldest first

    def _gateway_replica(self, gateway: GatewaySpec) -> Replica:
        """The gateway's process: ``flotilla gateway``, its table in ``FLOTILLA_GATEWAY``."""
        port = gateway_port(gateway, self._environ)
        return Replica(
            GATEWAY_ENTRY,
            ServiceSpec(class_="", env=gateway.env),
            1,
            system_dir=self.system_dir,
            call_environment=self.spec.call_environment(GATEWAY_ENTRY),
            stopping=self._stopping,
            stop_timeout=self.stop_timeout,
            output=self._output,
            on_exit=self._exited,
            command=[sys.executable, "-m", "flotilla", "gateway"],
            address=f"http://{gateway.host}:{port}",
        )

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
        if self.spec.events:
            env["FLOTILLA_EVENTS"] = self.spec.events
        env["FLOTILLA_SECRET"] = secret.decode()
        # Output goes through a pipe: without this, a child's print() would
        # sit in a block buffer and show up late, out of order with its logs.
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env


def _to_stderr(line: str) -> None:
    # sys.stderr is looked up on every line, not bound once: see the module docstring.
    print(line, file=sys.stderr, flush=True)

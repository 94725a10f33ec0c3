"""Running the eventful system as real processes, and reading what they did from their databases.

Each service runs as ``python -m flotilla serve module:Class`` in a process of
its own, on the data directory of one test: the embedded registry, a database
file per service (``ledger.db``, ``tally.db``), and the event backend of the
test's :class:`~tests.system.eventful.brokers.Broker` (the embedded log
``events.db``, or NATS JetStream).
The test process calls and emits as an outside client, and counts effects by
reading ``tally.db`` directly.  Every wait polls a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from tests.system.eventful.brokers import Broker, EmbeddedBroker

from flotilla import Node, NodeConfig
from flotilla.registry import Health, open_registry
from flotilla.runtime.settings import Settings

__all__ = ["Broker", "Effect", "EventfulSystem", "Served", "wait_until"]

HERE = Path(__file__).resolve().parent
T = TypeVar("T")
Effect = tuple[str, str, int, int]
"""A row of ``tally.db``'s ``effects``: (group, event id, entry id, pid)."""


async def wait_until(what: str, probe: Callable[[], T], *, timeout: float = 15.0) -> T:
    """Poll ``probe`` until it returns something true; that value (fails after ``timeout``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := probe()):
        if loop.time() > deadline:
            raise AssertionError(f"waited {timeout} s for {what}; last saw {value!r}")
        await asyncio.sleep(0.05)
    return value


class Served:
    """One ``flotilla serve`` process, its output in a log file."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.pid = process.pid
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def kill(self) -> None:
        """SIGKILL: no drain, no deregistration, open transactions cut where they stand."""
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()


class EventfulSystem:
    """The processes of one test, on one data directory; ``env`` goes to every process."""

    def __init__(
        self, root: Path, broker: Broker | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        self.root = root
        self.broker = broker or EmbeddedBroker()
        data_dir = root / "data"
        self.settings = Settings.from_env(
            {"FLOTILLA_DATA_DIR": str(data_dir), "FLOTILLA_EVENTS": self.broker.url(data_dir)}
        )
        self.data_dir = self.settings.data_dir
        self.env = dict(env or {})
        self.served: list[Served] = []

    async def serve(self, spec: str, **env: str) -> Served:
        """Start ``flotilla serve spec``; returns once its instance is registered healthy."""
        [served] = await self.serve_all(spec, **env)
        return served

    async def serve_all(self, *specs: str, **env: str) -> list[Served]:
        """Start a process for each of ``specs`` at once; returns once all are healthy (their
        consumers' groups then exist: consumers start before a node registers)."""
        started = [await self._start(spec, env) for spec in specs]
        await asyncio.gather(*(self.wait_healthy(served) for served in started))
        return started

    async def _start(self, spec: str, env: dict[str, str]) -> Served:
        log = self.root / f"{spec.partition(':')[0]}-{len(self.served)}.log"
        with log.open("wb") as sink:
            process = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "flotilla", "serve", spec),
                cwd=self.root,
                env={**os.environ, **self._env(), **self.env, **env},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=sink,
                stderr=asyncio.subprocess.STDOUT,
            )
        served = Served(process, log)
        self.served.append(served)
        return served

    def _env(self) -> dict[str, str]:
        return {
            "FLOTILLA_DATA_DIR": str(self.data_dir),
            "FLOTILLA_EVENTS": self.settings.events,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        }

    async def wait_healthy(self, served: Served) -> None:
        registry = open_registry(self.settings.registry)
        try:
            async with asyncio.timeout(60):  # a failing wait's bound; starting is slow when busy
                while not any(
                    instance.metadata.get("pid") == str(served.pid)
                    and instance.health is Health.HEALTHY
                    for instance in await registry.list()
                ):
                    if served.process.returncode is not None:
                        raise AssertionError(f"pid {served.pid} exited:\n{served.output()}")
                    await asyncio.sleep(0.05)
        finally:
            await registry.aclose()

    async def kill_all(self) -> None:
        """Kill every process still running: nothing more can be handled, so what the
        databases hold from then on is final.  (Quicker than a graceful stop, which would
        wait out the registry's grace and the drain.)"""
        for served in self.served:
            if served.process.returncode is None:
                await served.kill()

    async def aclose(self) -> None:
        """Kill whatever is left (a test that failed half-way)."""
        await self.kill_all()

    @asynccontextmanager
    async def client(self, **config: Any) -> AsyncIterator[Node]:
        """A node of this test process on the system's registry (and ``config``)."""
        settings = self.settings
        base = NodeConfig(registry=settings.registry, secret=settings.secret)
        async with Node(config=base.replace(**config)) as node:
            yield node

    # -- what the databases hold ------------------------------------------------------------

    def effects(self, group: str | None = None) -> list[Effect]:
        """The rows of ``tally.db``'s ``effects`` (of ``group``, or of every group)."""
        query = 'SELECT "group", event_id, entry_id, pid FROM effects'
        with self._read(self.data_dir / "tally.db") as db:
            if group is None:
                return list(db.execute(query))
            return list(db.execute(query + ' WHERE "group" = ?', (group,)))

    def inbox(self) -> dict[str, int]:
        """``tally.db``'s inbox: events recorded as handled, by consumer group."""
        query = 'SELECT "group", count(*) FROM flotilla_inbox GROUP BY "group"'
        with self._read(self.data_dir / "tally.db") as db:
            return {group: count for group, count in db.execute(query)}

    def outbox(self) -> list[tuple[str, float | None]]:
        """``ledger.db``'s outbox: (event id, sent at) per row, in the order of the commits."""
        with self._read(self.data_dir / "ledger.db") as db:
            return list(db.execute("SELECT event_id, sent_at FROM flotilla_outbox ORDER BY id"))

    def claimed(self) -> int:
        """Rows of ``ledger.db``'s outbox a relay holds a claim on, unsent."""
        query = (
            "SELECT count(*) FROM flotilla_outbox WHERE claimed_by IS NOT NULL AND sent_at IS NULL"
        )
        with self._read(self.data_dir / "ledger.db") as db:
            return int(db.execute(query).fetchone()[0])

    @staticmethod
    @contextmanager
    def _read(path: Path) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
        try:
            yield db
        finally:
            db.close()

    def broker_down(self) -> contextlib.AbstractAsyncContextManager[None]:
        """The event backend unreachable inside the block (see :mod:`.brokers`)."""
        return self.broker.down(self.data_dir)

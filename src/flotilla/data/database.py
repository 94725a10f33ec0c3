"""A service's own database: declared on the class, opened by the node, reached as ``self.db``.

::

    class Orders(Service, name="orders"):
        db = Database(metadata=Base.metadata)

        @rpc
        async def place(self, ctx: Context, sku: str) -> int:
            async with self.db.transaction(ctx) as tx:
                order = Order(sku=sku)
                tx.session.add(order)
                await tx.session.flush()
                tx.emit("order.created", OrderCreated(id=order.id), key=sku)
            return order.id

The attribute on the class is a declaration; each service object gets its own
bound copy on first access, and the node opens it (which URL: see
:mod:`flotilla.data.url`).  Opening connects and migrates (see
:mod:`flotilla.data.schema`).  States::

    CLOSED --open()--> CONNECTING --connected and migrated--> READY
                        |      ^
                        +------+  failed: reason kept, tried again after a backoff
    any --aclose()--> CLOSED

A node opens its databases in the background: one that cannot be reached does
not stop the process; :meth:`Database.check` (called by the node's health check,
so the instance is published unhealthy) raises ``Unavailable`` naming the URL
(password masked) and the reason until it connects.

How each kind of database is set up is :mod:`flotilla.data.engine`'s.  SQLite
has one writer at a time, and every transaction begins ``IMMEDIATE``: within
one process, transactions take turns on a lock of this object's, so they do
not spin in SQLite's busy handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import MetaData, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from flotilla.aio import cancel_and_wait
from flotilla.data.engine import create_engine, reason
from flotilla.data.policy import DatabasePolicy
from flotilla.data.schema import migrate
from flotilla.data.transaction import Transaction, open_transaction
from flotilla.data.url import mask, normalize_url
from flotilla.errors import ConfigError, FailedPrecondition, Unavailable
from flotilla.events.envelope import Envelope

__all__ = ["Database"]

log = logging.getLogger("flotilla.data")


class Database:
    """A service's database (see the module docstring).

    ``url`` is the default when the configuration names none; ``metadata`` holds
    the service's tables, created at start; ``engine_options`` go to SQLAlchemy's
    ``create_async_engine`` (pool sizes, ``connect_args``...).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        metadata: MetaData | None = None,
        engine_options: Mapping[str, Any] | None = None,
        policy: DatabasePolicy | None = None,
        source: str = "",
    ) -> None:
        self.declared_url = url
        self.metadata = metadata
        self.engine_options = dict(engine_options or {})
        self.policy = policy or DatabasePolicy()
        self.source = source
        """The service whose database this is: the ``source`` of the events it emits."""
        self.instance = ""
        """The instance id of that service (set by the node once it is known)."""
        self.url: URL | None = None
        self._attribute: str | None = None
        self._engine: AsyncEngine | None = None
        self._ready = asyncio.Event()
        self._problem = "not opened"
        self._connector: asyncio.Task[None] | None = None
        self._commit_listeners: list[Callable[[], None]] = []
        # SQLite has one writer at a time; the processes' own writers queue here.
        self._writer = asyncio.Lock()
        self._writing: asyncio.Task[Any] | None = None  # the task whose turn it is
        self._serialise = False

    # -- the declaration on a service class ----------------------------------------------

    def __set_name__(self, owner: type, name: str) -> None:
        self._attribute = name

    def __get__(self, instance: object | None, owner: type | None = None) -> Database:
        """On the class: the declaration; on a service object: that object's own database."""
        if instance is None or self._attribute is None:
            return self
        bound: Database | None = instance.__dict__.get(self._attribute)
        if bound is None:
            bound = Database(
                self.declared_url,
                metadata=self.metadata,
                engine_options=self.engine_options,
                policy=self.policy,
                source=getattr(instance, "name", ""),
            )
            instance.__dict__[self._attribute] = bound
        return bound

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Connected and migrated: transactions may run."""
        return self._ready.is_set()

    @property
    def where(self) -> str:
        """The URL, password masked (for messages)."""
        return mask(self.url) if self.url is not None else "(not opened)"

    async def open(self, url: str | URL | None = None, *, background: bool = False) -> None:
        """Connect and migrate.  ``url`` overrides the declared one (default: SQLite in memory;
        URLs as in :mod:`flotilla.data.url`).

        An unusable URL (unknown scheme, driver not installed) raises
        ``ConfigError`` either way.  A database that cannot be reached raises
        ``Unavailable``, unless ``background``: then the attempts go on in a
        task of this object's own, and :meth:`check` reports why it is not ready.
        """
        if self._engine is not None:
            raise RuntimeError(f"database {self.where} is already open")
        if isinstance(url, URL):
            self.url = url  # already normalised (data/url.py's choose_url)
        else:
            self.url = normalize_url(url or self.declared_url or "sqlite://")
        self._serialise = self.url.drivername.startswith("sqlite")
        self._engine = create_engine(self.url, self.engine_options, self.policy.busy_timeout)
        try:
            await self._attempt()
        except (Exception, TimeoutError) as exc:
            if not background:
                await self.aclose()
                raise self._unreachable(exc) from exc
            self._note_failure(exc)
            self._connector = asyncio.create_task(self._keep_trying(), name=f"connect {self.where}")

    async def aclose(self) -> None:
        """Stop trying to connect and close every connection; idempotent."""
        connector, self._connector = self._connector, None
        if connector is not None:
            await cancel_and_wait(connector, log)
        engine, self._engine = self._engine, None
        self._ready.clear()
        self._problem = "closed"
        if engine is not None:
            await engine.dispose()

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Return once the database is ready; ``TimeoutError`` after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            await self._ready.wait()

    async def check(self) -> None:
        """Raise ``Unavailable`` (naming the URL and the reason) unless the database is usable.

        For health checks and readiness probes: cheap on SQLite (the state
        only), one ``SELECT 1`` on a server (bounded by ``connect_timeout``).
        """
        if not self.ready or self._engine is None:
            raise Unavailable(f"database {self.where} is not ready: {self._problem}")
        if self._serialise:
            return  # a file or memory of this machine: nothing in between to fail
        try:
            async with asyncio.timeout(self.policy.connect_timeout), self._engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (Exception, TimeoutError) as exc:
            raise Unavailable(f"database {self.where} does not answer: {reason(exc)}") from None

    # -- transactions ---------------------------------------------------------------------

    def transaction(
        self, context: object | None = None, *, event: Envelope | None = None, group: str = ""
    ) -> contextlib.AbstractAsyncContextManager[Transaction]:
        """``async with db.transaction(ctx) as tx``: one unit of work, committed at the end.

        ``tx.session`` is an ``AsyncSession`` (do not commit it yourself: the
        block does, or rolls back on an exception); ``tx.emit`` stores events in
        the outbox in the same transaction.  Given the event being handled
        (``ctx`` of an event handler, or ``event=``), the transaction first
        records it in the inbox of ``group`` (default: this service) and raises
        :class:`~flotilla.events.AlreadyHandled` if that group handled it before.
        """
        return open_transaction(self, context, event=event, group=group)

    def on_commit(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` after each commit that stored events; returns a function that
        stops it (the relay is woken this way)."""
        self._commit_listeners.append(listener)
        return lambda: self._commit_listeners.remove(listener)

    def committed_events(self) -> None:
        """Tell the listeners that a transaction committed events (called by transactions)."""
        for listener in tuple(self._commit_listeners):
            listener()

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection inside one transaction, committed when the block ends (for Flotilla's
        own statements and for tools; services use :meth:`transaction`)."""
        engine = self._engine
        if engine is None or not self.ready:
            raise Unavailable(f"database {self.where} is not ready: {self._problem}")
        async with contextlib.AsyncExitStack() as stack:
            if self._serialise:
                await stack.enter_async_context(self._turn())
            try:
                conn = await stack.enter_async_context(engine.begin())
            except (OSError, DBAPIError) as exc:
                # The server went away, or another process held SQLite's write
                # lock past the busy timeout: an outage, in Flotilla's terms.
                raise Unavailable(f"database {self.where} cannot be used: {reason(exc)}") from exc
            yield conn

    @asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """This process's turn to write an SQLite database (one writer at a time)."""
        task = asyncio.current_task()
        if task is not None and task is self._writing:
            # Waiting for our own turn would wait forever: say what to do instead.
            raise FailedPrecondition(
                f"a transaction on database {self.where} is already open in this task;"
                " nest with `async with tx.session.begin_nested()` instead"
            )
        async with self._writer:
            self._writing = task
            try:
                yield
            finally:
                self._writing = None

    # -- connecting -----------------------------------------------------------------------

    async def _attempt(self) -> None:
        assert self._engine is not None
        async with asyncio.timeout(self.policy.connect_timeout), self._engine.begin() as conn:
            await conn.run_sync(migrate, self.metadata)
        self._problem = ""
        self._ready.set()

    async def _keep_trying(self) -> None:
        failures = 1
        while True:
            await asyncio.sleep(self.policy.reconnect.delay(failures))
            try:
                await self._attempt()
            except (Exception, TimeoutError) as exc:
                failures += 1
                self._note_failure(exc)
                continue
            log.warning("database %s is reachable again; ready", self.where)
            return

    def _note_failure(self, exc: BaseException) -> None:
        problem = reason(exc)
        if problem != self._problem:  # once per distinct failure, not once per attempt
            log.warning(
                "database %s cannot be used: %s (service %s not ready; trying again)",
                self.where,
                problem,
                self.source or "-",
            )
        self._problem = problem

    def _unreachable(self, exc: BaseException) -> Exception:
        if isinstance(exc, ConfigError):
            return exc
        return Unavailable(f"database {self.where} cannot be reached: {reason(exc)}")

"""One connection to NATS, opened on first use, shared by the NATS backends' calls.

The backends are made by a synchronous factory (``from_url``), so the
connection cannot be opened there: :meth:`NatsLink.connection` opens it on the
first call and every later call reuses it.  nats-py then reconnects by itself
for as long as the link is open; while it is down, calls fail within
``timeout`` as :class:`~flotilla.errors.Unavailable` (never hang), and
whatever waited on the connection resumes when it is back.

::

    new --connection()--> open --aclose()--> closed
     |                                          ^
     +----------------aclose()------------------+

A closed link refuses calls with :class:`~flotilla.errors.FailedPrecondition`.

Connection problems are logged once per streak (:class:`_Streak`): the first
failure, or the disconnection, as a warning; the failed tries after it (nats-py
reports each, a few a second while a server is down or a port refused) at
debug level only; and one line when the connection works again, with how
many tries failed meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext

from flotilla.errors import ConfigError, FailedPrecondition, Unavailable
from flotilla.resolve import mask_url

__all__ = ["ConnectionListener", "NatsLink", "nats_errors_as_unavailable"]

log = logging.getLogger("flotilla.nats")

DEFAULT_TIMEOUT = 5.0

ConnectionListener = Callable[[bool], Awaitable[None]]
"""Told ``False`` when the connection is lost, ``True`` when it is back."""
# What nats-py reports while it cannot reach the server or lost it.
_CONNECTION_PROBLEMS = (
    OSError,
    TimeoutError,
    nats.errors.NoServersError,
    nats.errors.UnexpectedEOF,
    nats.errors.StaleConnectionError,
    nats.errors.ConnectionClosedError,
    nats.errors.TimeoutError,
)


@contextmanager
def nats_errors_as_unavailable(what: str) -> Iterator[None]:
    """Raise a lost or refused connection (or a timeout waiting on NATS) as ``Unavailable``.

    JetStream API errors (a wrong last sequence, a missing key) pass through:
    the caller knows what they mean for it.
    """
    try:
        yield
    except nats.js.errors.APIError:
        raise
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        raise Unavailable(f"NATS unavailable while {what}: {type(exc).__name__} {exc}") from exc


class NatsLink:
    """A NATS connection opened on first use; ``what`` names its owner in errors and logs."""

    def __init__(self, url: str, *, what: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("nats", "tls") or not parts.hostname:
            raise ConfigError(f"{what}: {url!r} is not a NATS URL like 'nats://127.0.0.1:4222'")
        if not timeout > 0:
            raise ConfigError(f"{what}: timeout must be positive, not {timeout!r}")
        # The query string carries the backends' options, not the server's address.
        self.url = parts._replace(query="", fragment="").geturl()
        self.shown = mask_url(self.url)
        """The URL as errors and logs show it (a password is ``***``)."""
        self.what = what
        self.timeout = timeout
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._opening = asyncio.Lock()
        self._closed = False
        self._streak = _Streak(what, self.shown)
        self._listeners: list[ConnectionListener] = []

    @property
    def closed(self) -> bool:
        return self._closed

    async def connection(self) -> Client:
        """The open connection, connecting first if this is the first call."""
        self.check_open()
        async with self._opening:
            self.check_open()
            if self._client is None:
                with nats_errors_as_unavailable(f"connecting {self.what} to {self.shown}"):
                    self._client = await nats.connect(
                        servers=[self.url],
                        name=f"flotilla {self.what}",
                        connect_timeout=self.timeout,
                        # Two tries at first (nats-py's smallest finite count; 0
                        # means forever), so a caller is not held up for long.
                        max_reconnect_attempts=1,
                        reconnect_time_wait=0.5,
                        error_cb=self._on_error,
                        disconnected_cb=self._on_disconnected,
                        reconnected_cb=self._on_reconnected,
                    )
                # Once connected, reconnect until aclose: a server restart is
                # routine.  nats-py reads the option at each reconnect.
                self._client.options["max_reconnect_attempts"] = -1
                self._streak.ended("connected to")
            return self._client

    async def jetstream(self) -> JetStreamContext:
        """The JetStream context of the connection (made once)."""
        if self._js is None or self._client is None:
            self._js = (await self.connection()).jetstream(timeout=self.timeout)
        return self._js

    def add_listener(self, listener: ConnectionListener) -> None:
        """Have ``listener`` told when the connection is lost and when it is back."""
        self._listeners.append(listener)

    def check_open(self) -> None:
        if self._closed:
            raise FailedPrecondition(f"the {self.what} is closed")

    async def aclose(self) -> None:
        """Close the connection (flushing what was sent); idempotent."""
        if self._closed:
            return
        self._closed = True
        async with self._opening:
            client, self._client, self._js = self._client, None, None
        if client is not None and not client.is_closed:
            # close(), not drain(): every write that mattered already has its
            # acknowledgement, and a drain can wait long on a dead server.
            # Bounded: nats-py's close waits for its socket to flush, which a
            # stalled server may never let happen.
            try:
                async with asyncio.timeout(self.timeout):
                    await client.close()
            except TimeoutError:
                log.warning(
                    "%s: the NATS connection did not close in %s s", self.what, self.timeout
                )

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, _CONNECTION_PROBLEMS):
            self._streak.failed(exc)
        else:  # not about reaching the server (a slow consumer, a permission): always said
            log.warning("%s: NATS connection to %s: %r", self.what, self.shown, exc)

    async def _on_disconnected(self) -> None:
        if not self._closed:
            self._streak.disconnected()
            await self._tell(up=False)

    async def _on_reconnected(self) -> None:
        self._streak.ended("reconnected to")
        await self._tell(up=True)

    async def _tell(self, *, up: bool) -> None:
        for listener in self._listeners:
            try:
                await listener(up)
            except Exception:  # one listener's bug must not stop nats-py's reconnecting
                log.exception("%s: a connection listener failed", self.what)


class _Streak:
    """One warning per run of connection failures, one line when it ends::

    ok --failed/disconnected (warning)--> failing --failed (debug, counted)--> failing
    failing --connected/reconnected (info, with the count)--> ok
    """

    def __init__(self, what: str, shown: str) -> None:
        self.what = what
        self.shown = shown
        self.failing = False
        self.failures = 0

    def failed(self, exc: Exception) -> None:
        self.failures += 1
        if self.failing:
            log.debug("%s: NATS connection to %s: %s", self.what, self.shown, exc)
            return
        self.failing = True
        log.warning(
            "%s: NATS connection to %s failed: %s; trying again (logged once until it works)",
            self.what,
            self.shown,
            exc,
        )

    def disconnected(self) -> None:
        if not self.failing:
            self.failing = True
            log.warning("%s: disconnected from NATS at %s; reconnecting", self.what, self.shown)

    def ended(self, how: str) -> None:
        if self.failing:
            log.info(
                "%s: %s NATS at %s (%d failed tries meanwhile)",
                self.what,
                how,
                self.shown,
                self.failures,
            )
        self.failing = False
        self.failures = 0

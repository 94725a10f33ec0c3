"""Taking messages from a JetStream pull consumer: as many as asked for, never more.

A :class:`Puller` asks its consumer for up to ``n`` messages with ``no_wait``
on an inbox of its own, so no message is taken that its subscriber did not
ask for: the others of the group get the rest.  Asking is split in two, so
that one subscription can ask all its consumers first and then read their
answers, one round trip for all of them::

    await puller.ask(n)         # publish the request (buffered, not flushed)
    msgs = await puller.answer()  # up to n messages

The server answers at once: the messages it has (up to ``n``), then, when
they are fewer than ``n``, a status (404: none at all, 408: no more).  When
the consumer is at its ``max_ack_pending`` it keeps the request instead and
would answer it whenever the held message is acked, to nobody asking; so an
ask of a bounded consumer (``max_ack_pending=1``) also ``expires`` after
``PULL_EXPIRES``, and a puller that knows its own subscriber holds the
consumer's one pending message (:attr:`Puller.holding`) does not ask at all.
A message that comes after its ask timed out (a slow server) is not lost: it
answers the next ask.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from flotilla.errors import Unavailable

__all__ = ["Puller"]

# Short: an ask of a bounded consumer with nothing waits this long for its 408.
PULL_EXPIRES = 0.002
# A bounded consumer gives one message at most, so its ask is always the same.
# nats-server 2.9 answers an ask with ``expires`` some milliseconds late, so
# only the asks that may be kept carry it.
_ASK_BOUNDED = json.dumps(
    {"batch": 1, "no_wait": True, "expires": int(PULL_EXPIRES * 1e9)}
).encode()
# Statuses that end an answer: no messages (404), request expired or no more
# messages (408), max ack pending or similar limits reached (409).
_END = {"404", "408", "409"}


def _ask(n: int) -> bytes:
    return b'{"batch":%d,"no_wait":true}' % n


class Puller:
    """One pull consumer of ``stream``: :meth:`ask` for up to ``n``, then :meth:`answer`."""

    def __init__(
        self, client: Client, stream: str, consumer: str, *, timeout: float, bounded: bool
    ) -> None:
        self.bounded = bounded
        """The consumer has ``max_ack_pending=1``: it gives one message at a time."""
        self.holding = 0
        """Deliveries of a bounded consumer this subscriber holds (not acked, naked or ended)."""
        self._client = client
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._timeout = timeout
        self._inbox = client.new_inbox()
        self._sub: Subscription | None = None
        # What arrived on the inbox and is not read yet.  A callback fills it
        # (nats-py's ``next_msg`` makes a task per message).
        self._arrived: deque[Msg] = deque()
        self._woken: asyncio.Future[None] | None = None
        self._asked = 0  # messages asked for by the ask whose answer is not read yet
        self._early: list[Msg] = []  # messages that answered an earlier ask too late

    @property
    def can_ask(self) -> bool:
        """False for a bounded consumer whose one pending message this subscriber holds."""
        return not (self.bounded and self.holding)

    async def ask(self, n: int) -> None:
        """Ask the consumer for up to ``n`` messages (``n`` is 1 for a bounded one)."""
        if self._sub is None:
            self._sub = await self._client.subscribe(self._inbox, cb=self._arrive)
        # Whatever is here answered an earlier ask too late: messages are ours
        # (the server counts them as delivered), statuses are stale.
        self._early = [msg for msg in self._arrived if _status(msg) is None]
        self._arrived.clear()
        n = 1 if self.bounded else n
        if len(self._early) >= n:
            self._asked = 0  # a late answer is already here: no need to ask
            return
        self._asked = n - len(self._early)
        ask = _ASK_BOUNDED if self.bounded else _ask(self._asked)
        await self._client.publish(self._next, ask, reply=self._inbox)

    async def answer(self) -> list[Msg]:
        """The messages that answer the last :meth:`ask` (maybe none)."""
        taken, self._early = self._early, []
        asked, self._asked = self._asked, 0
        got = 0
        while got < asked:
            if not self._arrived:
                await self._wait()
            msg = self._arrived.popleft()
            status = _status(msg)
            if status is None:
                taken.append(msg)
                got += 1
            elif status in _END:
                break
            # 100 is a heartbeat; anything else is the server refusing: say so.
            elif status != "100":
                raise Unavailable(f"JetStream refused a pull: {status} {msg.headers}")
        if self.bounded:
            self.holding += len(taken)
        return taken

    def release(self) -> None:
        """A delivery of this puller ended (acked, naked, dead-lettered, or given up)."""
        self.holding = max(0, self.holding - 1)

    async def aclose(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def _arrive(self, msg: Msg) -> None:
        self._arrived.append(msg)
        woken, self._woken = self._woken, None
        if woken is not None and not woken.done():
            woken.set_result(None)

    async def _wait(self) -> None:
        """Wait for the next message on the inbox, at most ``timeout``."""
        self._woken = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self._timeout):
                await self._woken
        except TimeoutError:
            raise Unavailable(f"JetStream did not answer a pull in {self._timeout} s") from None
        finally:
            self._woken = None


def _status(msg: Msg) -> str | None:
    """The status of a server's reply (``404``...), None for a message of the stream."""
    return msg.headers.get("Status") if msg.headers else None

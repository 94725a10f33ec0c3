"""Taking one message at a time from a JetStream pull consumer, never more.

A :class:`Puller` asks its consumer for one message with ``no_wait`` on an
inbox of its own, so no message is ever taken before a subscriber asks for
it: the others of the group get what this one does not ask for.  The server
answers at once (a message, or 404: none), except when the consumer is at its
``max_ack_pending``: then it keeps the request and would answer it whenever the
held message is acked, to nobody asking.  So each ask of such a (bounded)
consumer also ``expires`` after ``PULL_EXPIRES`` (the server answers 408),
and a puller that knows its own subscriber holds the consumer's one pending
message (:attr:`Puller.holding`) does not ask at all.  A reply that comes
after its ask timed out (a slow server) is not lost: it answers the next ask.
"""

from __future__ import annotations

import contextlib
import json

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from flotilla.errors import Unavailable

__all__ = ["Puller"]

# Short: an ask of a bounded consumer with nothing waits this long for its 408.
PULL_EXPIRES = 0.002
_ASK = json.dumps({"batch": 1, "no_wait": True}).encode()
# For a bounded consumer: nats-server 2.9 answers an ask with ``expires`` some
# milliseconds late, so only the asks that may be kept carry it.
_ASK_BOUNDED = json.dumps(
    {"batch": 1, "no_wait": True, "expires": int(PULL_EXPIRES * 1e9)}
).encode()
# Statuses that mean "nothing for you now": no messages (404), request
# expired (408), max ack pending or similar limits reached (409).
_NOTHING = {"404", "408", "409"}


class Puller:
    """One pull consumer of ``stream``, asked for one message per :meth:`take`."""

    def __init__(
        self, client: Client, stream: str, consumer: str, *, timeout: float, bounded: bool
    ) -> None:
        self.bounded = bounded
        """The consumer has ``max_ack_pending=1``."""
        self.holding = 0
        """Deliveries of a bounded consumer this subscriber holds (not acked, naked or ended)."""
        self._client = client
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._timeout = timeout
        self._inbox = client.new_inbox()
        self._sub: Subscription | None = None

    async def take(self) -> Msg | None:
        """The consumer's next message, or None when it has none for us now."""
        if self.bounded and self.holding:
            return None  # the consumer's one pending message is ours: nothing more comes
        if self._sub is None:
            self._sub = await self._client.subscribe(self._inbox)
        early = await self._queued()
        if early is not None:
            return self._took(early)
        ask = _ASK_BOUNDED if self.bounded else _ASK
        await self._client.publish(self._next, ask, reply=self._inbox)
        while True:
            try:
                msg = await self._sub.next_msg(timeout=self._timeout)
            except nats.errors.TimeoutError:
                raise Unavailable(f"JetStream did not answer a pull in {self._timeout} s") from None
            status = (msg.headers or {}).get("Status")
            if status is None:
                return self._took(msg)
            if status in _NOTHING:
                return None
            # 100 is a heartbeat; anything else is the server refusing: say so.
            if status != "100":
                raise Unavailable(f"JetStream refused a pull: {status} {msg.headers}")

    def _took(self, msg: Msg) -> Msg:
        if self.bounded:
            self.holding += 1
        return msg

    def release(self) -> None:
        """A delivery of this puller ended (acked, naked, dead-lettered)."""
        self.holding = max(0, self.holding - 1)

    async def _queued(self) -> Msg | None:
        """A message that answered an earlier ask too late, if any (status replies dropped)."""
        assert self._sub is not None
        while self._sub.pending_msgs:
            msg = await self._sub.next_msg(timeout=self._timeout)  # already here: no wait
            if not (msg.headers or {}).get("Status"):
                return msg
        return None

    async def aclose(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

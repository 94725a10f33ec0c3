"""Taking one subscription's messages from its consumers, a batch per round trip.

A subscription has several pull consumers (keyless, replays, one per key
partition: :mod:`~flotilla.events.jetstream_names`).  When its subscriber asks
for a delivery and none is taken yet, a :class:`Taker` asks every candidate
consumer (:mod:`~flotilla.events.jetstream_turns`) at once and then reads the
answers, so one round trip brings a batch from all of them.  It asks for no
more than the subscriber has room for: ``limit`` (the subscription's
``max_in_flight``: the handlers its consumer runs at once) less the deliveries
it already holds, so nothing is taken that could not run now, and the rest
stays with the group's other consumers.  Each bounded consumer (a partition,
``max_ack_pending=1``) gives one at most; the first unbounded one asked takes what is left.
"""

from __future__ import annotations

from collections import deque

from nats.aio.msg import Msg

from flotilla.events.jetstream_pull import Puller
from flotilla.events.jetstream_turns import Candidates
from flotilla.nats_link import nats_errors_as_unavailable

__all__ = ["Taker"]


class Taker:
    """The messages of one subscription's ``pullers``, at most ``limit`` held at once."""

    def __init__(self, pullers: list[Puller], *, limit: int) -> None:
        self.pullers = pullers
        self.candidates = Candidates(len(pullers))
        self.limit = max(1, limit)
        self.held = 0
        """Messages handed out (:meth:`next`) whose delivery has not ended yet."""
        self.ready: deque[tuple[Msg, int]] = deque()
        """Messages taken and not handed out yet: (message, index of its puller)."""

    def next(self) -> tuple[Msg, int] | None:
        """A taken message and its puller's index (now held), or None: :meth:`take` first."""
        if not self.ready:
            return None
        self.held += 1
        return self.ready.popleft()

    def ended(self, index: int) -> None:
        """The delivery of a message of puller ``index`` ended (or was given up)."""
        self.held = max(0, self.held - 1)
        puller = self.pullers[index]
        puller.release()
        if puller.bounded:
            self.candidates.mark(index)  # its next message is free now

    async def take(self) -> bool:
        """Ask the candidates for what there is room for; whether any message came.

        Rounds of asks, until the room is full or every candidate was asked
        and gave less than it was asked for: a consumer that gave all it was
        asked may have more, and one not asked yet (less room than
        candidates) may have some.
        """
        room = max(1, self.limit - self.held)
        spent: set[int] = set()  # asked, and gave less than asked: nothing more now
        while room > 0:
            asks = self._plan(room, spent)
            if not asks:
                break
            room -= await self._ask(asks, spent)
        return bool(self.ready)

    async def _ask(self, asks: dict[int, int], spent: set[int]) -> int:
        """Send every ask, then read every answer (one round trip for them all); how many came."""
        came = 0
        last_giver = None
        with nats_errors_as_unavailable("taking events"):
            for index, n in asks.items():
                await self.pullers[index].ask(n)
            for index, n in asks.items():
                msgs = await self.pullers[index].answer()
                came += len(msgs)
                self.ready.extend((msg, index) for msg in msgs)
                if msgs:
                    last_giver = index
                if len(msgs) < n:
                    spent.add(index)
                if not msgs:
                    self.candidates.had_nothing(index)
        if last_giver is not None:
            self.candidates.gave(last_giver)
        return came

    def _plan(self, room: int, spent: set[int]) -> dict[int, int]:
        """How many to ask of which candidate: one each in turn, the rest to an unbounded one."""
        asks: dict[int, int] = {}
        for index in self.candidates.order():
            if not self.pullers[index].can_ask:
                # Its one pending message is ours: nothing more comes from it
                # until that delivery ends (which marks it again).
                self.candidates.had_nothing(index)
            elif index not in spent and len(asks) < room:
                asks[index] = 1
        left = room - len(asks)
        if left:
            unbounded = next((i for i in asks if not self.pullers[i].bounded), None)
            if unbounded is not None:
                asks[unbounded] += left
        return asks

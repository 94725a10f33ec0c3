"""A small event backend for the data tests: it records what is published, and can fail."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from flotilla.errors import Unavailable
from flotilla.events.envelope import Envelope


class RecordingBackend:
    """Publishes into a list; ``down`` makes every publish fail, ``fails`` picks some to fail."""

    def __init__(self, *, fails: Callable[[Envelope], bool] | None = None) -> None:
        self.published: list[Envelope] = []
        self.times: dict[str, float] = {}
        """Event id -> ``time.perf_counter()`` of its (last) publish."""
        self.attempts = 0
        self.attempted_at: list[float] = []
        """``time.monotonic()`` of every publish attempt, in order."""
        self.down = False
        self.fails = fails
        self.hold: asyncio.Event | None = None
        """When set to an Event, each publish waits for it (a broker that hangs)."""
        self.entered = asyncio.Event()

    async def publish(self, envelope: Envelope) -> None:
        self.attempts += 1
        self.attempted_at.append(time.monotonic())
        self.entered.set()
        if self.hold is not None:
            await self.hold.wait()
        await asyncio.sleep(0)  # let other publishes interleave, as a network would
        if self.down or (self.fails is not None and self.fails(envelope)):
            raise Unavailable("the broker is down")
        self.published.append(envelope)
        self.times[envelope.id] = time.perf_counter()

    @property
    def ids(self) -> list[str]:
        return [envelope.id for envelope in self.published]

    async def aclose(self) -> None:
        pass

"""The saga's events as they go by, kept per order: what ``make demo`` shows of the system.

No service calls the next one in the order flow: each publishes what it did
and the others react.  :class:`SagaWatch` tails every saga topic on the
system's event backend (as ``flotilla events tail`` does) and keeps each
order's events, so the demo can print, once an order settles, which service
published which event, in the order they were published.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable
from types import TracebackType
from typing import NamedTuple, Self

from flotilla.events import EventBackend

from .events import (
    ORDER_CANCELLED,
    ORDER_CONFIRMED,
    ORDER_CREATED,
    ORDER_SHIPPED,
    PAYMENT_CAPTURED,
    PAYMENT_DECLINED,
    PAYMENT_REFUNDED,
    STOCK_REJECTED,
    STOCK_RESERVED,
    order_key,
)

__all__ = ["SAGA_TOPICS", "SagaWatch", "SeenEvent"]

SAGA_TOPICS = (
    ORDER_CREATED,
    STOCK_RESERVED,
    STOCK_REJECTED,
    PAYMENT_CAPTURED,
    PAYMENT_DECLINED,
    PAYMENT_REFUNDED,
    ORDER_CONFIRMED,
    ORDER_CANCELLED,
    ORDER_SHIPPED,
)
POLL_SECONDS = 0.02


class SeenEvent(NamedTuple):
    time: float
    """When it was emitted (Unix seconds)."""
    source: str
    """The service that published it."""
    topic: str


class SagaWatch:
    """Tails the saga's topics on ``backend`` while open (``async with``)."""

    def __init__(self, backend: EventBackend) -> None:
        self.backend = backend
        self._seen: dict[str, list[SeenEvent]] = defaultdict(list)
        self._tails: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Self:
        # Each tail starts at the end of the log on its first look: open the watch
        # before the orders it should see are placed.
        self._tails = [asyncio.create_task(self._tail(topic)) for topic in SAGA_TOPICS]
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        for tail in self._tails:
            tail.cancel()
        for tail in self._tails:
            with contextlib.suppress(asyncio.CancelledError):
                await tail
        await self.backend.aclose()

    async def events_of(
        self, order_id: int, until: Callable[[list[str]], bool], timeout: float = 5.0
    ) -> list[SeenEvent]:
        """The order's events by time, once ``until`` holds for their topics (the outboxes
        publish a moment after each change commits), or those seen within ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # The events come from other processes through the log: nothing to await but a poll.
        while not until(self._topics(order_id)) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(POLL_SECONDS)
        return sorted(self._seen[order_key(order_id)])

    def _topics(self, order_id: int) -> list[str]:
        return [event.topic for event in self._seen[order_key(order_id)]]

    async def _tail(self, topic: str) -> None:
        async for envelope in self.backend.tail(topic):
            if envelope.key is not None:
                event = SeenEvent(envelope.time, envelope.source, envelope.topic)
                self._seen[envelope.key].append(event)

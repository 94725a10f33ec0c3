"""One subscription's consumer: take deliveries, run the handler, and end each delivery.

What becomes of one delivery::

    decode payload --does not fit the handler's type--> dead-letter at once (no retry)
        |
    run handler --ok, or AlreadyHandled--> ack
        |
        +--raised, attempt < max_deliveries--> nak(backoff(attempt))   (it comes back later)
        +--raised, attempt = max_deliveries--> dead-letter with the error (the consumer goes on)

While a handler runs, a keep-alive task of its own tells the backend every
``ack_wait / 3`` that it is still at work, so a long handler is not taken
for dead.  The subscription's ``max_in_flight`` is ``max_concurrent``: a
backend may take as many deliveries in one go as there are free slots
(a claim per batch instead of one per delivery, under load).  Per-key order
is the backend's: it does not deliver the next event of a key before the
previous one is acked or dead-lettered; events of other keys, and keyless
ones, run concurrently up to ``max_concurrent``.

If the backend fails (a broker down, a connection cut), the consumer
subscribes again after a pause (0.5 s doubling to 10 s); the group kept its
place meanwhile.  It ends only when the backend is closed or it is stopped.

Lifecycle: :meth:`Consumer.start` declares the group (events published after
it returns are not missed) and starts taking deliveries; :meth:`Consumer.stop`
stops taking new ones, lets the running handlers finish for up to ``drain``
seconds, then cancels the rest, whose deliveries stay unacked and come back
after ``ack_wait`` (to another instance, or to this one when it restarts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import msgspec

from flotilla import codec
from flotilla.aio import cancel_and_wait
from flotilla.clock import Clock, SystemClock
from flotilla.errors import FlotillaError, InvalidArgument
from flotilla.events.backend import AlreadyHandled, Delivery, EventBackend, Subscription
from flotilla.events.envelope import Envelope
from flotilla.events.policy import DeliveryPolicy

__all__ = ["Consumer", "Handler", "Observer", "Outcome"]

log = logging.getLogger("flotilla.events")

Handler = Callable[[Any, Envelope], Awaitable[None]]
"""``async (payload, envelope) -> None``: the payload decoded into the handler's type."""


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """How one delivery ended (what the test kit records)."""

    envelope: Envelope
    group: str
    instance: str
    handler: str
    result: Literal["acked", "already_handled", "retried", "dead_lettered", "invalid_payload"]
    error: str | None = None


Observer = Callable[[Outcome], None]

# Seconds before subscribing again after the backend failed, doubling up to the max.
_RESUBSCRIBE_FIRST = 0.5
_RESUBSCRIBE_MAX = 10.0


class Consumer:
    """Runs ``handler`` on the deliveries of ``subscription`` (see the module docstring)."""

    def __init__(
        self,
        backend: EventBackend,
        subscription: Subscription,
        handler: Handler,
        *,
        payload_type: Any = Any,
        name: str = "",
        policy: DeliveryPolicy | None = None,
        clock: Clock | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.backend = backend
        self.policy = policy or DeliveryPolicy()
        self.subscription = msgspec.structs.replace(
            subscription, ack_wait=self.policy.ack_wait, max_in_flight=self.policy.max_concurrent
        )
        self.handler = handler
        self.payload_type = payload_type
        self.name = name or subscription.topic
        """Names the handler in logs and outcomes (``"billing.on_order"``)."""
        self._clock = clock or SystemClock()
        self._observer = observer
        self._slots = asyncio.Semaphore(self.policy.max_concurrent)
        self._taker: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._pause = _RESUBSCRIBE_FIRST

    async def start(self) -> None:
        """Declare the group, then take deliveries in a task this consumer owns."""
        await self.backend.declare(self.subscription)
        self._taker = asyncio.create_task(self._take(), name=f"consumer {self.name}")

    async def stop(self, drain: float = 10.0) -> None:
        """Take no more; give running handlers ``drain`` seconds, then cancel them; idempotent."""
        if self._taker is not None:
            await cancel_and_wait(self._taker, log)
            self._taker = None
        running = set(self._running)
        if running:
            _, late = await asyncio.wait(running, timeout=drain)
            for task in late:
                log.warning("%s: handler still running after %s s; cancelled", self.name, drain)
                task.cancel()
            if late:
                await asyncio.wait(late)

    async def _take(self) -> None:
        """Subscribe and take deliveries; if the backend fails, subscribe again after a pause."""
        while True:
            try:
                await self._take_from(self.backend.subscribe(self.subscription))
            except FlotillaError as exc:
                # A broker down or a connection cut: the group keeps its place,
                # so subscribing again later loses nothing.
                pause, self._pause = self._pause, min(self._pause * 2, _RESUBSCRIBE_MAX)
                log.warning(
                    "%s: the event backend failed (%s); subscribing again in %.3g s",
                    self.name,
                    exc,
                    pause,
                )
                await self._clock.sleep(pause)
            else:
                log.info("%s: the event backend closed; no more deliveries", self.name)
                return

    async def _take_from(self, deliveries: AsyncIterator[Delivery]) -> None:
        """Take deliveries until the iterator ends (the backend closed) or fails."""
        try:
            while True:
                # A slot first: a consumer at its limit leaves the next delivery
                # to the other consumers of its group.
                await self._slots.acquire()
                try:
                    delivery = await anext(deliveries)
                except BaseException:
                    self._slots.release()
                    raise
                self._pause = _RESUBSCRIBE_FIRST  # the backend works again
                task = asyncio.create_task(self._handle(delivery))
                self._running.add(task)
                task.add_done_callback(self._finished_one)
        except StopAsyncIteration:
            return
        finally:
            aclose = getattr(deliveries, "aclose", None)
            if aclose is not None:
                await aclose()

    def _finished_one(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: delivery handling failed", self.name, exc_info=task.exception())

    async def _handle(self, delivery: Delivery) -> None:
        envelope = delivery.envelope
        try:
            payload = codec.decode(envelope.payload, self.payload_type)
        except InvalidArgument as exc:
            error = (
                f"payload of {envelope.topic!r} does not fit {_type_name(self.payload_type)}: {exc}"
            )
            log.error("%s: event %s dead-lettered: %s", self.name, envelope.id, error)
            await self._end(delivery, "invalid_payload", error)
            return
        try:
            async with self._keepalive(delivery):
                await self.handler(payload, envelope)
        except AlreadyHandled:
            await self._end(delivery, "already_handled")
        except Exception as exc:
            await self._failed(delivery, exc)
        else:
            await self._end(delivery, "acked")

    async def _failed(self, delivery: Delivery, exc: Exception) -> None:
        envelope = delivery.envelope
        error = f"{type(exc).__name__}: {exc}"
        cap = self.policy.max_deliveries
        if envelope.attempt >= cap:
            log.error(
                "%s: event %s failed %d times; dead-lettered: %s",
                self.name,
                envelope.id,
                envelope.attempt,
                error,
                exc_info=exc,
            )
            await self._end(delivery, "dead_lettered", error)
        else:
            delay = self.policy.backoff(envelope.attempt)
            log.warning(
                "%s: event %s failed (attempt %d of %d), again in %.3g s: %s",
                self.name,
                envelope.id,
                envelope.attempt,
                cap,
                delay,
                error,
            )
            await self._end(delivery, "retried", error, delay=delay)

    async def _end(
        self,
        delivery: Delivery,
        result: Literal["acked", "already_handled", "retried", "dead_lettered", "invalid_payload"],
        error: str | None = None,
        *,
        delay: float = 0.0,
    ) -> None:
        """Tell the backend how the delivery ended; a backend error leaves it to ``ack_wait``."""
        try:
            if result in ("acked", "already_handled"):
                await delivery.ack()
            elif result == "retried":
                await delivery.nak(delay)
            else:
                await delivery.dead_letter(error or result)
        except FlotillaError as exc:
            log.warning(
                "%s: could not %s event %s (%s); it comes back after ack_wait",
                self.name,
                "ack" if result in ("acked", "already_handled") else "end",
                delivery.envelope.id,
                exc,
            )
            return
        if self._observer is not None:
            self._observer(
                Outcome(
                    envelope=delivery.envelope,
                    group=self.subscription.group,
                    instance=self.subscription.instance,
                    handler=self.name,
                    result=result,
                    error=error,
                )
            )

    @contextlib.asynccontextmanager
    async def _keepalive(self, delivery: Delivery) -> AsyncIterator[None]:
        task = asyncio.create_task(self._renew(delivery))
        try:
            yield
        finally:
            await cancel_and_wait(task, log)

    async def _renew(self, delivery: Delivery) -> None:
        interval = self.policy.keepalive_interval
        while True:
            await self._clock.sleep(interval)
            try:
                await delivery.in_progress()
            except FlotillaError as exc:
                log.warning(
                    "%s: could not renew event %s: %s", self.name, delivery.envelope.id, exc
                )


def _type_name(type_: Any) -> str:
    return getattr(type_, "__qualname__", None) or repr(type_)

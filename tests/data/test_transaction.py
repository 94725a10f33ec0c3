"""Transactions: data and emitted events commit together; a handled event has one effect."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from sqlalchemy import func, insert, select
from tests.data.conftest import Target, items

from flotilla.data.schema import inbox, outbox
from flotilla.errors import FailedPrecondition, InvalidArgument
from flotilla.events import AlreadyHandled, Envelope, new_event_id
from flotilla.headers import Headers


class OrderCreated(msgspec.Struct):
    id: int
    sku: str


class EventContext:
    """What an event handler's context offers the transaction: the event, the group, headers."""

    def __init__(self, event: Envelope, group: str = "") -> None:
        self.event = event
        self.group = group
        self.headers = event.headers


def an_event(**fields: object) -> Envelope:
    values: dict[str, object] = {
        "id": new_event_id(),
        "topic": "order.created",
        "source": "orders",
        "instance": "orders-1",
        "time": 0.0,
        "payload": b"\x80",
        "headers": Headers(request_id="r-1", trace="00-abc-def-01"),
    }
    return Envelope(**{**values, **fields})  # type: ignore[arg-type]


async def count(database: object, table: object) -> int:
    async with database.connect() as conn:  # type: ignore[attr-defined]
        return int(await conn.scalar(select(func.count()).select_from(table)))


async def test_data_and_events_commit_together(target: Target) -> None:
    async with target.opened() as database:
        async with database.transaction() as tx:
            await tx.session.execute(insert(items).values(name="teapot"))
            envelope = tx.emit("order.created", OrderCreated(id=1, sku="tp"), key="tp")
        assert await count(database, items) == 1
        async with database.connect() as conn:
            row = (await conn.execute(select(outbox))).one()
    assert row.event_id == envelope.id
    assert (row.topic, row.key, row.source) == ("order.created", "tp", "orders")
    assert msgspec.msgpack.decode(row.payload, type=OrderCreated) == OrderCreated(id=1, sku="tp")
    assert row.sent_at is None
    assert row.claimed_by is None


async def test_an_exception_rolls_back_data_and_events(target: Target) -> None:
    async with target.opened() as database:

        async def fail_midway() -> None:
            async with database.transaction() as tx:
                await tx.session.execute(insert(items).values(name="teapot"))
                tx.emit("order.created", {"id": 1})
                await tx.session.flush()
                raise ZeroDivisionError

        with pytest.raises(ZeroDivisionError):
            await fail_midway()
        assert await count(database, items) == 0
        assert await count(database, outbox) == 0


async def test_orm_objects_added_to_the_session_are_committed(target: Target) -> None:
    async with target.opened() as database:
        async with database.transaction() as tx:
            tx.session.add_all([])  # the session is a real AsyncSession
            await tx.session.execute(insert(items), [{"name": "a"}, {"name": "b"}])
        assert await count(database, items) == 2


async def test_a_commit_with_events_tells_the_listeners_and_one_without_does_not(
    target: Target,
) -> None:
    async with target.opened() as database:
        woken: list[int] = []
        stop = database.on_commit(lambda: woken.append(1))
        async with database.transaction() as tx:
            await tx.session.execute(insert(items).values(name="quiet"))
        assert woken == []
        async with database.transaction() as tx:
            tx.emit("order.created", {})
        assert woken == [1]
        stop()
        async with database.transaction() as tx:
            tx.emit("order.created", {})
        assert woken == [1]


async def test_emitted_events_carry_the_context_headers_without_deadline(target: Target) -> None:
    class Ctx:
        headers = Headers(request_id="req-9", trace="00-t-s-01", deadline=123.0)

    async with target.opened() as database, database.transaction(Ctx()) as tx:
        envelope = tx.emit("order.created", {})
    assert envelope.headers == Headers(request_id="req-9", trace="00-t-s-01")


@pytest.mark.parametrize(
    ("topic", "payload", "key", "message"),
    [
        ("", {}, None, "is not a dotted name"),
        ("order created", {}, None, "is not a dotted name"),
        ("order.created", object(), None, "payload of event 'order.created' cannot be encoded"),
        ("order.created", 2**70, None, "cannot be encoded"),
        ("order.created", {}, "k" * 256, "at most 255"),
        ("order.created", {}, 5, "must be a string"),
    ],
)
async def test_bad_input_to_emit_fails_at_once_and_stores_nothing(
    topic: str, payload: object, key: object, message: str
) -> None:
    async with Target("sqlite://", {}).opened() as database:
        with pytest.raises(InvalidArgument, match=message):
            async with database.transaction() as tx:
                tx.emit(topic, payload, key=key)  # type: ignore[arg-type]
        assert await count(database, outbox) == 0


async def test_a_handled_event_is_recorded_and_a_redelivery_has_no_effect(
    target: Target,
) -> None:
    event = an_event()
    async with target.opened() as database:
        async with database.transaction(EventContext(event)) as tx:
            await tx.session.execute(insert(items).values(name="reserved"))
            tx.emit("stock.reserved", {})
        with pytest.raises(AlreadyHandled, match="already handled by group 'orders'"):
            async with database.transaction(EventContext(event)) as tx:
                await tx.session.execute(insert(items).values(name="twice"))
        assert await count(database, items) == 1
        assert await count(database, outbox) == 1
        async with database.connect() as conn:
            row = (await conn.execute(select(inbox))).one()
    assert (row.group, row.event_id) == ("orders", event.id)


async def test_the_inbox_is_per_group(target: Target) -> None:
    event = an_event()
    async with target.opened() as database:
        async with database.transaction(event=event, group="billing"):
            pass
        async with database.transaction(EventContext(event, group="audit")):
            pass  # another group handles it once too
        with pytest.raises(AlreadyHandled):
            async with database.transaction(event=event, group="audit"):
                pass
        assert await count(database, inbox) == 2


async def test_a_failed_handler_leaves_no_inbox_row_so_the_redelivery_runs(
    target: Target,
) -> None:
    event = an_event()
    async with target.opened() as database:
        with pytest.raises(RuntimeError):
            async with database.transaction(EventContext(event)):
                raise RuntimeError("the handler failed")
        async with database.transaction(EventContext(event)) as tx:
            await tx.session.execute(insert(items).values(name="second try"))
        assert await count(database, items) == 1


async def test_events_emitted_while_handling_carry_the_handled_events_headers(
    target: Target,
) -> None:
    event = an_event()
    async with target.opened() as database, database.transaction(event=event) as tx:
        emitted = tx.emit("stock.reserved", {})
    assert emitted.headers == event.headers


async def test_two_concurrent_deliveries_of_one_event_have_one_effect(target: Target) -> None:
    event = an_event()
    inside = asyncio.Event()
    go_on = asyncio.Event()

    async def first(database: object) -> None:
        async with database.transaction(EventContext(event)) as tx:  # type: ignore[attr-defined]
            await tx.session.execute(insert(items).values(name="first"))
            inside.set()
            await go_on.wait()  # hold the transaction open while the second one starts

    async def second(database: object) -> None:
        await inside.wait()
        async with database.transaction(EventContext(event)) as tx:  # type: ignore[attr-defined]
            await tx.session.execute(insert(items).values(name="second"))

    async with target.opened() as database:
        one = asyncio.create_task(first(database))
        two = asyncio.create_task(second(database))
        await inside.wait()
        await asyncio.sleep(0.05)  # let the second reach the inbox (it must wait there)
        assert not two.done()
        go_on.set()
        await one
        with pytest.raises(AlreadyHandled):
            await two
        assert await count(database, items) == 1


async def test_a_transaction_inside_another_on_sqlite_fails_instead_of_waiting_forever() -> None:
    async with Target("sqlite://", {}).opened() as database:

        async def nested() -> None:
            async with database.transaction(), database.transaction():
                pass

        with pytest.raises(FailedPrecondition, match="begin_nested"):
            await asyncio.wait_for(nested(), timeout=5)
        async with database.transaction() as tx:  # the turn was given back
            await tx.session.execute(insert(items).values(name="after"))
        assert await count(database, items) == 1

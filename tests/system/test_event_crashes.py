"""Exactly-once effects across real processes that are killed: the outbox, the inbox, redelivery.

The eventful system (``tests/system/eventful``) runs as ``flotilla serve``
processes on each broker of the ``broker`` fixture; effects are counted in the
consumer's database, in a table where a double effect would show as a second row.
"""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.system.eventful.harness import Broker, EventfulSystem, wait_until

# Small leases and waits, so that what a dead process held comes back within a test.
FAST_RELAY = json.dumps({"lease": 2.0, "poll": 0.1, "backoff": {"base": 0.05, "max": 0.2}})
FAST_DELIVERY = json.dumps({"ack_wait": 1.5, "backoff_base": 0.05, "backoff_max": 0.2})


@pytest.fixture
async def system(tmp_path: Path, broker: Broker) -> AsyncIterator[EventfulSystem]:
    env = {"FLOTILLA_RELAY": FAST_RELAY, "FLOTILLA_DELIVERY": FAST_DELIVERY}
    system = EventfulSystem(tmp_path, broker, env)
    try:
        yield system
    finally:
        await system.aclose()


def exactly_once(system: EventfulSystem, group: str, count: int) -> None:
    """``count`` effects in ``group``, one per event."""
    effects = system.effects(group)
    per_event = collections.Counter(event_id for _, event_id, _, _ in effects)
    assert len(per_event) == count, per_event
    assert set(per_event.values()) == {1}, per_event


async def test_a_publisher_killed_between_commit_and_relay_publishes_everything_once_restarted(
    system: EventfulSystem,
) -> None:
    _, ledger = await system.serve_all("tally:Tally", "ledger:Ledger")
    async with system.client() as client:
        # One event first: the ledger is connected to the broker when it goes down.
        ids = await client.call("ledger.record", amounts=[1])
        await wait_until("the first effect", lambda: system.effects("tally"))
        async with system.broker_down():
            ids += await client.call("ledger.record", amounts=list(range(2, 10)))
            await wait_until(  # a publish under way (embedded: waiting for the lock), or failed
                "the relay to try",
                lambda: system.claimed() == 8 or "cannot publish" in ledger.output(),
            )
            await ledger.kill()
    assert ids == list(range(1, 10))
    outbox = system.outbox()
    assert len(outbox) == 9
    assert [sent_at is None for _, sent_at in outbox] == [False] + [True] * 8  # none relayed

    await system.serve("ledger:Ledger")  # the same database file; claims of the dead one lapse
    await wait_until("9 effects", lambda: len(system.effects("tally")) >= 9)
    await wait_until("9 audits", lambda: len(system.effects("audit")) >= 9)
    await system.kill_all()  # nothing more can be handled: now count
    exactly_once(system, "tally", 9)
    exactly_once(system, "audit", 9)
    assert {event_id for _, event_id, _, _ in system.effects("tally")} == {
        event_id for event_id, _ in outbox
    }
    assert sorted(entry for _, _, entry, _ in system.effects("tally")) == ids
    assert all(sent_at is not None for _, sent_at in system.outbox())


@pytest.mark.parametrize("stage", ["open", "committed"])
async def test_a_consumer_killed_in_a_handler_has_its_effect_once_by_another_replica(
    system: EventfulSystem, tmp_path: Path, stage: str
) -> None:
    """Killed with the handler's transaction open, the effect is rolled back and redone by
    the other replica; killed after the commit and before the ack, the redelivery finds the
    inbox row and does nothing."""
    gate = tmp_path / "gate"
    gate.mkdir()
    (gate / f"hold-{stage}").touch()  # the first handling of `count` takes it and hangs there
    *replicas, _ = await system.serve_all(
        "tally:Tally", "tally:Tally", "ledger:Ledger", TALLY_GATE=str(gate)
    )
    async with system.client() as client:
        ids = await client.call("ledger.record", amounts=[10, 20, 30, 40, 50])
    [held] = await wait_until("a handler to hang", lambda: list(gate.glob("held.*")))
    held_event = await wait_until("the held event's id", held.read_text)
    victim = next(served for served in replicas if held.name == f"held.{served.pid}")
    await victim.kill()

    await wait_until("5 effects", lambda: len(system.effects("tally")) >= 5)
    await wait_until("5 audits", lambda: len(system.effects("audit")) >= 5)
    if stage == "committed":  # its effect is there already: wait for the redelivery
        await wait_until("the redelivery", lambda: list(gate.glob(f"already.{held_event}.*")))
    await system.kill_all()
    exactly_once(system, "tally", 5)
    exactly_once(system, "audit", 5)  # the victim's other deliveries came back too
    effects = system.effects("tally")
    assert sorted(entry for _, _, entry, _ in effects) == ids
    [by] = [pid for _, event_id, _, pid in effects if event_id == held_event]
    if stage == "open":  # rolled back with the process, redone by the survivor
        assert victim.pid not in {pid for _, _, _, pid in effects}
        assert by != victim.pid
    else:  # committed by the victim; the redelivery was already handled
        assert by == victim.pid
        redelivered = {path.name.split(".")[1] for path in gate.glob("already.*")}
        assert held_event in redelivered  # (another acked late by the victim may be there too)


async def test_with_the_broker_down_emits_commit_and_the_relay_catches_up_once(
    system: EventfulSystem,
) -> None:
    """The broker down (see ``eventful/brokers.py``: the embedded log locked by another
    process, NATS cut off by a proxy): ``tx.emit`` commits, the relay backs off, and once
    the broker is back it catches up, nothing lost or doubled."""
    _, ledger = await system.serve_all("tally:Tally", "ledger:Ledger")
    async with system.client() as client:
        first = await client.call("ledger.record", amounts=[1])  # connected when it goes down
        await wait_until("the first effect", lambda: system.effects("tally"))
        async with system.broker_down():
            async with asyncio.timeout(5):  # tx.emit does not wait for the broker
                first += await client.call("ledger.record", amounts=[2, 3])
            await wait_until("the relay to back off", lambda: "cannot publish" in ledger.output())
            async with asyncio.timeout(5):
                second = await client.call("ledger.record", amounts=[4, 5])
            assert [sent_at is None for _, sent_at in system.outbox()] == [False] + [True] * 4
        await wait_until("5 effects", lambda: len(system.effects("tally")) >= 5)
        await wait_until("5 audits", lambda: len(system.effects("audit")) >= 5)
    await system.kill_all()
    exactly_once(system, "tally", 5)
    exactly_once(system, "audit", 5)
    assert sorted(entry for _, _, entry, _ in system.effects("tally")) == first + second
    assert all(sent_at is not None for _, sent_at in system.outbox())
    assert "publishes again" in ledger.output()


async def test_a_consumer_killed_keeps_its_place_and_gets_what_was_published_meanwhile(
    system: EventfulSystem,
) -> None:
    tally, _ = await system.serve_all("tally:Tally", "ledger:Ledger")
    async with system.client() as client:
        before = await client.call("ledger.record", amounts=[1, 2])
        await wait_until("2 effects", lambda: len(system.effects("tally")) == 2)
        await tally.kill()  # no replica: nobody consumes for a while
        meanwhile = await client.call("ledger.record", amounts=[3, 4, 5])
        await wait_until("the relay", lambda: all(sent for _, sent in system.outbox()))
        await system.serve("tally:Tally")  # a new instance of the same groups
        await wait_until("5 effects", lambda: len(system.effects("tally")) >= 5)
        await wait_until("5 audits", lambda: len(system.effects("audit")) >= 5)
    await system.kill_all()
    exactly_once(system, "tally", 5)
    exactly_once(system, "audit", 5)
    assert sorted(entry for _, _, entry, _ in system.effects("tally")) == before + meanwhile

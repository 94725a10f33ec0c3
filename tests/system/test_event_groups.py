"""Consumer groups across real processes sharing one database file: each group of a service
has its own effect of an event (the inbox records the group), and a broadcast handler has
one per instance."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.system.eventful.harness import Broker, EventfulSystem, wait_until


@pytest.fixture
async def system(tmp_path: Path, broker: Broker) -> AsyncIterator[EventfulSystem]:
    system = EventfulSystem(tmp_path, broker)
    try:
        yield system
    finally:
        await system.aclose()


async def test_two_groups_and_a_broadcast_on_two_replicas_of_one_database(
    system: EventfulSystem,
) -> None:
    # Two replicas of tally, both on tally.db in the data directory.
    *replicas, _ = await system.serve_all("tally:Tally", "tally:Tally", "ledger:Ledger")
    async with system.client() as client:
        ids = await client.call("ledger.record", amounts=[1, 2, 3, 4, 5, 6])
    # 6 events: 6 effects in each balanced group, 6 per instance in the broadcast.
    await wait_until("every effect", lambda: len(system.effects()) >= 6 * 4)
    await system.kill_all()

    effects = system.effects()
    per_group = collections.Counter(group for group, _, _, _ in effects)
    broadcasts = {group for group in per_group if group.startswith("tally@")}
    assert len(broadcasts) == 2  # a group per instance: tally@<instance id>
    assert per_group == {"tally": 6, "audit": 6, **dict.fromkeys(broadcasts, 6)}
    assert system.inbox() == per_group  # the inbox holds each (group, event) once
    for group in per_group:  # each group handled each event once
        assert sorted(entry for g, _, entry, _ in effects if g == group) == ids
    pids = {served.pid for served in replicas}
    broadcast_pids = {
        group: {pid for g, _, _, pid in effects if g == group} for group in broadcasts
    }
    assert sorted(broadcast_pids.values(), key=min) == sorted(({pid} for pid in pids), key=min)
    balanced = {pid for group, _, _, pid in effects if group in ("tally", "audit")}
    assert balanced <= pids

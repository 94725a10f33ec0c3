"""Poison events across real processes: dead-lettered (a payload of the wrong type at once, a
handler that always raises after the cap), listed by ``flotilla events dlq``, and the
consumer goes on with the events after them, of the same key too."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.system.eventful.harness import Broker, EventfulSystem, wait_until

DELIVERY = json.dumps({"max_deliveries": 3, "backoff_base": 0.05, "backoff_max": 0.2})


@pytest.fixture
async def system(tmp_path: Path, broker: Broker) -> AsyncIterator[EventfulSystem]:
    system = EventfulSystem(tmp_path, broker, {"FLOTILLA_DELIVERY": DELIVERY})
    try:
        yield system
    finally:
        await system.aclose()


async def dead_letters(system: EventfulSystem) -> list[dict[str, Any]]:
    """What ``flotilla events dlq --json`` prints, run as a user would."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "flotilla", "events", "dlq", "--json"),
        env={
            **os.environ,
            "FLOTILLA_DATA_DIR": str(system.data_dir),
            "FLOTILLA_EVENTS": system.settings.events,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=20)
    assert process.returncode == 0, err.decode()
    letters: list[dict[str, Any]] = json.loads(out)
    return letters


async def test_poison_events_are_dead_lettered_listed_and_the_consumer_goes_on(
    system: EventfulSystem,
) -> None:
    tally = await system.serve("tally:Tally")
    async with system.client(events=system.settings.events) as client:
        wrong = await client.emit("ledger.recorded", {"entry_id": "seven", "amount": 1}, key="k")
        doomed = await client.emit("tally.verdict", {"fail": True}, key="v")
        after_wrong = await client.emit("ledger.recorded", {"entry_id": 2, "amount": 2}, key="k")
        after_doomed = await client.emit("tally.verdict", {"fail": False}, key="v")

    # Events of one key wait for the one before: these effects mean the poison was dealt with.
    for group in ("tally", "audit", "judge"):
        await wait_until(f"an effect in {group}", lambda group=group: system.effects(group))
    await wait_until("the broadcast's effect", lambda: len(system.effects()) == 4)
    letters = await dead_letters(system)
    assert tally.process.returncode is None  # the poison did not take the consumer down
    await system.kill_all()

    handled = {(group, event_id) for group, event_id, _, _ in system.effects()}
    [broadcast] = {group for group, _ in handled} - {"tally", "audit", "judge"}
    assert handled == {
        ("tally", after_wrong),
        ("audit", after_wrong),
        (broadcast, after_wrong),
        ("judge", after_doomed),
    }
    shown = {(letter["group"], letter["envelope"]["id"]): letter for letter in letters}
    assert set(shown) == {("tally", wrong), ("audit", wrong), (broadcast, wrong), ("judge", doomed)}
    for group in ("tally", "audit", broadcast):  # the wrong type: at the first delivery
        letter = shown[group, wrong]
        assert letter["envelope"]["attempt"] == 1
        assert "entry_id" in letter["error"], letter["error"]  # where the payload was wrong
    verdict = shown["judge", doomed]
    assert verdict["envelope"]["attempt"] == 3  # max_deliveries
    assert "the verdict says fail" in verdict["error"]

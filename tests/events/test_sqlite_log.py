"""The log's statements on one connection, with explicit times: a delivery row's life."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.events import sqlite_log as log
from flotilla.events.sqlite_log import Claimed, GroupRef
from flotilla.events.sqlite_schema import SCHEMA

GROUP = GroupRef("t", "g", "")
ACK_WAIT = 30.0


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(tmp_path / "log.db", isolation_level=None)
    for statement in SCHEMA.statements:
        conn.execute(statement)
    yield conn
    conn.close()


def publish(conn: sqlite3.Connection, event_id: str, key: str | None = None) -> None:
    log.insert_events(conn, [(event_id, "t", key, event_id.encode(), 0.0)])


def claim(conn: sqlite3.Connection, now: float = 100.0) -> list[Claimed]:
    claimed, _ = log.claim(conn, GROUP, owner="o", now=now, ack_wait=ACK_WAIT, limit=10, opened=1)
    return claimed


def ids(rows: list[Claimed]) -> list[str]:
    return [row.envelope.decode() for row in rows]


def test_a_group_takes_in_only_what_follows_its_creation(conn: sqlite3.Connection) -> None:
    publish(conn, "before")
    log.declare(conn, GROUP, 0.0)
    publish(conn, "after")
    assert ids(claim(conn)) == ["after"]


def test_released_rows_are_as_if_never_claimed(conn: sqlite3.Connection) -> None:
    log.declare(conn, GROUP, 0.0)
    publish(conn, "a")
    rows = claim(conn)
    assert [r.attempt for r in rows] == [1]
    log.release(conn, rows)
    again = claim(conn)
    assert (ids(again), again[0].attempt) == (["a"], 1)


def test_only_the_current_attempt_may_nak_renew_or_dead_letter(conn: sqlite3.Connection) -> None:
    log.declare(conn, GROUP, 0.0)
    publish(conn, "a")
    [first] = claim(conn, now=100.0)
    [second] = claim(conn, now=100.0 + ACK_WAIT)  # the first consumer died
    assert second.attempt == 2
    log.retry_later(conn, first, visible_at=0.0)  # late nak of attempt 1: ignored
    log.renew(conn, first, visible_at=1e9)  # late renewal: ignored
    log.dead_letter(conn, first, "late", now=0.0)  # late give-up: ignored
    assert conn.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)
    assert claim(conn, now=100.0 + ACK_WAIT + 1) == []  # still attempt 2's, in flight
    assert ids(claim(conn, now=100.0 + 2 * ACK_WAIT)) == ["a"]  # attempt 2's ack_wait ran out


def test_replay_puts_an_event_after_the_ones_of_its_key_that_went_on(
    conn: sqlite3.Connection,
) -> None:
    log.declare(conn, GROUP, 0.0)
    publish(conn, "e1", key="k")
    publish(conn, "e2", key="k")
    [e1] = claim(conn)  # e2 waits behind it
    log.dead_letter(conn, e1, "boom", now=1.0)
    publish(conn, "e3", key="k")
    assert log.replay(conn, ["e1"], now=2.0) == 1
    order = []
    for _ in range(3):
        [row] = claim(conn)  # one at a time: a key's next waits for the ack
        order.append(row.envelope.decode())
        log.ack(conn, [row])
    assert order == ["e2", "e3", "e1"]
    assert claim(conn) == []


def claim_cost(conn: sqlite3.Connection, now: float) -> int:
    """SQLite VM steps (in hundreds) one claim takes: a measure that does not depend on load."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0  # go on

    conn.set_progress_handler(count, 100)
    try:
        claim(conn, now=now)
    finally:
        conn.set_progress_handler(None, 0)
    return steps


@pytest.mark.parametrize("held_back", [10, 3000])
def test_a_held_up_key_costs_a_claim_nothing_for_what_waits_behind_it(
    conn: sqlite3.Connection, held_back: int
) -> None:
    log.declare(conn, GROUP, 0.0)
    publish(conn, "head", key="hot")
    claim(conn)  # in flight: every later "hot" event waits
    log.insert_events(conn, [(f"h{n}", "t", "hot", b"", 0.0) for n in range(held_back)])
    claim(conn, now=101.0)  # take them in (the one-off cost of a new batch)
    # Nothing claimable: a claim that checked each waiting row for an earlier
    # one of its key would take thousands of steps per hundred rows.
    assert claim_cost(conn, now=102.0) < 20


def test_prune_goes_in_chunks_and_counts_what_went(conn: sqlite3.Connection) -> None:
    log.declare(conn, GROUP, 0.0)
    for n in range(5):
        publish(conn, f"e{n}")
    for row in claim(conn):
        log.ack(conn, [row])
    counts = [log.prune(conn, older_than=1.0, unseen_since=0.0, limit=2) for _ in range(4)]
    assert counts == [2, 2, 1, 0]

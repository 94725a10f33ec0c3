"""The statements that move events through the SQLite event log's tables.

Everything here runs on the :class:`~flotilla.sqlite_worker.SqliteWorker`
thread, one function per piece of work, each its own transaction; the asyncio
side is :mod:`flotilla.events.sqlite`.

The tables are described in :mod:`flotilla.events.sqlite_schema`.

A group *takes in* the events of its topic published after its position (one
``INSERT ... SELECT``, moving the position); from then on each has a
``deliveries`` row until it is acked (deleted) or dead-lettered (moved).  A
row's life, by ``visible_at`` and ``attempt``::

                     claim: attempt+1, visible_at = now + ack_wait
    taken in ──► ready ─────────────────────────────────────► in flight ──ack──► (deleted)
                   ▲ ▲                                          │  │  │
                   │ └──── ack_wait passed (consumer died) ─────┘  │  └─dead_letter─► dead_letters
                   └────── nak: visible_at = now + delay ──────────┘                    │
                   └────────────────────────── replay: attempt = 0 ─────────────────────┘

Only the row of the current attempt may nak, renew or dead-letter; an ack
from any attempt ends the row (the event was handled).  A row of a key is
claimable only when no earlier row of that key is left in the group, which
is what keeps per-key order: a later event waits while an earlier one is
ready, in flight or nak'd, and other keys go past it.

That rule is kept as a flag, ``head``: set on a keyless row and on the first
row of its key in the group's queue (by ``pos``), moved to the next row of
the key when the head leaves.  A claim reads only heads (a partial index),
so a key with thousands of events queued behind a nak'd one costs a claim
nothing, where checking each row for an earlier one of its key would cost a
scan of them all, at every claim, for as long as the key is held up.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import msgspec

from flotilla.sqlite_worker import transaction

__all__ = [
    "Claimed",
    "GroupRef",
    "Idle",
    "ack",
    "claim",
    "dead_letter",
    "declare",
    "insert_events",
    "look",
    "looks",
    "prune",
    "release",
    "renew",
    "replay",
    "retry_later",
]

_NO_LIMIT = 2**63 - 1
# A row taken in is queued at ``pos = seq * _SLOTS``; the slots between two
# events' places are for rows replayed in between (a million replays with no
# event published meanwhile would run into the next event's place).
_SLOTS = 1 << 20
# How stale a group's seen_at may get before a claim refreshes it: a write,
# and every write wakes every consumer of the file.
_SEEN_EVERY = 60.0


class GroupRef(msgspec.Struct, frozen=True):
    """Which group a subscription reads as, in the file's own terms."""

    topic: str
    name: str
    instance: str
    """'' for a balanced group."""


class Claimed(msgspec.Struct, frozen=True):
    """One row claimed for delivery: what the consumer needs to end it later."""

    opened: int
    """The worker's count of file openings at the claim: a row of a file since
    replaced must not end a row of the new one that has the same numbers."""
    group_id: int
    seq: int
    attempt: int
    envelope: bytes


def insert_events(
    conn: sqlite3.Connection, rows: Sequence[tuple[str, str, str | None, bytes, float]]
) -> None:
    """Store ``(id, topic, key, envelope, time)`` rows in one transaction; known ids are skipped."""
    with transaction(conn):
        conn.executemany(
            "INSERT OR IGNORE INTO events (id, topic, key, envelope, time) VALUES (?, ?, ?, ?, ?)",
            rows,
        )
        conn.executemany(
            "INSERT OR IGNORE INTO topics VALUES (?)", [(topic,) for topic in {r[1] for r in rows}]
        )


def declare(conn: sqlite3.Connection, group: GroupRef, now: float) -> None:
    """Create ``group`` at the end of the log if it does not exist yet."""
    with transaction(conn):
        _group_id(conn, group, now)


def _group_id(conn: sqlite3.Connection, group: GroupRef, now: float) -> int:
    """The group's id, creating it at the end of the log (a new group sees only what follows)."""
    found = conn.execute(
        "SELECT id, seen_at FROM groups WHERE topic = ? AND name = ? AND instance = ?",
        (group.topic, group.name, group.instance),
    ).fetchone()
    if found is not None:
        group_id, seen_at = found
        if now - seen_at > _SEEN_EVERY:
            conn.execute("UPDATE groups SET seen_at = ? WHERE id = ?", (now, group_id))
        return int(group_id)
    cursor = conn.execute(
        "INSERT INTO groups (topic, name, instance, position, seen_at)"
        " VALUES (?, ?, ?, (SELECT coalesce(max(seq), 0) FROM events), ?)",
        (group.topic, group.name, group.instance, now),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


_CLAIMABLE = """
    SELECT d.seq, d.attempt, e.envelope FROM deliveries AS d JOIN events AS e ON e.seq = d.seq
    WHERE d.grp = :grp AND d.head = 1 AND d.visible_at <= :now ORDER BY d.pos LIMIT :limit
"""


def claim(
    conn: sqlite3.Connection,
    group: GroupRef,
    *,
    owner: str,
    now: float,
    ack_wait: float,
    limit: int,
    opened: int,
) -> tuple[list[Claimed], float | None]:
    """Take in new events and claim up to ``limit`` rows, in one ``BEGIN IMMEDIATE``.

    Returns the claimed rows and when the group's next row becomes visible
    (None: no row waits on time), so an idle consumer knows when to look again.

    A look without the write lock comes first: most claims are of a consumer
    woken by a write to the file that was not for its group (every commit
    wakes every consumer on the machine), and those find nothing.  In WAL
    mode the look waits for no writer; the claim proper, ``BEGIN
    IMMEDIATE``, would queue behind each of them, and with it everything
    else this process's worker thread has to do.
    """
    idle = look(conn, group, now)
    if idle is not None:
        return [], idle.next_visible
    with transaction(conn):
        group_id = _group_id(conn, group, now)
        _take_in(conn, group_id, group.topic)
        found = conn.execute(_CLAIMABLE, {"grp": group_id, "now": now, "limit": limit}).fetchall()
        conn.executemany(
            "UPDATE deliveries SET attempt = attempt + 1, visible_at = ?, owner = ?"
            " WHERE grp = ? AND seq = ?",
            [(now + ack_wait, owner, group_id, seq) for seq, _, _ in found],
        )
        next_visible = None
        if not found:  # only an idle consumer needs it; a busy one asks again at once
            # Only a head becomes claimable by time alone; the rest wait for a
            # head to leave, a write that wakes every consumer anyway.
            (next_visible,) = conn.execute(
                "SELECT min(visible_at) FROM deliveries INDEXED BY deliveries_heads"
                " WHERE grp = ? AND head = 1"
                " AND visible_at > ?",
                (group_id, now),
            ).fetchone()
    claimed = [
        Claimed(opened, group_id, seq, attempt + 1, envelope) for seq, attempt, envelope in found
    ]
    return claimed, next_visible


class Idle(msgspec.Struct, frozen=True):
    """A look found nothing to claim; the group's next row becomes visible then (None: no
    row waits on time)."""

    next_visible: float | None


# One statement per look: the group, whether its topic has events it has not
# taken in, and when its first head becomes visible.
_LOOK = """
    SELECT g.seen_at,
           EXISTS (SELECT 1 FROM events WHERE topic = g.topic AND seq > g.position),
           (SELECT min(visible_at) FROM deliveries INDEXED BY deliveries_heads
            WHERE grp = g.id AND head = 1)
    FROM groups AS g WHERE g.topic = ? AND g.name = ? AND g.instance = ?
"""


def looks(conn: sqlite3.Connection, asked: Sequence[tuple[GroupRef, float]]) -> list[Idle | None]:
    """:func:`look` for each ``(group, now)``, in one piece of work on the worker thread."""
    return [look(conn, group, now) for group, now in asked]


def look(conn: sqlite3.Connection, group: GroupRef, now: float) -> Idle | None:
    """What a claim would find, read outside a transaction: None if it may find a row
    (or must write: a new group, a stale ``seen_at``); else when to look again.

    One statement, one snapshot of the file: a write that lands after it is
    caught by the caller, who read the file's change count before calling and
    looks again when it has moved.
    """
    found = conn.execute(_LOOK, (group.topic, group.name, group.instance)).fetchone()
    if found is None:
        return None  # a new group (or a new file): the claim creates it
    seen_at, newer, first = found
    if now - seen_at > _SEEN_EVERY or newer or (first is not None and first <= now):
        return None
    return Idle(first)


def _take_in(conn: sqlite3.Connection, group_id: int, topic: str) -> None:
    (position,) = conn.execute("SELECT position FROM groups WHERE id = ?", (group_id,)).fetchone()
    (last,) = conn.execute(
        "SELECT max(seq) FROM events WHERE topic = ? AND seq > ?", (topic, position)
    ).fetchone()
    if last is None:
        return  # nothing new: and no write, so an idle claim wakes nobody
    conn.execute(
        "INSERT OR IGNORE INTO deliveries (grp, seq, pos, key, attempt, visible_at, head)"
        " SELECT ?, seq, seq * ?, key, 0, 0, 0 FROM events"
        " WHERE topic = ? AND seq > ? AND seq <= ?",
        (group_id, _SLOTS, topic, position, last),
    )
    # A new row is a head when no row of its key comes before it.
    conn.execute(
        "UPDATE deliveries SET head = 1 WHERE grp = ? AND seq > ? AND (key IS NULL OR NOT EXISTS"
        " (SELECT 1 FROM deliveries AS p WHERE p.grp = deliveries.grp AND p.key = deliveries.key"
        "  AND p.pos < deliveries.pos))",
        (group_id, position),
    )
    conn.execute("UPDATE groups SET position = ? WHERE id = ?", (last, group_id))


def ack(conn: sqlite3.Connection, rows: Sequence[Claimed]) -> None:
    """End the rows, in one transaction: handled."""
    with transaction(conn):
        for row in rows:
            _remove(conn, row.group_id, row.seq)


def _remove(conn: sqlite3.Connection, group_id: int, seq: int, attempt: int | None = None) -> bool:
    """Delete a row (of ``attempt``, if given); the next row of its key becomes the head."""
    found = conn.execute(
        "SELECT key, attempt FROM deliveries WHERE grp = ? AND seq = ?", (group_id, seq)
    ).fetchone()
    if found is None or (attempt is not None and found[1] != attempt):
        return False
    conn.execute("DELETE FROM deliveries WHERE grp = ? AND seq = ?", (group_id, seq))
    if found[0] is not None:
        _crown(conn, group_id, found[0])
    return True


def _crown(conn: sqlite3.Connection, group_id: int, key: str) -> None:
    """Make the first row of ``key`` in the group its head (if it has any)."""
    conn.execute(
        "UPDATE deliveries SET head = 1 WHERE grp = ? AND seq ="
        " (SELECT seq FROM deliveries WHERE grp = ? AND key = ? ORDER BY pos LIMIT 1)",
        (group_id, group_id, key),
    )


def retry_later(conn: sqlite3.Connection, delivery: Claimed, visible_at: float) -> None:
    """Nak: the row becomes claimable again at ``visible_at`` (if still this attempt's)."""
    conn.execute(
        "UPDATE deliveries SET visible_at = ?, owner = NULL"
        " WHERE grp = ? AND seq = ? AND attempt = ?",
        (visible_at, delivery.group_id, delivery.seq, delivery.attempt),
    )


def renew(conn: sqlite3.Connection, delivery: Claimed, visible_at: float) -> None:
    """In progress: push the row's redelivery to ``visible_at`` (if still this attempt's)."""
    conn.execute(
        "UPDATE deliveries SET visible_at = ? WHERE grp = ? AND seq = ? AND attempt = ?"
        " AND owner IS NOT NULL",
        (visible_at, delivery.group_id, delivery.seq, delivery.attempt),
    )


def release(conn: sqlite3.Connection, rows: Sequence[Claimed]) -> None:
    """Give back rows claimed but never handed to a consumer: as if never claimed."""
    with transaction(conn):
        conn.executemany(
            "UPDATE deliveries SET attempt = attempt - 1, visible_at = 0, owner = NULL"
            " WHERE grp = ? AND seq = ? AND attempt = ?",
            [(row.group_id, row.seq, row.attempt) for row in rows],
        )


def dead_letter(conn: sqlite3.Connection, delivery: Claimed, error: str, now: float) -> None:
    """Move the row (if still this attempt's) to the dead letters."""
    with transaction(conn):
        if _remove(conn, delivery.group_id, delivery.seq, delivery.attempt):
            conn.execute(
                "INSERT INTO dead_letters (topic, name, instance, seq, attempt, error, time)"
                " SELECT topic, name, instance, ?, ?, ?, ? FROM groups WHERE id = ?",
                (delivery.seq, delivery.attempt, error, now, delivery.group_id),
            )


DEAD_LETTERS = """
    SELECT e.id, e.topic, e.envelope, x.name || iif(x.instance = '', '', '@' || x.instance),
           x.attempt, x.error, x.time
    FROM dead_letters AS x JOIN events AS e ON e.seq = x.seq
    WHERE (:topic IS NULL OR x.topic = :topic) ORDER BY x.id LIMIT :limit
"""


def replay(conn: sqlite3.Connection, ids: Sequence[str] | None, now: float) -> int:
    """Give dead letters (of these event ids; None: all) back to their groups, as attempt 1.

    Each goes to the end of its group's queue: after every event stored so
    far and every row queued (in the slots between the last event's ``pos``
    and the next one's), so a replayed event of a key comes after the events
    of that key that went on without it.  A group that is gone (an expired broadcast group) is made
    again, so the events wait there for its instance.
    """
    where = "" if ids is None else f"WHERE e.id IN ({', '.join('?' * len(ids))})"
    with transaction(conn):
        rows = conn.execute(
            "SELECT x.id, x.topic, x.name, x.instance, x.seq, e.key FROM dead_letters AS x"
            f" JOIN events AS e ON e.seq = x.seq {where} ORDER BY x.id",
            list(ids or ()),
        ).fetchall()
        (last,) = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
        for row_id, topic, name, instance, seq, key in rows:
            group_id = _group_id(conn, GroupRef(topic, name, instance), now)
            (end,) = conn.execute(
                "SELECT max(?, coalesce(max(pos), 0)) + 1 FROM deliveries WHERE grp = ?",
                (last * _SLOTS, group_id),
            ).fetchone()
            # Still queued (replayed twice, or never taken out): leave it be.
            conn.execute(
                "INSERT OR IGNORE INTO deliveries (grp, seq, pos, key, attempt, visible_at, head)"
                " VALUES (?, ?, ?, ?, 0, 0, 0)",
                (group_id, seq, end, key),
            )
            if key is None:
                conn.execute(
                    "UPDATE deliveries SET head = 1 WHERE grp = ? AND seq = ?", (group_id, seq)
                )
            else:
                _crown(conn, group_id, key)
            conn.execute("DELETE FROM dead_letters WHERE id = ?", (row_id,))
    return len(rows)


def prune(conn: sqlite3.Connection, *, older_than: float, unseen_since: float, limit: int) -> int:
    """Delete up to ``limit`` events every group of their topic is done with, stored before
    ``older_than``; returns how many went (``limit``: there may be more).

    Broadcast groups not seen since ``unseen_since`` go first (their instance
    is gone; broadcast has no one to hand their events to).  Dead-lettered
    events stay.  The limit keeps the write lock, which every process of the
    machine waits for, to a few milliseconds.
    """
    with transaction(conn):
        conn.execute(
            "DELETE FROM deliveries WHERE grp IN"
            " (SELECT id FROM groups WHERE instance != '' AND seen_at < ?)",
            (unseen_since,),
        )
        conn.execute("DELETE FROM groups WHERE instance != '' AND seen_at < ?", (unseen_since,))
        return conn.execute(_PRUNE, (older_than, _NO_LIMIT, limit)).rowcount


# The floor of a topic: the first event some group of it still needs (its
# first queued row, or the one after its position).
_PRUNE = """
    DELETE FROM events WHERE seq IN (
        WITH floors AS (
            SELECT g.topic, coalesce(
                (SELECT min(d.seq) FROM deliveries AS d WHERE d.grp = g.id),
                g.position + 1) AS floor
            FROM groups AS g),
        topic_floor AS (SELECT topic, min(floor) AS floor FROM floors GROUP BY topic)
        SELECT e.seq FROM events AS e
        WHERE e.time < ?
          AND e.seq < coalesce((SELECT floor FROM topic_floor AS t WHERE t.topic = e.topic), ?)
          AND NOT EXISTS (SELECT 1 FROM dead_letters AS x WHERE x.seq = e.seq)
        ORDER BY e.seq LIMIT ?)
"""

"""The SQLite event log's tables (the statements that use them: :mod:`flotilla.events.sqlite_log`).

The tables::

    events        seq (never reused), event id, topic, key, envelope bytes, time stored
    topics        every topic that ever saw an event
    groups        (topic, group, instance) -> id, position (last seq taken in), seen_at
                  instance is '' for a balanced group, the instance for a broadcast one
    deliveries    (group id, seq): an event the group took in and has not acked yet,
                  with its place in the group's queue (pos), attempt, visible_at, head
    dead_letters  (topic, group, instance, seq): an event a group gave up on, its error;
                  it keeps the event from being pruned until it is replayed

A file is versioned (``PRAGMA user_version``, see
:class:`~flotilla.sqlite_worker.Schema`); this is version 1, the first.
"""

from __future__ import annotations

import sqlite3

from flotilla.sqlite_worker import Schema

__all__ = ["SCHEMA"]


def _refuse_foreign(conn: sqlite3.Connection, version: int) -> None:
    # Version 1 is the first: a file with tables but no version is not ours,
    # and its rows may be somebody's data.  Refuse rather than drop.
    raise sqlite3.DatabaseError("it holds tables that are not an event log")


SCHEMA = Schema(
    version=1,
    statements=(
        """CREATE TABLE IF NOT EXISTS events (
            seq      INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: positions stay valid
            id       TEXT NOT NULL UNIQUE,               -- a republished event is stored once
            topic    TEXT NOT NULL,
            key      TEXT,
            envelope BLOB NOT NULL,                      -- msgpack Envelope
            time     REAL NOT NULL                       -- clock.time() when stored
        )""",
        "CREATE INDEX IF NOT EXISTS events_by_topic ON events (topic, seq)",
        "CREATE TABLE IF NOT EXISTS topics (name TEXT PRIMARY KEY) WITHOUT ROWID",
        """CREATE TABLE IF NOT EXISTS groups (
            id       INTEGER PRIMARY KEY,
            topic    TEXT NOT NULL,
            name     TEXT NOT NULL,
            instance TEXT NOT NULL,   -- '' balanced; the instance of a broadcast group
            position INTEGER NOT NULL,
            seen_at  REAL NOT NULL,   -- a broadcast group unseen for long is dropped
            UNIQUE (topic, name, instance)
        )""",
        """CREATE TABLE IF NOT EXISTS deliveries (
            grp        INTEGER NOT NULL,
            seq        INTEGER NOT NULL,
            pos        INTEGER NOT NULL,  -- place in the group's queue (sqlite_log._SLOTS)
            key        TEXT,
            attempt    INTEGER NOT NULL,  -- deliveries made so far
            visible_at REAL NOT NULL,     -- claimable from then on
            head       INTEGER NOT NULL,  -- 1: no earlier row of its key (or keyless)
            owner      TEXT,              -- the instance holding it in flight
            PRIMARY KEY (grp, seq)
        ) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS deliveries_heads ON deliveries (grp, pos) WHERE head = 1",
        "CREATE INDEX IF NOT EXISTS deliveries_by_key ON deliveries (grp, key, pos)",
        """CREATE TABLE IF NOT EXISTS dead_letters (
            id      INTEGER PRIMARY KEY,
            topic   TEXT NOT NULL,      -- with name and instance: the group, which may
            name    TEXT NOT NULL,      -- be gone (an expired broadcast) by the time
            instance TEXT NOT NULL,     -- its dead letters are replayed
            seq     INTEGER NOT NULL,   -- keeps the event from being pruned
            attempt INTEGER NOT NULL,
            error   TEXT NOT NULL,
            time    REAL NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS dead_letters_by_seq ON dead_letters (seq)",
    ),
    upgrade=_refuse_foreign,
)

"""Admission to the handshake: the oldest is evicted, one host cannot cycle out the others."""

from __future__ import annotations

import pytest

from flotilla.transport.handshakes import HandshakeTable, per_host_budget


def test_admits_without_eviction_while_there_is_room() -> None:
    table: HandshakeTable[str] = HandshakeTable(3)
    assert [table.admit(name, "h") for name in "abc"] == [None, None, None]
    assert len(table) == 3
    assert "a" in table


def test_full_table_evicts_the_oldest() -> None:
    table: HandshakeTable[str] = HandshakeTable(4, per_host=4)
    for name in "abcd":
        table.admit(name, "h")
    assert table.admit("e", "h") == "a"
    assert table.admit("f", "h") == "b"
    assert "a" not in table
    assert len(table) == 4


def test_a_finished_handshake_frees_its_slot() -> None:
    table: HandshakeTable[str] = HandshakeTable(2)
    table.admit("a", "h1")
    table.admit("b", "h2")
    table.remove("a")
    table.remove("a")  # idempotent
    assert table.admit("c", "h1") is None
    # Full again; h1 holds its budget (one slot of two): it displaces its own.
    assert table.admit("d", "h1") == "c"
    assert "b" in table


def test_a_host_at_its_budget_evicts_its_own_oldest() -> None:
    table: HandshakeTable[str] = HandshakeTable(4)  # budget: 2 per host
    table.admit("honest-1", "10.0.0.1")
    table.admit("flood-1", "10.0.0.9")
    table.admit("flood-2", "10.0.0.9")
    table.admit("honest-2", "10.0.0.2")
    # Full, and the flooding host holds its budget: it cycles its own slots only,
    # even though an honest connection is older.
    assert table.admit("flood-3", "10.0.0.9") == "flood-1"
    assert table.admit("flood-4", "10.0.0.9") == "flood-2"
    assert "honest-1" in table
    # A host under its budget evicts the oldest of all.
    assert table.admit("honest-3", "10.0.0.3") == "honest-1"


def test_a_newcomer_from_a_quiet_host_evicts_the_flood() -> None:
    table: HandshakeTable[int] = HandshakeTable(128)
    for n in range(128):  # one host filled the table while nobody else was there
        table.admit(n, "10.0.0.9")
    assert table.admit(1000, "10.0.0.1") == 0
    assert 1000 in table


def test_per_host_budget_is_half_the_table() -> None:
    assert per_host_budget(128) == 64
    assert per_host_budget(1) == 1


def test_an_empty_table_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        HandshakeTable(0)

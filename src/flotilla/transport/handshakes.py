"""Admission of connections to their handshake: evict the oldest, within a budget per host.

A socket that connects and says nothing costs its owner nothing and holds a
slot until the handshake deadline.  Refusing newcomers once the table is full
(what a plain cap does) hands the server to whoever opens sockets fastest: 130
idle sockets kept every real client out.  Instead, when the table is full, the
*oldest* connection in it is evicted to admit the newcomer.  A real client
answers the challenge within one round trip, so it is almost never the oldest;
an idle socket is evicted as soon as others arrive.  To keep a real client out,
an attacker must now open a table's worth of sockets inside that client's
round trip, instead of a table's worth per handshake deadline.

One source must not cycle everyone else out, though: a host that already holds
:func:`per_host_budget` of the table evicts its *own* oldest connection, never
another host's.  One address flooding the server thus only churns its own half
of the table, and the other half stays for everyone else.  (Many clients
behind one address, e.g. one NAT or one laptop, share that half: their
handshakes still complete, since each is the newest of its host.)

The table only decides; the server closes what it is told to evict.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["HandshakeTable", "per_host_budget"]

C = TypeVar("C", bound=Hashable)


def per_host_budget(capacity: int) -> int:
    """Slots one host may hold before its newcomers evict its own: half the table."""
    return max(1, capacity // 2)


class HandshakeTable(Generic[C]):
    """The connections in their handshake, oldest first, with their peer's host."""

    def __init__(self, capacity: int, per_host: int | None = None) -> None:
        if capacity < 1:
            raise ValueError(
                f"a handshake table needs room for at least one connection, not {capacity}"
            )
        self.capacity = capacity
        self.per_host = per_host if per_host is not None else per_host_budget(capacity)
        # dicts keep insertion order: the first key is the oldest connection.
        self._hosts: dict[C, str] = {}
        self._by_host: dict[str, dict[C, None]] = {}

    def __len__(self) -> int:
        return len(self._hosts)

    def __contains__(self, connection: object) -> bool:
        return connection in self._hosts

    def admit(self, connection: C, host: str) -> C | None:
        """Add ``connection``; return the one it displaces (to be closed), if the table was full."""
        evicted = None
        if len(self._hosts) >= self.capacity:
            own = self._by_host.get(host)
            if own is not None and len(own) >= self.per_host:
                evicted = next(iter(own))
            else:
                evicted = next(iter(self._hosts))
            self.remove(evicted)
        self._hosts[connection] = host
        self._by_host.setdefault(host, {})[connection] = None
        return evicted

    def remove(self, connection: C) -> None:
        """Forget ``connection`` (its handshake ended, one way or another); idempotent."""
        host = self._hosts.pop(connection, None)
        if host is None:
            return
        own = self._by_host[host]
        del own[connection]
        if not own:
            del self._by_host[host]

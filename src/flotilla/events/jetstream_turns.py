"""Which of a subscription's consumers to ask next, so that asking costs little.

A subscription has several consumers (keyless, replays, one per partition);
asking one that has nothing costs a round trip (and a bounded one, some
milliseconds more), so a subscription asks only the consumers that *may*
have a message:

* every one, when it starts and after each ``poll`` seconds with nothing
  (redeliveries and naks' delays come due without any publish);
* one whose subject an event was just published on (the doorbell: a plain
  NATS subscription to the topic's subjects says which);
* one that just gave a message (it may have more), and a bounded one whose
  delivery this subscriber just ended (its next message is free now).

A consumer that answers "nothing" leaves the set.  The set is asked in turn
from the one after the last that gave a message, so a busy consumer (the
keyless one, under load) costs one round trip per event but cannot starve
the others: after it gave one, each other candidate is asked first once.
"""

from __future__ import annotations

import asyncio

__all__ = ["Candidates"]


class Candidates:
    """The consumers (by index) that may have a message for one subscription."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.maybe: set[int] = set(range(count))
        self.changed = asyncio.Event()
        """Set when a consumer joins the set (cleared by the subscription before it asks)."""
        self._after = -1  # the last consumer that gave a message

    def order(self) -> list[int]:
        """The candidates, from the one after the last that gave a message."""
        return sorted(self.maybe, key=lambda index: (index - self._after - 1) % self.count)

    def mark(self, index: int) -> None:
        self.maybe.add(index)
        self.changed.set()

    def mark_all(self) -> None:
        self.maybe.update(range(self.count))
        self.changed.set()

    def gave(self, index: int) -> None:
        self._after = index  # stays in the set: it may have more

    def had_nothing(self, index: int) -> None:
        self.maybe.discard(index)

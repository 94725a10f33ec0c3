"""The JetStream event backend's names: subjects, streams and consumers (pure functions).

One stream per system holds every event, under the subject prefix ``P``
(``FLOTILLA_EVENTS`` by default)::

    P.ev.<topic>.<n>           an event of a key, n = hash(key) mod partitions
    P.ev.<topic>.n             an event without a key
    P.rp.<group token>.<topic> a dead letter replayed to one group

and a second stream, ``P_DLQ``, holds dead letters at ``P_DLQ.<topic>``.

A group of a topic is a set of durable pull consumers, one filter subject
each (NATS 2.9 allows one per consumer): one per partition
(``max_ack_pending=1``: the next event of a partition waits for the previous
one's ack, so per-key order holds across every instance of the group), one for
keyless events and one for the group's replays (both unbounded).  Consumer
names are a digest of (topic, group), since names may not hold the
characters topics and group names may.
"""

from __future__ import annotations

import hashlib
import re

from flotilla.errors import InvalidArgument

__all__ = [
    "KEYLESS",
    "REPLAYS",
    "check_topic",
    "consumer_name",
    "dead_letter_subject",
    "dlq_stream",
    "event_subject",
    "group_token",
    "partition_of",
    "replay_subject",
    "topic_of",
]

KEYLESS = "n"
REPLAYS = "r"
# A topic is dotted words: no empty token, no wildcard, no whitespace.
_TOPIC = re.compile(r"^[A-Za-z0-9_\-:@]+(\.[A-Za-z0-9_\-:@]+)*$")


def _digest(*parts: str) -> str:
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=8).hexdigest()


def check_topic(topic: str) -> str:
    """``topic`` if it can be a subject's tail; otherwise :class:`InvalidArgument`."""
    if not _TOPIC.match(topic):
        raise InvalidArgument(
            f"topic {topic!r} is not dotted words (letters, digits, '_', '-', ':', '@')"
        )
    return topic


def partition_of(key: str, partitions: int) -> int:
    """The partition of ``key``: a stable hash, the same in every process and version."""
    return int(_digest(key), 16) % partitions


def event_subject(prefix: str, topic: str, key: str | None, partitions: int) -> str:
    tail = KEYLESS if key is None else str(partition_of(key, partitions))
    return f"{prefix}.ev.{topic}.{tail}"


def group_token(group: str) -> str:
    return _digest(group)


def replay_subject(prefix: str, group: str, topic: str) -> str:
    return f"{prefix}.rp.{group_token(group)}.{topic}"


def consumer_name(topic: str, group: str, part: str) -> str:
    """The durable name of one of a group's consumers (``part``: a partition, ``n`` or ``r``)."""
    return f"{_digest(topic, group)}_{part}"


def dlq_stream(prefix: str) -> str:
    return f"{prefix}_DLQ"


def dead_letter_subject(prefix: str, topic: str) -> str:
    return f"{dlq_stream(prefix)}.{topic}"


def topic_of(prefix: str, subject: str) -> str | None:
    """The topic of an event subject (``P.ev.<topic>.<tail>``); None for any other subject."""
    head = f"{prefix}.ev."
    if not subject.startswith(head):
        return None
    topic, _, _ = subject.removeprefix(head).rpartition(".")
    return topic or None

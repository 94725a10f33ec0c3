"""Consistent hashing: requests with the same key go to the same endpoint.

Useful when an endpoint keeps per-key state worth reusing (a cache, a
session).  Each endpoint owns ``replicas`` points on a ring of 64-bit hashes; a
key goes to the owner of the first point at or after the key's hash.  When an
endpoint leaves, only the keys on its arcs move (to the next points along), and
when one joins it takes arcs from the others and nothing else moves (Karger et
al. 1997).  Many points per endpoint keep the arcs, and so the load, even.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence

from flotilla.balancing.base import Endpoint, RequestView
from flotilla.errors import ConfigError, InvalidArgument

__all__ = ["ConsistentHash"]

# How many endpoint sets keep a ring: enough for the services one caller
# talks to and their retry subsets, small enough not to grow as sets churn.
MAX_RINGS = 16

# (sorted points, owner of each point as an index into the endpoint ids)
_Ring = tuple[list[int], list[int]]


def _hash(text: str) -> int:
    # Python's hash() of a str is salted per process: callers in two processes
    # would disagree on where a key lives.  blake2b is stable and fast.
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class ConsistentHash:
    """Sends each request to the endpoint that owns ``key`` on a hash ring.

    The key is read from ``request.meta[key]`` if present, else from
    ``request.args[key]`` (as ``str``).  160 points per endpoint (as in Ketama)
    keep each of ten endpoints' shares within about ±15 % of the mean.
    """

    __slots__ = ("_rings", "key", "replicas")

    def __init__(self, key: str, replicas: int = 160) -> None:
        if not key:
            raise ConfigError("consistent_hash needs the name of a request field as its key")
        if replicas < 1:
            raise ConfigError(f"consistent_hash replicas must be at least 1, not {replicas}")
        self.key = key
        self.replicas = replicas
        # Rings are cached by endpoint set: building one hashes replicas x n
        # labels, far too much for every call.  More than one is kept because
        # the set a call sees can alternate: one strategy may serve several
        # services, and a retry excludes the endpoint it already tried.
        self._rings: dict[tuple[str, ...], _Ring] = {}

    def select(self, endpoints: Sequence[Endpoint], request: RequestView) -> Endpoint:
        # The key first: a request without one must fail before any ring work.
        point = _hash(self._key_of(request))
        ids = tuple(endpoint.id for endpoint in endpoints)
        ring = self._rings.get(ids)
        if ring is None:
            ring = self._add_ring(ids)
        points, owners = ring
        i = bisect.bisect_left(points, point)
        # Past the last point the ring wraps round to the first.
        return endpoints[owners[i % len(points)]]

    def _key_of(self, request: RequestView) -> str:
        value = request.meta.get(self.key)
        if value is not None:
            return value
        try:
            return str(request.args[self.key])
        except KeyError:
            raise InvalidArgument(
                f"consistent hashing needs {self.key!r} in the request's meta or arguments",
                details={"key": self.key},
            ) from None

    def _add_ring(self, ids: tuple[str, ...]) -> _Ring:
        if len(self._rings) >= MAX_RINGS:
            # Dicts keep insertion order: drop the oldest; pop() tolerates a
            # concurrent drop of the same one.
            self._rings.pop(next(iter(self._rings)), None)
        ring = self._rings[ids] = self._build(ids)
        return ring

    def _build(self, ids: tuple[str, ...]) -> _Ring:
        # Sorting by (hash, id) makes the ring depend only on the set of ids,
        # not on their order, and breaks (unlikely) hash ties the same way everywhere.
        ring = sorted(
            (_hash(f"{endpoint_id}#{replica}"), endpoint_id, index)
            for index, endpoint_id in enumerate(ids)
            for replica in range(self.replicas)
        )
        return [point for point, _, _ in ring], [index for _, _, index in ring]

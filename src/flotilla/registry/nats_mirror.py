"""A local copy of a registry bucket, kept current by one KV watcher.

The watcher delivers every key's latest value, then a marker (``None``), then
each change as it is written; the mirror applies them in stream order, so it
never holds an instance without the lease it was registered under.  Its
``revision`` is the last stream sequence applied: a writer that got revision
*r* back waits for :meth:`Mirror.reached` (r) to read its own write.

The mirror is *live* while its watch is known to deliver; it is not while
the connection is down or after the watch ended (nats-py's ordered consumer
can fail to recreate itself, or the server drop it): then
:meth:`Mirror.check_live` raises ``Unavailable`` (its readers keep what they
had and ask again, rather than trust a view that silently stopped changing)
and the mirror watches again, after a pause if watching failed.  A new
watch loads every key afresh and replaces the old state when loaded (a key
deleted meanwhile must not linger)::

    loading --marker--> live --watch ended / disconnected--> down --watch again--> loading

The task that watches is owned by the mirror: :meth:`Mirror.aclose` cancels
and awaits it.  A value that does not decode (a newer or broken writer) is
left out, with one warning per key.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging

import msgspec
from nats.js.kv import KeyValue

from flotilla.errors import Unavailable
from flotilla.registry.base import Instance

__all__ = [
    "INSTANCE",
    "LEASE",
    "Entry",
    "LeaseRecord",
    "Mirror",
    "decode_entry",
    "decode_lease",
    "instance_key",
]

log = logging.getLogger("flotilla.registry")

LEASE = "l."
INSTANCE = "i."
_DELETED = ("DEL", "PURGE")


def instance_key(instance_id: str) -> str:
    """The key of an instance: its id base64url-encoded (an id may hold what a key may not)."""
    encoded = base64.urlsafe_b64encode(instance_id.encode()).decode().rstrip("=")
    return f"{INSTANCE}{encoded}"


class LeaseRecord(msgspec.Struct, frozen=True):
    ttl: float
    expires_at: float
    """``clock.time()`` at which the lease stops being live (at, not after)."""


class Entry(msgspec.Struct, frozen=True):
    instance: Instance
    lease: str


decode_lease = msgspec.json.Decoder(LeaseRecord).decode
decode_entry = msgspec.json.Decoder(Entry).decode

# Pause before watching again after a watch could not be made, doubling to the max.
REWATCH_FIRST = 0.1
REWATCH_MAX = 5.0


class Mirror:
    """The leases and instances of one bucket, as of ``revision``."""

    def __init__(self, *, what: str) -> None:
        self.what = what
        self.revision = 0
        self.leases: dict[str, tuple[LeaseRecord, int]] = {}  # id -> (record, revision)
        self.entries: dict[str, tuple[Entry, int]] = {}  # key -> (entry, revision)
        # Replaced (after being set) on every change, as MemoryRegistry does.
        self.changed = asyncio.Event()
        self.live = False
        self._down_because = "not loaded yet"
        self._task: asyncio.Task[None] | None = None
        self._watcher: KeyValue.KeyWatcher | None = None
        self._warned: set[str] = set()

    async def start(self, kv: KeyValue, *, timeout: float) -> None:
        """Watch ``kv`` and return once every key's current value is in."""
        self._task = asyncio.create_task(self._watch(kv))
        try:
            async with asyncio.timeout(timeout):
                while not self.live:
                    await self.changed.wait()
        except BaseException as exc:
            # Timed out or cancelled: the watch must not outlive a start that failed.
            await self.aclose()
            if isinstance(exc, TimeoutError):
                message = f"{self.what}: the bucket did not load in {timeout} s"
                raise Unavailable(message) from None
            raise

    def check_live(self) -> None:
        """Raise ``Unavailable`` unless the watch is known to deliver."""
        if not self.live:
            raise Unavailable(f"{self.what}: not following the bucket ({self._down_because})")

    def lost(self, why: str) -> None:
        """The connection is down: not live until a new watch has loaded."""
        self._down(why)

    async def rewatch(self) -> None:
        """Watch afresh (the connection is back: the old watch may not be)."""
        self._down("watching again")
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]  # its loop watches again

    async def reached(self, revision: int, *, timeout: float) -> None:
        """Return once the mirror has applied ``revision``."""
        try:
            async with asyncio.timeout(timeout):
                while self.revision < revision:
                    await self.changed.wait()
        except TimeoutError:
            raise Unavailable(
                f"{self.what}: a write (revision {revision}) was not seen back in {timeout} s"
            ) from None

    def snapshot(self, service: str | None, now: float) -> tuple[list[Instance], float | None]:
        """The live instances of ``service`` and the earliest time the lease of one ends."""
        live: list[Instance] = []
        next_expiry: float | None = None
        for entry, _ in self.entries.values():
            found = self.leases.get(entry.lease)
            if found is None or found[0].expires_at <= now:
                continue
            if service is None or entry.instance.service == service:
                live.append(entry.instance)
                expires_at = found[0].expires_at
                next_expiry = expires_at if next_expiry is None else min(next_expiry, expires_at)
        live.sort(key=lambda instance: instance.id)
        return live, next_expiry

    def instances_of(self, lease: str) -> list[tuple[str, int]]:
        """(key, revision) of every instance registered under ``lease``."""
        return [(key, rev) for key, (entry, rev) in self.entries.items() if entry.lease == lease]

    def dead(self, now: float) -> list[tuple[str, int]]:
        """(key, revision) of leases that ran out, and of instances whose lease is not live."""
        live = {id_ for id_, (rec, _) in self.leases.items() if rec.expires_at > now}
        dead = [(LEASE + id_, rev) for id_, (_, rev) in self.leases.items() if id_ not in live]
        dead += [
            (key, rev) for key, (entry, rev) in self.entries.items() if entry.lease not in live
        ]
        return dead

    async def aclose(self) -> None:
        """Stop following the bucket and wake every waiter; idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # not ``await task``: its cancellation is not ours
            if not task.cancelled() and task.exception() is not None:
                log.warning("%s: the bucket watch had failed: %r", self.what, task.exception())
        self.live = False
        self._down_because = "closed"
        self._notify()

    async def _watch(self, kv: KeyValue) -> None:
        """Watch the bucket, and again whenever a watch ends, until cancelled."""
        pause = REWATCH_FIRST
        while True:
            watcher = None
            try:
                watcher = self._watcher = await kv.watchall()
                if await self._follow(watcher):
                    pause = REWATCH_FIRST  # it worked for a while: a fresh start
            except Exception as exc:
                self._down(f"cannot watch: {exc!r}")
                log.warning("%s: the bucket watch failed (%r); watching again", self.what, exc)
            finally:
                if watcher is not None:
                    with contextlib.suppress(Exception):
                        await watcher.stop()  # type: ignore[no-untyped-call]
            if watcher is None or self._watcher is watcher:  # not stopped by rewatch()
                if watcher is not None and self.live:
                    log.warning("%s: the bucket watch ended; watching again", self.what)
                self._down("the watch ended")
                await asyncio.sleep(pause)
                pause = min(pause * 2, REWATCH_MAX)

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> bool:
        """Load every key's value into a fresh state, put it in place, then apply changes
        until the watch ends; whether it loaded."""
        leases: dict[str, tuple[LeaseRecord, int]] = {}
        entries: dict[str, tuple[Entry, int]] = {}
        loaded_revision = 0
        loaded = False
        async for update in watcher:
            if update is None:  # every key's current value is in
                if not loaded:
                    loaded = True
                    self.leases, self.entries = leases, entries
                    self.revision = max(self.revision, loaded_revision)
                    self.live = True
                    self._notify()
            elif loaded:
                self.revision = max(self.revision, self._apply(update, self.leases, self.entries))
                self._notify()
            else:  # not in place yet: its revision is not reached until it is
                loaded_revision = max(loaded_revision, self._apply(update, leases, entries))
        return loaded

    def _down(self, why: str) -> None:
        self._down_because = why
        if self.live:
            self.live = False
            self._notify()  # watchers wake, see it, and say so

    def _apply(
        self,
        update: KeyValue.Entry,
        leases: dict[str, tuple[LeaseRecord, int]],
        entries: dict[str, tuple[Entry, int]],
    ) -> int:
        """Apply ``update`` to ``leases`` and ``entries``; its revision."""
        key, revision = update.key, update.revision or 0
        deleted = update.operation in _DELETED
        try:
            if key.startswith(LEASE):
                lease = key.removeprefix(LEASE)
                if deleted:
                    leases.pop(lease, None)
                else:
                    leases[lease] = (decode_lease(update.value or b""), revision)
            elif key.startswith(INSTANCE):
                if deleted:
                    entries.pop(key, None)
                else:
                    entries[key] = (decode_entry(update.value or b""), revision)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            if key not in self._warned:
                self._warned.add(key)
                log.warning("%s: key %r left out, its value is bad: %s", self.what, key, exc)
        return revision

    def _notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

"""The cluster registry: leases and instances in a NATS JetStream key-value bucket.

NATS 2.9 has no per-key TTL, so a lease is a key of its own holding its
expiry time, and an instance is a key naming its lease::

    l.<lease id>        {"ttl": 10.0, "expires_at": 1764490000.5}
    i.<instance id>     {"instance": {...}, "lease": "<lease id>"}

(an instance id is base64url-encoded in its key: ids may hold characters a
key may not).  A keepalive rewrites the one lease key, compare-and-set on its
revision, however many instances the lease covers.  An instance is live while
its lease key exists and its ``expires_at`` is after ``clock.time()``: readers
judge expiry themselves, by the wall clock, so the instances of a node that
was killed vanish for every reader when its lease runs out, whether or not
anybody deletes them (the clocks of the machines must agree to well within a
ttl, as NTP keeps them).  The dead keys are deleted by the next :meth:`grant`
of any registry on the bucket (a node starting is when the dead get replaced),
each compare-and-set so that a lease renewed meanwhile survives.

Each registry object keeps a *mirror* of the bucket, fed by one KV watcher
(:mod:`flotilla.registry.nats_mirror`); ``list`` and ``watch`` read it, so
discovery costs no round trip, and every write waits until the mirror has
seen it, so a registry reads its own writes.  While the mirror is not
following the bucket (disconnected, or its watch ended and it is watching
again) ``list`` and ``watch`` raise ``Unavailable`` rather than give out a
view that stopped changing; a watcher then keeps what it had and asks again.
Revoking deletes the lease key first: its instances leave every snapshot at
once, together.  Liveness checks
on writes (``register``, ``keepalive``, ``set_health``) read the server, not
the mirror.

URL: ``nats://host:4222?bucket=flotilla_registry`` (the default bucket).
"""

from __future__ import annotations

import builtins
import contextlib
import secrets
from collections.abc import AsyncGenerator, Awaitable
from urllib.parse import parse_qs, urlsplit

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from flotilla.aio import wait_first
from flotilla.clock import Clock, SystemClock
from flotilla.errors import ConfigError, NotFound, Unavailable
from flotilla.nats_link import NatsLink, nats_errors_as_unavailable
from flotilla.registry.base import Health, Instance, check_ttl, lease_not_found
from flotilla.registry.nats_mirror import (
    LEASE,
    Entry,
    LeaseRecord,
    Mirror,
    decode_entry,
    decode_lease,
    instance_key,
)

__all__ = ["DEFAULT_BUCKET", "NatsKvRegistry"]

DEFAULT_BUCKET = "flotilla_registry"
CAS_ATTEMPTS = 5  # a lease renewed by two holders at once: try again on a fresh revision

_encode = msgspec.json.encode


class NatsKvRegistry:
    """A :class:`~flotilla.registry.base.Registry` in a NATS KV bucket (a cluster).

    ``timeout`` is the most a call waits on the server before it is ``Unavailable``.
    """

    def __init__(
        self,
        url: str,
        *,
        bucket: str = DEFAULT_BUCKET,
        clock: Clock | None = None,
        timeout: float = 5.0,
    ) -> None:
        self._link = NatsLink(url, what="registry", timeout=timeout)
        self.bucket = bucket
        self._clock: Clock = clock or SystemClock()
        self._kv: KeyValue | None = None
        self._mirror = Mirror(what=f"registry bucket {bucket!r}")
        self._link.add_listener(self._connection_changed)

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None) -> NatsKvRegistry:
        """The registry for ``nats://host:port`` (``?bucket=name`` picks the bucket)."""
        query = parse_qs(urlsplit(url).query)
        unknown = set(query) - {"bucket"}
        if unknown:
            raise ConfigError(f"registry URL {url!r}: unknown option(s) {sorted(unknown)}")
        bucket = query.get("bucket", [DEFAULT_BUCKET])[-1]
        return cls(url, bucket=bucket, clock=clock)

    async def grant(self, ttl: float) -> str:
        """A new lease id, live for ``ttl`` seconds; collects the dead leases first."""
        check_ttl(ttl)
        kv = await self._open()
        await self._collect()
        lease = secrets.token_hex(16)
        record = LeaseRecord(ttl=ttl, expires_at=self._clock.time() + ttl)
        await self._wrote(kv.put(f"{LEASE}{lease}", _encode(record)))
        return lease

    async def register(self, instance: Instance, *, lease: str) -> None:
        """Add or replace ``instance`` under ``lease``; :class:`NotFound` if it is not live."""
        kv = await self._open()
        await self._live_lease(kv, lease)
        entry = Entry(instance=instance, lease=lease)
        await self._wrote(kv.put(instance_key(instance.id), _encode(entry)))

    async def keepalive(self, lease: str) -> None:
        """Renew ``lease`` for its ttl; :class:`NotFound` when it expired or was revoked."""
        kv = await self._open()
        for _ in range(CAS_ATTEMPTS):
            record, revision = await self._live_lease(kv, lease)
            renewed = LeaseRecord(ttl=record.ttl, expires_at=self._clock.time() + record.ttl)
            try:
                await self._wrote(kv.update(f"{LEASE}{lease}", _encode(renewed), last=revision))
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # renewed or revoked meanwhile: look again
        raise Unavailable(f"lease {lease!r} changed under {CAS_ATTEMPTS} renewals in a row")

    async def set_health(self, instance_id: str, health: Health) -> None:
        """Change the instance's health; :class:`NotFound` when it is not live."""
        kv = await self._open()
        for _ in range(CAS_ATTEMPTS):
            entry, revision = await self._live_entry(kv, instance_id)
            if entry.instance.health == health:
                return
            changed = msgspec.structs.replace(
                entry, instance=msgspec.structs.replace(entry.instance, health=health)
            )
            key = instance_key(instance_id)
            try:
                await self._wrote(kv.update(key, _encode(changed), last=revision))
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
        raise Unavailable(f"instance {instance_id!r} changed under {CAS_ATTEMPTS} updates in a row")

    async def revoke(self, lease: str) -> None:
        """Remove ``lease`` and every instance under it; an unknown lease is not an error."""
        await self._open()
        # The lease key first: with it gone, every reader drops its instances
        # at once; deleting their keys after is tidying.
        await self._wrote(self._delete(f"{LEASE}{lease}"))
        for key, revision in self._mirror.instances_of(lease):
            await self._delete_if_unchanged(key, revision)

    async def deregister(self, instance_id: str) -> None:
        """Remove the instance at once; an unknown id is not an error."""
        await self._open()
        await self._wrote(self._delete(instance_key(instance_id)))

    async def list(self, service: str | None = None) -> builtins.list[Instance]:
        """Live instances of ``service`` (or of all services), sorted by id."""
        await self._open()
        self._mirror.check_live()
        return self._mirror.snapshot(service, self._clock.time())[0]

    async def watch(
        self, service: str | None = None
    ) -> AsyncGenerator[builtins.list[Instance], None]:
        """Yield the live instances now, then after every change; ends on :meth:`aclose`."""
        if self._link.closed:
            return
        await self._open()
        last: builtins.list[Instance] | None = None
        while not self._link.closed:
            self._mirror.check_live()  # a view that stopped following is not given out
            changed = self._mirror.changed
            snapshot, next_expiry = self._mirror.snapshot(service, self._clock.time())
            if snapshot != last:
                last = snapshot
                yield builtins.list(snapshot)  # a copy: ``last`` must not change under us
                continue  # time passed while the consumer held it: look again
            waits: builtins.list[Awaitable[object]] = [changed.wait()]
            if next_expiry is not None:
                waits.append(self._clock.sleep(next_expiry - self._clock.time()))
            await wait_first(*waits)

    async def aclose(self) -> None:
        """Stop the mirror, close the connection and end every watch; idempotent."""
        if self._link.closed:
            return
        await self._link.aclose()  # first: watchers see ``closed`` when the mirror wakes them
        await self._mirror.aclose()

    # -- helpers ----------------------------------------------------------------------------

    async def _connection_changed(self, up: bool) -> None:
        """The mirror is not live while disconnected, and watches afresh once reconnected."""
        if self._kv is None:
            return  # not opened: nothing to follow yet
        if up:
            await self._mirror.rewatch()
        else:
            self._mirror.lost("disconnected from NATS")

    async def _open(self) -> KeyValue:
        """The bucket (created if missing), with the mirror loaded; opened on first use."""
        self._link.check_open()
        if self._kv is None:
            js = await self._link.jetstream()
            with nats_errors_as_unavailable(f"opening registry bucket {self.bucket!r}"):
                try:
                    kv = await js.key_value(self.bucket)
                except nats.js.errors.BucketNotFoundError:
                    kv = await js.create_key_value(bucket=self.bucket, history=1)
                await self._mirror.start(kv, timeout=self._link.timeout)
            self._kv = kv
        return self._kv

    async def _wrote(self, write: Awaitable[int]) -> None:
        """Do ``write`` (returning the new revision), then wait until the mirror has it."""
        with nats_errors_as_unavailable(f"writing to registry bucket {self.bucket!r}"):
            revision = await write
        await self._mirror.reached(revision, timeout=self._link.timeout)

    async def _live_lease(self, kv: KeyValue, lease: str) -> tuple[LeaseRecord, int]:
        """The lease's record and revision, read from the server; :class:`NotFound` if dead."""
        with nats_errors_as_unavailable(f"reading lease {lease!r}"):
            try:
                found = await kv.get(f"{LEASE}{lease}")
            except nats.js.errors.KeyNotFoundError:
                raise lease_not_found(lease) from None
        record = decode_lease(found.value or b"")
        if record.expires_at <= self._clock.time() or found.revision is None:
            raise lease_not_found(lease)
        return record, found.revision

    async def _live_entry(self, kv: KeyValue, instance_id: str) -> tuple[Entry, int]:
        missing = NotFound(f"no live instance {instance_id!r} in the registry; register it again")
        with nats_errors_as_unavailable(f"reading instance {instance_id!r}"):
            try:
                found = await kv.get(instance_key(instance_id))
            except nats.js.errors.KeyNotFoundError:
                raise missing from None
        entry = decode_entry(found.value or b"")
        try:
            await self._live_lease(kv, entry.lease)
        except NotFound:
            raise missing from None
        assert found.revision is not None  # a stored entry always has one
        return entry, found.revision

    async def _delete(self, key: str, last: int | None = None) -> int:
        """Put a delete marker on ``key``; its revision (nats-py's delete does not return it)."""
        headers = {"KV-Operation": "DEL"}
        if last is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(last)
        js = await self._link.jetstream()
        ack = await js.publish(f"$KV.{self.bucket}.{key}", headers=headers)
        return ack.seq

    async def _delete_if_unchanged(self, key: str, revision: int) -> None:
        # Changed since (renewed, moved to another lease, gone): not ours to delete.
        with contextlib.suppress(nats.js.errors.APIError):
            await self._wrote(self._delete(key, last=revision))

    async def _collect(self) -> None:
        """Delete leases that ran out, and the instances of leases that are gone."""
        for key, revision in self._mirror.dead(self._clock.time()):
            await self._delete_if_unchanged(key, revision)

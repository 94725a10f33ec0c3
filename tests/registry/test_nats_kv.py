"""What only the NATS KV registry does (the shared behaviour is in tests/conformance)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import aclosing
from urllib.parse import urlsplit

import msgspec
import nats
import pytest
from tests.proxy import TcpProxy
from tests.servers import delete_bucket, unique_name

from flotilla.errors import ConfigError, Unavailable
from flotilla.registry import Health, Instance, open_registry
from flotilla.registry.nats_kv import DEFAULT_BUCKET, NatsKvRegistry
from flotilla.registry.nats_mirror import instance_key

WAIT = 10.0


def inst(id: str, service: str = "svc") -> Instance:
    return Instance(id=id, service=service, address="127.0.0.1:9000")


@pytest.fixture
async def bucket(nats_url: str) -> AsyncIterator[str]:
    name = unique_name("registry")
    yield name
    await delete_bucket(nats_url, name)


def test_url_names_the_bucket() -> None:
    registry = open_registry("nats://127.0.0.1:4222?bucket=shop")
    assert isinstance(registry, NatsKvRegistry)
    assert registry.bucket == "shop"
    assert NatsKvRegistry.from_url("nats://127.0.0.1:4222").bucket == DEFAULT_BUCKET


@pytest.mark.parametrize(
    ("url", "complaint"),
    [("nats://h:4222?buckit=x", "unknown option"), ("nats://", "not a NATS URL")],
)
def test_bad_urls_are_config_errors(url: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        open_registry(url)


def test_instance_keys_take_any_id() -> None:
    # Ids with characters a KV key may not hold still get a valid, distinct key.
    keys = {instance_key(id_) for id_ in ["a b", "a:b", "a/b", "ünï", "a.b", "a"]}
    assert len(keys) == 6
    assert all(key.replace("i.", "", 1).replace("-", "").replace("_", "").isalnum() for key in keys)


async def test_no_server_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    registry = NatsKvRegistry(f"nats://127.0.0.1:{port}")
    try:
        with pytest.raises(Unavailable, match="NATS unavailable while connecting"):
            await registry.grant(10)
    finally:
        await registry.aclose()


async def until(it: AsyncIterator[list[Instance]], expected: list[Instance]) -> None:
    """Read snapshots until one is ``expected`` (the caller bounds the wait)."""
    while await anext(it) != expected:
        pass


async def test_two_registries_on_one_bucket_see_each_other(nats_url: str, bucket: str) -> None:
    one, two = NatsKvRegistry(nats_url, bucket=bucket), NatsKvRegistry(nats_url, bucket=bucket)
    healthy_c = msgspec.structs.replace(inst("c"), health=Health.HEALTHY)
    try:
        async with (
            aclosing(one.watch("svc")) as ones,
            aclosing(two.watch("svc")) as twos,
            asyncio.timeout(WAIT),
        ):
            assert await anext(twos) == []
            lease = await one.grant(60)
            await one.register(inst("a b"), lease=lease)
            await one.register(inst("c"), lease=lease)
            await until(twos, [inst("a b"), inst("c")])
            await two.keepalive(lease)  # renewing another's lease
            await two.set_health("c", Health.HEALTHY)
            await until(ones, [inst("a b"), healthy_c])
            await two.revoke(lease)
            await until(ones, [])
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_bad_value_is_left_out(nats_url: str, bucket: str) -> None:
    registry = NatsKvRegistry(nats_url, bucket=bucket)
    try:
        lease = await registry.grant(60)
        await registry.register(inst("good"), lease=lease)
        client = await nats.connect(nats_url)
        try:
            kv = await client.jetstream().key_value(bucket)
            await kv.put(instance_key("bad"), b"{not json")
        finally:
            await client.close()
        await registry.register(inst("later"), lease=lease)  # written after the bad one
        assert await registry.list() == [inst("good"), inst("later")]
    finally:
        await registry.aclose()


async def test_grant_collects_dead_leases(nats_url: str, bucket: str) -> None:
    registry = NatsKvRegistry(nats_url, bucket=bucket)
    try:
        dead = await registry.grant(0.05)
        await registry.register(inst("a"), lease=dead)
        await asyncio.sleep(0.1)  # past the lease: nothing else can renew it
        await registry.grant(60)
        client = await nats.connect(nats_url)
        try:
            keys = await (await client.jetstream().key_value(bucket)).keys()
        finally:
            await client.close()
        assert f"l.{dead}" not in keys
        assert instance_key("a") not in keys
    finally:
        await registry.aclose()


async def test_an_outage_is_unavailable_and_the_registry_carries_on_after(
    nats_url: str, bucket: str
) -> None:
    target = urlsplit(nats_url)
    async with TcpProxy(target.hostname or "127.0.0.1", target.port or 4222) as proxy:
        registry = NatsKvRegistry(f"nats://127.0.0.1:{proxy.port}", bucket=bucket, timeout=1.0)
        try:
            lease = await registry.grant(60)
            await registry.register(inst("a"), lease=lease)
            await proxy.cut()
            with pytest.raises(Unavailable):
                await registry.register(inst("b"), lease=lease)
            await proxy.restore()
            async with asyncio.timeout(WAIT):
                while True:  # until the client has reconnected
                    try:
                        await registry.register(inst("c"), lease=lease)
                        break
                    except Unavailable:
                        await asyncio.sleep(0.1)
            # The mirror followed the bucket across the outage: it has the new write.
            ids = [instance.id for instance in await registry.list()]
            assert ids[0] == "a"
            assert ids[-1] == "c"
        finally:
            await registry.aclose()


async def test_while_cut_off_the_registry_says_unavailable_then_follows_the_bucket_again(
    nats_url: str, bucket: str
) -> None:
    target = urlsplit(nats_url)
    async with TcpProxy(target.hostname or "127.0.0.1", target.port or 4222) as proxy:
        cut_off = NatsKvRegistry(f"nats://127.0.0.1:{proxy.port}", bucket=bucket, timeout=1.0)
        other = NatsKvRegistry(nats_url, bucket=bucket)
        try:
            async with aclosing(cut_off.watch("svc")) as watch, asyncio.timeout(WAIT):
                assert await anext(watch) == []
                lease = await other.grant(60)
                await proxy.cut()
                with pytest.raises(Unavailable, match="not following the bucket"):
                    await anext(watch)  # not a view that silently stopped changing
                with pytest.raises(Unavailable, match="not following the bucket"):
                    await cut_off.list()
                await other.register(inst("a"), lease=lease)  # missed by the old watch
                await proxy.restore()
            async with asyncio.timeout(WAIT):
                while True:  # until reconnected and watching afresh
                    try:
                        listed = await cut_off.list()
                        break
                    except Unavailable:
                        await asyncio.sleep(0.1)
            assert listed == [inst("a")]  # what it missed while cut off
            async with aclosing(cut_off.watch("svc")) as watch, asyncio.timeout(WAIT):
                assert await anext(watch) == [inst("a")]
        finally:
            await cut_off.aclose()
            await other.aclose()

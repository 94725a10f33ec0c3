"""The README's example, run as written: a typed chain across a two-replica service."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from flotilla import Context, NotFound, Service, rpc
from flotilla.testing import Cluster, FakeClock


class Product(msgspec.Struct):
    id: int
    name: str


class Catalog(Service, name="catalog"):
    @rpc(idempotent=True)
    async def get(self, id: int) -> Product:
        if id != 1:
            raise NotFound(f"no product {id}")
        return Product(id=1, name="teapot")


class Shop(Service, name="shop"):
    @rpc
    async def describe(self, ctx: Context, id: int) -> str:
        product = await ctx.client(Catalog).get(id=id)
        return f"#{product.id}: {product.name}"


async def test_readme_example() -> None:
    async with Cluster() as cluster:
        await cluster.add(Catalog, replicas=2)
        await cluster.add(Shop())
        assert await cluster.call("shop.describe", id=1) == "#1: teapot"
        with pytest.raises(NotFound, match="no product 2"):
            await cluster.call("shop.describe", id=2)


async def test_a_crashed_replica_leaves_when_the_fake_clock_passes_its_lease() -> None:
    clock = FakeClock()
    async with Cluster(clock=clock) as cluster:
        first, second = await cluster.add(Catalog, replicas=2)
        await cluster.crash(first)
        assert len(await cluster.registry.list("catalog")) == 2  # its lease still runs
        await clock.advance(cluster.config.timings.ttl)
        live = await cluster.registry.list("catalog")
        assert [instance.id for instance in live] == [second.instances[0].id]
        for _ in range(10):
            assert (await cluster.client(Catalog).get(id=1)).name == "teapot"


async def test_a_layer_factory_gives_each_node_layers_of_its_own() -> None:
    class Attached:
        def __init__(self) -> None:
            self.directories: list[object] = []

        def attach(self, directory: object) -> None:
            self.directories.append(directory)

        def __call__(self, request: Any, call_next: Any) -> Any:
            return call_next(request)

    made: list[Attached] = []

    def layers() -> dict[str, Any]:
        made.append(Attached())
        return {"user": made[-1]}

    async with Cluster(layers=layers) as cluster:
        await cluster.add(Catalog, replicas=2)
        assert len(made) == 3  # the client node and each replica
        assert all(len(layer.directories) == 1 for layer in made)

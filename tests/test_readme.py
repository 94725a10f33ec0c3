"""The README's code runs as written: the user-written layer and its test, the testing example."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.data.recording import RecordingBackend

from flotilla import Context, Node, Service, rpc
from flotilla.runtime.system_file import parse_system
from flotilla.testing import Cluster, wait_for

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def block_defining(name: str) -> str:
    for block in python_blocks():
        if re.search(rf"^(async )?(def|class) {name}\b", block, flags=re.M):
            return block
    raise AssertionError(f"the README has no python block defining {name}")


class Echo(Service, name="echo"):
    @rpc
    async def meta(self, ctx: Context) -> dict[str, str]:
        return dict(ctx.meta)


async def test_the_user_written_layer_runs_in_the_readmes_words() -> None:
    namespace: dict[str, Any] = {"Echo": Echo}
    exec(compile(block_defining("Stamp"), str(README), "exec"), namespace)
    await namespace["test_the_callee_sees_the_stamp"]()


async def test_the_testing_example_runs_in_the_readmes_words() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(python_blocks()[0], str(README), "exec"), namespace)  # Catalog and Shop
    exec(compile(block_defining("test_describe"), str(README), "exec"), namespace)
    await namespace["test_describe"]()


async def test_the_fallback_example_answers_when_the_catalog_is_down() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(block_defining("Front"), str(README), "exec"), namespace)
    async with Cluster() as cluster:
        await cluster.add(namespace["Front"]())  # and no catalog at all
        assert await cluster.call("front.show", id=3) == "item 3 (from cache: unavailable)"


def test_the_resilience_example_is_a_valid_system_file() -> None:
    (block,) = [
        b
        for b in re.findall(r"```toml\n(.*?)```", README.read_text(), flags=re.S)
        if "[resilience]" in b
    ]
    table = parse_system(block, source="README.md", system_dir=README.parent).resilience
    assert table("catalog").breaker.failure_rate == 0.3
    assert table("catalog").breaker.window == 10
    assert table("catalog", "search").retry.max_attempts == 1
    assert table("carts").faults.delay_fraction == 0.1


async def test_the_fault_injection_example_runs_in_the_readmes_words() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(python_blocks()[0], str(README), "exec"), namespace)  # Catalog
    block = block_defining("test_a_slow_catalog_runs_into_the_callers_deadline")
    exec(compile(block, str(README), "exec"), namespace)
    await namespace["test_a_slow_catalog_runs_into_the_callers_deadline"]()


async def test_the_events_example_runs_in_the_readmes_words() -> None:
    from flotilla.testing import Cluster

    namespace: dict[str, Any] = {"Cluster": Cluster}
    exec(compile(block_defining("test_billing_charges_the_order"), str(README), "exec"), namespace)
    await namespace["test_billing_charges_the_order"]()


async def test_the_data_example_runs_in_the_readmes_words() -> None:
    namespace: dict[str, Any] = {}
    # Not under this module's `from __future__ import annotations`: SQLAlchemy
    # reads the mapped annotations, and strings would be looked up in no module.
    (block,) = [b for b in python_blocks() if "Database(metadata=" in b]
    exec(compile(block, str(README), "exec", dont_inherit=True), namespace)
    backend = RecordingBackend()
    async with Node(namespace["Orders"](), events=backend) as node:
        assert await node.call("orders.place", sku="teapot") == 1
        assert await node.call("orders.place", sku="teapot") == 2
        await wait_for(lambda: len(backend.published) == 2)
    assert [envelope.key for envelope in backend.published] == ["teapot", "teapot"]


def test_the_gateway_example_routes_and_table_are_valid() -> None:
    namespace: dict[str, Any] = {}
    (routes,) = [block for block in python_blocks() if block.startswith("from flotilla.gateway")]
    exec(compile(routes, str(README), "exec"), namespace)
    assert [route.name for route in namespace["ROUTES"]][:2] == [
        "POST /api/auth/token",
        "GET /api/products",
    ]
    (block,) = [
        b
        for b in re.findall(r"```toml\n(.*?)```", README.read_text(), flags=re.S)
        if "[gateway]" in b
    ]
    services = '[services.shop]\nclass = "shop:Shop"\n'
    spec = parse_system(block + services, source="README.md", system_dir=README.parent)
    assert spec.gateway is not None
    assert (spec.gateway.routes, spec.gateway.port) == ("shop.routes:ROUTES", 8080)

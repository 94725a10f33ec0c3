"""The README's code runs as written: the user-written layer and its test, the testing example."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from flotilla import Context, Service, rpc

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


async def test_the_events_example_runs_in_the_readmes_words() -> None:
    from flotilla.testing import Cluster

    namespace: dict[str, Any] = {"Cluster": Cluster}
    exec(compile(block_defining("test_billing_charges_the_order"), str(README), "exec"), namespace)
    await namespace["test_billing_charges_the_order"]()

"""TypedClient: its attributes are the @rpc methods, sent through the invoker with their spec."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from flotilla import Context, InvalidArgument, Service, rpc
from flotilla.calls.typed_client import TypedClient
from flotilla.resilience.policy import Policy, RetryPolicy
from flotilla.service import MethodSpec


class Item(msgspec.Struct):
    sku: int


class Inventory(Service, name="inventory"):
    @rpc(name="stock-level", idempotent=True, timeout=2.0)
    async def stock(self, ctx: Context, sku: int, warehouse: str = "main") -> int:
        return sku

    @rpc
    async def item(self, sku: int) -> Item:
        return Item(sku=sku)

    async def helper(self) -> None:
        """Not an rpc."""


class Recorder:
    """An invoker that records what it is asked to send and answers a fixed value."""

    def __init__(self, answer: Any = 7) -> None:
        self.answer = answer
        self.calls: list[dict[str, Any]] = []

    async def invoke(
        self,
        target: str,
        args: dict[str, Any],
        *,
        context: Context | None,
        result_type: Any = Any,
        spec: MethodSpec | None = None,
        policy: Policy | None = None,
    ) -> Any:
        self.calls.append(
            {
                "target": target,
                "args": args,
                "context": context,
                "type": result_type,
                "spec": spec,
                "policy": policy,
            }
        )
        return self.answer


def client(recorder: Recorder, context: Context | None = None) -> TypedClient[Inventory]:
    return TypedClient(recorder, Inventory, context)


async def test_a_call_goes_to_the_wire_name_with_its_spec_and_context() -> None:
    recorder = Recorder()
    context = Context(recorder, service="shop")
    assert await client(recorder, context).stock(sku=5) == 7
    (call,) = recorder.calls
    assert call["target"] == "inventory.stock-level"
    assert call["args"] == {"sku": 5}
    assert call["context"] is context
    assert call["type"] is int
    assert call["spec"] is Inventory.methods()["stock-level"]


async def test_positional_arguments_follow_the_parameters_without_the_context() -> None:
    recorder = Recorder()
    await client(recorder).stock(5, "north")
    assert recorder.calls[0]["args"] == {"sku": 5, "warehouse": "north"}


async def test_an_argument_given_twice_is_refused_before_sending() -> None:
    recorder = Recorder()
    with pytest.raises(InvalidArgument, match="multiple values for argument 'sku'"):
        await client(recorder).stock(5, sku=6)
    assert recorder.calls == []


async def test_too_many_positional_arguments_are_refused_before_sending() -> None:
    recorder = Recorder()
    with pytest.raises(InvalidArgument, match="at most 2 positional"):
        await client(recorder).stock(5, "north", "extra")
    assert recorder.calls == []


async def test_the_result_type_is_the_method_annotation() -> None:
    recorder = Recorder(answer=Item(sku=3))
    assert await client(recorder).item(sku=3) == Item(sku=3)
    assert recorder.calls[0]["type"] is Item


@pytest.mark.parametrize("name", ["stok", "helper", "on_start", "stock-level"])
def test_a_name_that_is_no_rpc_attribute_is_an_attribute_error(name: str) -> None:
    with pytest.raises(AttributeError, match=rf"Inventory has no @rpc method '{name}'"):
        getattr(client(Recorder()), name)


async def test_a_client_with_a_policy_sends_it_with_every_call() -> None:
    recorder = Recorder()
    quick = Policy(retry=RetryPolicy(max_attempts=1))
    plain = client(recorder)
    await plain.with_policy(quick).item(1)
    await plain.item(2)  # with_policy made another client; this one has none
    await TypedClient(recorder, Inventory, None, policy=quick).item(3)
    assert [call["policy"] for call in recorder.calls] == [quick, None, quick]

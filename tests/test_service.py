"""Services as typed classes: the specs read from ``@rpc`` methods."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from flotilla import Context, Service, on_event, rpc
from flotilla.service import EventSpec


class Shop(Service, name="shop", version="2.1"):
    @rpc
    async def add(self, a: int, b: int = 2) -> int:
        return a + b

    @rpc(name="find-item", idempotent=True, timeout=1.5)
    async def find(self, ctx: Context, id: int, tags: list[str] | None = None) -> Later:
        return Later(id=id)

    @on_event("orders.created", group="billing")
    async def on_order(self, event: dict[str, Any]) -> None:
        pass

    async def helper(self) -> None:
        """Not an rpc: not exposed."""


class Later(msgspec.Struct):
    """Defined after the class that names it: specs must be read lazily."""

    id: int


def test_methods_by_wire_name() -> None:
    assert set(Shop.methods()) == {"add", "find-item"}


def test_args_struct_fields_and_defaults() -> None:
    spec = Shop.methods()["add"]
    assert spec.attribute == "add"
    assert spec.args_type.__struct_fields__ == ("a", "b")
    assert spec.args_type(a=1).b == 2
    with pytest.raises(TypeError):
        spec.args_type(a=1, b=2, c=3)  # type: ignore[call-arg]
    assert spec.result_type is int
    assert spec.context_param is None
    assert spec.idempotent is False
    assert spec.timeout is None


def test_args_struct_forbids_unknown_fields() -> None:
    spec = Shop.methods()["add"]
    data = msgspec.msgpack.encode({"a": 1, "zzz": 2})
    with pytest.raises(msgspec.ValidationError, match="zzz"):
        msgspec.msgpack.decode(data, type=spec.args_type)


def test_context_param_excluded_and_options_kept() -> None:
    spec = Shop.methods()["find-item"]
    assert spec.name == "find-item"
    assert spec.attribute == "find"
    assert spec.context_param == "ctx"
    assert spec.args_type.__struct_fields__ == ("id", "tags")
    assert spec.idempotent is True
    assert spec.timeout == 1.5


def test_forward_referenced_annotation_resolved_lazily() -> None:
    assert Shop.methods()["find-item"].result_type is Later


def test_methods_are_cached() -> None:
    assert Shop.methods() is Shop.methods()


def test_event_handlers() -> None:
    assert Shop.event_handlers() == [
        EventSpec(topic="orders.created", attribute="on_order", group="billing")
    ]


def test_name_and_version() -> None:
    assert Shop.name == "shop"
    assert Shop.version == "2.1"


def test_default_name_is_snake_case() -> None:
    class OrderHistory(Service):
        pass

    assert OrderHistory.name == "order_history"
    assert OrderHistory.version == "0"


def test_subclass_is_a_service_of_its_own() -> None:
    class Base(Service, name="base-svc"):
        pass

    class DerivedShop(Base):
        pass

    assert Base.name == "base-svc"
    assert DerivedShop.name == "derived_shop"


@pytest.mark.parametrize("bad", ["Shop", "1shop", "", "shop.v2", "shop svc", "_shop"])
def test_invalid_service_name_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="must match"):

        class Bad(Service, name=bad):
            pass


def test_non_async_rpc_rejected() -> None:
    with pytest.raises(TypeError, match="async def"):

        class Sync(Service):
            @rpc
            def get(self) -> int:  # type: ignore[type-var]
                return 1


def test_non_async_event_handler_rejected() -> None:
    with pytest.raises(TypeError, match="async def"):

        class Sync(Service):
            @on_event("t")
            def handle(self, event: int) -> None:  # type: ignore[type-var]
                pass


@pytest.mark.parametrize("signature", ["*args: int", "**kwargs: int", "id: int, /"])
def test_var_args_and_positional_only_rejected(signature: str) -> None:
    namespace: dict[str, Any] = {"Service": Service, "rpc": rpc}
    exec(
        "class Loose(Service):\n"
        "    @rpc\n"
        f"    async def get(self, {signature}) -> int:\n"
        "        return 1\n",
        namespace,
    )
    with pytest.raises(TypeError, match=r"\*args, \*\*kwargs or positional-only"):
        namespace["Loose"].methods()


def test_unannotated_parameter_is_any() -> None:
    class Loose(Service):
        @rpc
        async def echo(self, value):  # type: ignore[no-untyped-def]
            return value

    spec = Loose.methods()["echo"]
    assert spec.args_type.__annotations__["value"] is Any
    assert spec.result_type is Any

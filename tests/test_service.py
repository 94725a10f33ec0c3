"""Services as typed classes: the specs read from ``@rpc`` methods."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import pytest

from flotilla import Context, Service, on_event, rpc
from flotilla.registry.base import MethodInfo
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
        EventSpec(
            topic="orders.created",
            attribute="on_order",
            group="billing",
            payload_param="event",
            payload_type=dict[str, Any],
        )
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


def test_an_event_handler_reads_its_payload_and_context_parameters() -> None:
    class Handlers(Service, name="handlers"):
        @on_event("a.b", broadcast=True)
        async def one(self, ctx: Context, later: Later) -> None:
            pass

    [spec] = Handlers.event_handlers()
    assert spec.broadcast
    assert spec.group is None
    assert (spec.payload_param, spec.payload_type, spec.context_param) == ("later", Later, "ctx")


@pytest.mark.parametrize(
    ("signature", "message"),
    [
        ("self", "exactly one payload parameter"),
        ("self, a: int, b: int", "exactly one payload parameter"),
        ("self, event", "annotate the payload parameter 'event'"),
        ("self, ctx, event: int", "parameter 'ctx' is not annotated `Context`"),
        ("self, *events: int", "cannot take \\*args"),
    ],
)
def test_a_bad_event_handler_signature_fails_at_class_definition(
    signature: str, message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        define(
            f"""
class Bad(Service):
    @on_event("t")
    async def handle({signature}) -> None:
        pass
""",
            on_event=on_event,
        )


@pytest.mark.parametrize("topic", [" ", "", "order placed", "t" * 256])
def test_an_event_topic_must_be_one_that_can_be_emitted(topic: str) -> None:
    with pytest.raises(ValueError, match=r"needs a topic name.*not a dotted name"):
        on_event(topic)


def test_non_async_event_handler_rejected() -> None:
    with pytest.raises(TypeError, match="async def"):

        class Sync(Service):
            @on_event("t")
            def handle(self, event: int) -> None:  # type: ignore[type-var]
                pass


def define(source: str, **names: Any) -> Any:
    """Define a service from source text, as a user module would (string annotations included)."""
    namespace: dict[str, Any] = {"Service": Service, "rpc": rpc, "Context": Context, **names}
    # dont_inherit: this module's own __future__ import must not leak into the source.
    exec(compile(source, "<user module>", "exec", dont_inherit=True), namespace)
    return namespace["Loose"]


@pytest.mark.parametrize("signature", ["*args: int", "**kwargs: int", "id: int, /"])
def test_var_args_and_positional_only_rejected_at_definition(signature: str) -> None:
    with pytest.raises(TypeError, match=r"Loose.get cannot take \*args, \*\*kwargs or positional"):
        define(
            "class Loose(Service):\n"
            "    @rpc\n"
            f"    async def get(self, {signature}) -> int:\n"
            "        return 1\n"
        )


@pytest.mark.parametrize("name", ["ctx", "context"])
@pytest.mark.parametrize("annotation", ["", ": int", ": 'Ctx'", ": 'Context | None'"])
@pytest.mark.parametrize("future", [True, False])
def test_a_context_name_without_the_context_annotation_is_refused(
    name: str, annotation: str, future: bool
) -> None:
    header = "from __future__ import annotations\n" if future else ""
    with pytest.raises(
        TypeError, match=rf"parameter '{name}' is not annotated `Context`"
    ) as caught:
        define(
            f"{header}class Loose(Service):\n"
            "    @rpc\n"
            f"    async def get(self, {name}{annotation}, id: int) -> int:\n"
            "        return id\n"
        )
    assert f"annotate it `{name}: Context`" in str(caught.value)
    assert "or rename it" in str(caught.value)


@pytest.mark.parametrize(
    "annotation",
    ["Context", "'Context'", "'flotilla.Context'", "'flotilla.context.Context'", "Ctx"],
)
@pytest.mark.parametrize("future", [True, False])
def test_context_spelt_any_usual_way_is_accepted(annotation: str, future: bool) -> None:
    import flotilla

    header = "from __future__ import annotations\n" if future else ""
    cls = define(
        f"{header}class Loose(Service):\n"
        "    @rpc\n"
        f"    async def get(self, ctx: {annotation}, id: int) -> int:\n"
        "        return id\n",
        flotilla=flotilla,
        Ctx=Context,
    )
    assert cls.methods()["get"].context_param == "ctx"


def test_the_context_check_does_not_resolve_forward_references() -> None:
    # A later-defined argument type must not trip the definition-time check.
    cls = define(
        "from __future__ import annotations\n"
        "class Loose(Service):\n"
        "    @rpc\n"
        "    async def get(self, ctx: Context, item: Item) -> Item:\n"
        "        return item\n"
    )
    assert cls.__name__ == "Loose"


def test_a_context_parameter_under_another_name_is_fine() -> None:
    class Named(Service):
        @rpc
        async def get(self, call: Context, id: int) -> int:
            return id

    assert Named.methods()["get"].context_param == "call"


def test_inherited_methods_are_checked_once_and_still_exposed() -> None:
    class Child(Shop):
        pass

    assert set(Child.methods()) == {"add", "find-item"}


def test_unannotated_parameter_is_any() -> None:
    class Loose(Service):
        @rpc
        async def echo(self, value):  # type: ignore[no-untyped-def]
            return value

    spec = Loose.methods()["echo"]
    assert spec.args_type.__annotations__["value"] is Any
    assert spec.result_type is Any


# --- the method table --------------------------------------------------------


class Item(msgspec.Struct):
    sku: int
    tags: list[str] = []


class Opaque:
    """Not something msgspec can describe."""


class Table(Service, name="table"):
    @rpc(idempotent=True, timeout=2.0)
    async def stock(self, ctx: Context, sku: int, warehouse: str = "main") -> int:
        return sku

    @rpc(name="put")
    async def put_item(self, item: Item, note: str | None = None) -> None:
        pass

    @rpc
    async def odd(self, thing: Opaque) -> Opaque:
        return thing

    @rpc
    async def echo(self) -> list[Item]:
        return []


def table() -> dict[str, MethodInfo]:
    return {info.name: info for info in Table.method_table()}


def test_method_table_is_sorted_by_name_and_cached() -> None:
    assert [info.name for info in Table.method_table()] == ["echo", "odd", "put", "stock"]
    assert Table.method_table() is Table.method_table()


def test_method_table_carries_the_options() -> None:
    stock = table()["stock"]
    assert (stock.timeout, stock.idempotent) == (2.0, True)
    assert (table()["put"].timeout, table()["put"].idempotent) == (None, False)


def test_params_are_an_object_schema_without_the_context() -> None:
    assert table()["stock"].params == {
        "type": "object",
        "properties": {
            "sku": {"type": "integer"},
            "warehouse": {"type": "string", "default": "main"},
        },
        "required": ["sku"],
        "additionalProperties": False,
    }
    assert table()["stock"].result == {"type": "integer"}


def test_nested_types_are_shared_through_defs() -> None:
    put = table()["put"]
    assert put.params["properties"]["item"] == {"$ref": "#/$defs/Item"}
    assert put.params["required"] == ["item"]
    assert put.params["$defs"]["Item"]["required"] == ["sku"]
    assert put.result == {"type": "null"}
    echo = table()["echo"]
    assert echo.params == {
        "type": "object",
        "properties": {},
        "required": [],
        "additionalProperties": False,
    }
    assert echo.result["items"] == {"$ref": "#/$defs/Item"}
    assert "Item" in echo.result["$defs"]


def test_the_table_travels_as_json() -> None:
    # What a registry stores and a CLI reads back must round-trip unchanged.
    for info in Table.method_table():
        assert msgspec.json.decode(msgspec.json.encode(info), type=MethodInfo) == info


def test_an_undescribable_type_falls_back_to_anything_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Vague(Service):
        @rpc
        async def odd(self, thing: Opaque) -> Opaque:
            return thing

    with caplog.at_level(logging.WARNING, logger="flotilla.service"):
        (odd,) = Vague.method_table()
        Vague.method_table()
    assert (odd.params, odd.result) == ({}, {})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # one per schema, once per class
    assert "the arguments of" in warnings[0]
    assert "Vague.odd" in warnings[0]
    assert "the result of" in warnings[1]


def test_a_service_without_methods_has_an_empty_table() -> None:
    class Quiet(Service):
        pass

    assert Quiet.method_table() == ()

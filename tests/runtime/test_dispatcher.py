"""The callee's side: route, validate the arguments, run under the deadline (no sockets)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
import pytest

from flotilla import Context, Service, codec, rpc
from flotilla.calls.pipeline import Handler
from flotilla.errors import (
    ConfigError,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from flotilla.runtime.dispatcher import SERVER_STACK, Dispatcher, Incoming
from flotilla.transport.frames import Call


class Item(msgspec.Struct):
    id: int
    name: str


class Store(Service, name="store"):
    def __init__(self) -> None:
        self.ran: list[str] = []
        self.cancelled = False
        self.contexts: list[Context] = []

    @rpc
    async def get(self, id: int, name: str = "thing") -> Item:
        self.ran.append("get")
        return Item(id=id, name=name)

    @rpc(name="who-am-i")
    async def whoami(self, ctx: Context) -> str:
        self.contexts.append(ctx)
        return ctx.service

    @rpc
    async def crash(self) -> None:
        self.ran.append("crash")
        raise ZeroDivisionError("private detail")

    @rpc
    async def deny(self) -> None:
        raise PermissionDenied("not you", details={"who": "eve"})

    @rpc
    async def slow(self, seconds: float) -> str:
        self.ran.append("slow")
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return "done"

    @rpc
    async def unencodable(self) -> Any:
        return object()


class NoInvoker:
    async def invoke(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no onward calls here")

    def client(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no onward calls here")


def make(*layers: tuple[str, Any]) -> tuple[Dispatcher, Store]:
    store = Store()
    return Dispatcher([store], NoInvoker(), dict(layers) or None), store


def call(method: str, args: Any = None, **kw: Any) -> Call:
    return Call(1, method, msgspec.Raw(codec.encode({} if args is None else args)), **kw)


async def test_routes_and_encodes_the_result() -> None:
    dispatcher, store = make()
    result = await dispatcher(call("store.get", {"id": 3}))
    assert codec.decode(result, Item) == Item(id=3, name="thing")
    assert store.ran == ["get"]


async def test_routes_by_wire_name() -> None:
    dispatcher, _ = make()
    assert set(dispatcher.routes) == {
        "store.get",
        "store.who-am-i",
        "store.crash",
        "store.deny",
        "store.slow",
        "store.unencodable",
    }


@pytest.mark.parametrize("method", ["store.nope", "other.get", "store.whoami", "get"])
async def test_unknown_method_is_not_found(method: str) -> None:
    dispatcher, _ = make()
    with pytest.raises(NotFound, match=method):
        await dispatcher(call(method))


async def test_wrong_argument_type_names_the_field() -> None:
    dispatcher, store = make()
    with pytest.raises(InvalidArgument) as caught:
        await dispatcher(call("store.get", {"id": "three"}))
    assert "$.id" in caught.value.message
    assert store.ran == []


async def test_missing_argument_is_named() -> None:
    dispatcher, store = make()
    with pytest.raises(InvalidArgument, match="`id`"):
        await dispatcher(call("store.get", {"name": "x"}))
    assert store.ran == []


async def test_unknown_extra_argument_is_named() -> None:
    dispatcher, store = make()
    with pytest.raises(InvalidArgument, match="colour"):
        await dispatcher(call("store.get", {"id": 1, "colour": "red"}))
    assert store.ran == []


async def test_args_that_are_not_a_map() -> None:
    dispatcher, _ = make()
    with pytest.raises(InvalidArgument):
        await dispatcher(call("store.get", [1, 2]))


async def test_plain_exception_becomes_internal_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dispatcher, store = make()
    with pytest.raises(Internal) as caught:
        await dispatcher(call("store.crash"))
    assert "private detail" not in caught.value.message
    assert "store.crash" in caught.value.message
    assert store.ran == ["crash"]
    assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)
    # The dispatcher lives on.
    assert codec.decode(await dispatcher(call("store.get", {"id": 1})), Item).id == 1


async def test_flotilla_errors_pass_through() -> None:
    dispatcher, _ = make()
    with pytest.raises(PermissionDenied, match="not you") as caught:
        await dispatcher(call("store.deny"))
    assert caught.value.details == {"who": "eve"}


async def test_unencodable_result_is_internal() -> None:
    dispatcher, _ = make()
    with pytest.raises(Internal, match="cannot be encoded"):
        await dispatcher(call("store.unencodable"))


async def test_context_from_the_call() -> None:
    dispatcher, store = make()
    loop = asyncio.get_running_loop()
    before = loop.time()
    meta = {"rid": "req-1", "from": "front", "tenant": "acme"}
    result = await dispatcher(call("store.who-am-i", timeout_ms=2000, meta=meta))
    assert codec.decode(result) == "store"
    (ctx,) = store.contexts
    assert ctx.service == "store"
    assert ctx.caller == "front"
    assert ctx.request_id == "req-1"
    assert ctx.meta == {"tenant": "acme"}
    assert ctx.deadline is not None
    assert before + 2.0 <= ctx.deadline <= loop.time() + 2.0


async def test_context_without_timeout_or_meta() -> None:
    dispatcher, store = make()
    await dispatcher(call("store.who-am-i"))
    (ctx,) = store.contexts
    assert ctx.deadline is None
    assert ctx.caller == ""
    assert ctx.meta == {}
    assert len(ctx.request_id) == 16  # a fresh one


async def test_passed_deadline_skips_the_handler() -> None:
    dispatcher, store = make()
    with pytest.raises(DeadlineExceeded, match="before it started"):
        await dispatcher(call("store.slow", {"seconds": 0}, timeout_ms=0))
    assert store.ran == []


async def test_handler_running_past_its_deadline_is_cancelled() -> None:
    dispatcher, store = make()
    with pytest.raises(DeadlineExceeded, match="ran past its deadline"):
        await dispatcher(call("store.slow", {"seconds": 10}, timeout_ms=30))
    assert store.ran == ["slow"]
    assert store.cancelled


async def test_server_layers_wrap_the_handler() -> None:
    seen: list[str] = []

    async def metrics(incoming: Incoming, call_next: Handler[Incoming]) -> Any:
        seen.append(f"{incoming.call.method} {incoming.spec.name} {incoming.context.service}")
        return await call_next(incoming)

    dispatcher, _ = make(("metrics", metrics))
    await dispatcher(call("store.get", {"id": 1}))
    assert seen == ["store.get get store"]


def test_unknown_server_layer_refused() -> None:
    with pytest.raises(ConfigError, match="retry"):
        make(("retry", lambda i, n: n(i)))
    assert SERVER_STACK == ("deadline", "metrics")

"""The callee's side: route, validate the arguments, run the method (no sockets).

Deadlines are enforced by the transport (tests/transport/test_server.py) and
end to end (tests/runtime/test_node.py); the dispatcher only hands the
deadline on in the call's context.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec
import pytest

from flotilla import Context, Service, codec, rpc
from flotilla.calls.pipeline import Handler
from flotilla.errors import (
    ConfigError,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
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
        self.slow_started = asyncio.Event()
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
        self.slow_started.set()
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
    result = await dispatcher(call("store.get", {"id": 3}), None)
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
        await dispatcher(call(method), None)


async def test_wrong_argument_type_names_the_field() -> None:
    dispatcher, store = make()
    with pytest.raises(InvalidArgument) as caught:
        await dispatcher(call("store.get", {"id": "three"}), None)
    assert "$.id" in caught.value.message
    assert store.ran == []


async def test_missing_argument_is_named() -> None:
    dispatcher, store = make()
    with pytest.raises(InvalidArgument, match="`id`"):
        await dispatcher(call("store.get", {"name": "x"}), None)
    assert store.ran == []


async def test_unknown_extra_argument_is_named() -> None:
    dispatcher, store = make()
    with pytest.raises(InvalidArgument, match="colour"):
        await dispatcher(call("store.get", {"id": 1, "colour": "red"}), None)
    assert store.ran == []


async def test_args_that_are_not_a_map() -> None:
    dispatcher, _ = make()
    with pytest.raises(InvalidArgument):
        await dispatcher(call("store.get", [1, 2]), None)


async def test_plain_exception_becomes_internal_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dispatcher, store = make()
    with pytest.raises(Internal) as caught:
        await dispatcher(call("store.crash"), None)
    assert "private detail" not in caught.value.message
    assert "store.crash" in caught.value.message
    assert store.ran == ["crash"]
    assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)
    # The dispatcher lives on.
    assert codec.decode(await dispatcher(call("store.get", {"id": 1}), None), Item).id == 1


async def test_flotilla_errors_pass_through() -> None:
    dispatcher, _ = make()
    with pytest.raises(PermissionDenied, match="not you") as caught:
        await dispatcher(call("store.deny"), None)
    assert caught.value.details == {"who": "eve"}


class Relay(Service, name="relay"):
    """Raises errors as if an onward call had returned them, or as its own."""

    @rpc
    async def onward(self, retryable: bool) -> None:
        error = Unavailable("callee is down", retryable=retryable)
        error.onward = True  # what the caller marks an error from a call it made
        raise error

    @rpc
    async def own(self) -> None:
        raise Unavailable("not now")


async def test_an_onward_error_escaping_the_handler_is_not_retryable() -> None:
    # The handler may have done work before its onward call failed.
    dispatcher = Dispatcher([Relay()], NoInvoker())
    for retryable in (True, False):
        with pytest.raises(Unavailable, match="callee is down") as onward:
            await dispatcher(call("relay.onward", {"retryable": retryable}), None)
        assert onward.value.retryable is False
    with pytest.raises(Unavailable, match="not now") as own:
        await dispatcher(call("relay.own"), None)
    assert own.value.retryable is True  # its own refusal keeps its class's verdict


async def test_unencodable_result_is_internal() -> None:
    dispatcher, _ = make()
    with pytest.raises(Internal, match="cannot be encoded"):
        await dispatcher(call("store.unencodable"), None)


async def test_context_from_the_call() -> None:
    dispatcher, store = make()
    deadline = time.monotonic() + 2.0
    frame = call(
        "store.who-am-i",
        timeout_ms=2000,
        request_id="req-1",
        caller="front",
        meta={"tenant": "acme"},
    )
    result = await dispatcher(frame, deadline)
    assert codec.decode(result) == "store"
    (ctx,) = store.contexts
    assert ctx.service == "store"
    assert ctx.caller == "front"
    assert ctx.request_id == "req-1"
    assert ctx.meta == {"tenant": "acme"}
    assert ctx.deadline == deadline  # the transport's absolute deadline, handed on as is


async def test_meta_is_user_metadata_only() -> None:
    # Request id and caller travel in fields of their own: meta keys that look
    # like the old reserved ones are the user's, and do not set either.
    dispatcher, store = make()
    meta = {"rid": "not-an-id", "from": "not-a-caller"}
    await dispatcher(call("store.who-am-i", request_id="req-2", caller="front", meta=meta), None)
    (ctx,) = store.contexts
    assert ctx.request_id == "req-2"
    assert ctx.caller == "front"
    assert ctx.meta == meta


async def test_context_without_deadline_or_meta() -> None:
    dispatcher, store = make()
    await dispatcher(call("store.who-am-i"), None)
    await dispatcher(call("store.who-am-i"), None)
    first, second = store.contexts
    assert first.deadline is None
    assert first.caller == ""
    assert first.meta == {}
    assert first.request_id  # a fresh one, for each call
    assert second.request_id
    assert first.request_id != second.request_id


async def test_the_deadline_is_handed_on_not_enforced_here() -> None:
    # Enforcement is the transport's (tests/transport/test_server.py): the
    # dispatcher adds no timer of its own, even for a deadline already passed.
    dispatcher, store = make()
    passed = time.monotonic() - 1.0
    result = await dispatcher(call("store.slow", {"seconds": 0.01}), passed)
    assert codec.decode(result) == "done"
    assert store.ran == ["slow"]
    assert not store.cancelled


async def test_cancellation_passes_through_untouched(caplog: pytest.LogCaptureFixture) -> None:
    # When the transport cancels a call (Cancel frame, deadline sweep), the
    # handler sees CancelledError, and the dispatcher neither swallows it nor
    # turns it into an Internal error.
    dispatcher, store = make()
    running = asyncio.create_task(dispatcher(call("store.slow", {"seconds": 10}), None))
    await store.slow_started.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert store.cancelled
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_server_layers_wrap_the_handler() -> None:
    seen: list[str] = []

    async def metrics(incoming: Incoming, call_next: Handler[Incoming]) -> Any:
        route = incoming.route
        seen.append(
            f"{route.target} {route.spec.name} {incoming.context.service} {incoming.values}"
        )
        return await call_next(incoming)

    dispatcher, _ = make(("metrics", metrics))
    await dispatcher(call("store.get", {"id": 1}), None)
    assert seen == ["store.get get store (1, 'thing')"]


async def test_a_layer_and_the_handler_share_one_context() -> None:
    seen: list[Context] = []

    async def tag(incoming: Incoming, call_next: Handler[Incoming]) -> Any:
        seen.append(incoming.context)
        incoming.context.meta["layer"] = "metrics"
        return await call_next(incoming)

    dispatcher, store = make(("metrics", tag))
    await dispatcher(call("store.who-am-i", request_id="r-1", meta={"tenant": "acme"}), None)
    (ctx,) = store.contexts
    assert seen[0] is ctx
    assert ctx.request_id == "r-1"
    assert ctx.meta == {"tenant": "acme", "layer": "metrics"}


async def test_a_layer_sees_and_may_replace_the_values() -> None:
    async def rewrite(incoming: Incoming, call_next: Handler[Incoming]) -> Any:
        incoming.values = (incoming.values[0] + 1, *incoming.values[1:])
        return await call_next(incoming)

    dispatcher, _ = make(("metrics", rewrite))
    result = await dispatcher(call("store.get", {"id": 1}), None)
    assert codec.decode(result, Item) == Item(id=2, name="thing")


def test_unknown_server_layer_refused() -> None:
    with pytest.raises(ConfigError, match="retry"):
        make(("retry", lambda i, n: n(i)))
    assert SERVER_STACK == ("metrics",)


# -- how arguments reach the method ---------------------------------------------------------


class Shapes(Service, name="shapes"):
    """Methods whose signatures lay their arguments out in every supported way."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    @rpc
    async def keywords(self, *, id: int, name: str = "kw") -> str:
        self.seen.append((id, name))
        return f"{id}:{name}"

    @rpc
    async def mixed(self, id: int, *, name: str, size: int = 1) -> str:
        self.seen.append((id, name, size))
        return f"{id}:{name}:{size}"

    @rpc
    async def middle(self, id: int, ctx: Context, name: str = "mid") -> str:
        self.seen.append((id, ctx, name))
        return f"{id}:{ctx.service}:{name}"

    @rpc
    async def first(self, ctx: Context, id: int, name: str = "first") -> str:
        self.seen.append((ctx, id, name))
        return f"{ctx.service}:{id}:{name}"

    @rpc
    async def keyword_context(self, id: int, *, ctx: Context, name: str) -> str:
        self.seen.append((id, ctx, name))
        return f"{id}:{ctx.service}:{name}"

    @rpc
    async def defaults(self, a: int = 1, b: int = 2, c: int = 3) -> list[int]:
        self.seen.append((a, b, c))
        return [a, b, c]


def shapes() -> tuple[Dispatcher, Shapes]:
    service = Shapes()
    return Dispatcher([service], NoInvoker()), service


async def test_keyword_only_parameters() -> None:
    dispatcher, service = shapes()
    result = await dispatcher(call("shapes.keywords", {"id": 4, "name": "x"}), None)
    assert codec.decode(result) == "4:x"
    result = await dispatcher(call("shapes.keywords", {"id": 5}), None)
    assert codec.decode(result) == "5:kw"
    assert service.seen == [(4, "x"), (5, "kw")]
    with pytest.raises(InvalidArgument, match="`id`"):
        await dispatcher(call("shapes.keywords", {"name": "x"}), None)


async def test_positional_and_keyword_only_parameters_mixed() -> None:
    dispatcher, service = shapes()
    # Given in another order than the signature's: matched by name.
    result = await dispatcher(call("shapes.mixed", {"size": 3, "name": "n", "id": 1}), None)
    assert codec.decode(result) == "1:n:3"
    result = await dispatcher(call("shapes.mixed", {"name": "m", "id": 2}), None)
    assert codec.decode(result) == "2:m:1"
    assert service.seen == [(1, "n", 3), (2, "m", 1)]


async def test_context_parameter_in_the_middle() -> None:
    dispatcher, service = shapes()
    frame = call("shapes.middle", {"name": "n", "id": 7}, request_id="r-7")
    assert codec.decode(await dispatcher(frame, None)) == "7:shapes:n"
    assert codec.decode(await dispatcher(call("shapes.middle", {"id": 8}), None)) == "8:shapes:mid"
    (id_, ctx, name), (id2, _, name2) = service.seen
    assert (id_, name, id2, name2) == (7, "n", 8, "mid")
    assert isinstance(ctx, Context)
    assert ctx.request_id == "r-7"


async def test_context_parameter_first() -> None:
    dispatcher, service = shapes()
    assert codec.decode(await dispatcher(call("shapes.first", {"id": 3}), None)) == "shapes:3:first"
    ((ctx, id_, name),) = service.seen
    assert isinstance(ctx, Context)
    assert (id_, name) == (3, "first")


async def test_keyword_only_context_parameter() -> None:
    dispatcher, service = shapes()
    result = await dispatcher(call("shapes.keyword_context", {"name": "k", "id": 9}), None)
    assert codec.decode(result) == "9:shapes:k"
    ((id_, ctx, name),) = service.seen
    assert (id_, name) == (9, "k")
    assert isinstance(ctx, Context)


async def test_the_context_is_not_an_argument() -> None:
    dispatcher, service = shapes()
    with pytest.raises(InvalidArgument, match="ctx"):
        await dispatcher(call("shapes.middle", {"id": 1, "ctx": "forged"}), None)
    assert service.seen == []


async def test_defaults_fill_the_gaps_in_position() -> None:
    dispatcher, service = shapes()
    assert codec.decode(await dispatcher(call("shapes.defaults", {"b": 20}), None)) == [1, 20, 3]
    assert codec.decode(await dispatcher(call("shapes.defaults", {"c": 30}), None)) == [1, 2, 30]
    assert service.seen == [(1, 20, 3), (1, 2, 30)]

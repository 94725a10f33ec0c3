"""The callee's side: route, validate the arguments, run the method (no sockets).

Deadlines are enforced by the transport (tests/transport/test_server.py) and
end to end (tests/runtime/test_node.py); the dispatcher only hands the
deadline on in the call's context.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any

import msgspec
import pytest

from flotilla import Context, Service, codec, rpc
from flotilla.errors import (
    ConfigError,
    FlotillaError,
    Internal,
    InvalidArgument,
    PermissionDenied,
    Unavailable,
    Unimplemented,
)
from flotilla.headers import Headers, Principal
from flotilla.pipeline import Handler
from flotilla.runtime.dispatcher import SERVER_STACK, Dispatcher, Incoming


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


def dispatch(
    dispatcher: Dispatcher, target: str, args: Any = None, **headers: Any
) -> Awaitable[bytes]:
    """Serve ``target`` as the transport would: arguments still encoded, headers received."""
    return dispatcher(
        target, msgspec.Raw(codec.encode({} if args is None else args)), Headers(**headers)
    )


async def test_routes_and_encodes_the_result() -> None:
    dispatcher, store = make()
    result = await dispatch(dispatcher, "store.get", {"id": 3})
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


async def test_an_unknown_method_is_unimplemented_and_lists_the_methods() -> None:
    dispatcher, store = make()
    with pytest.raises(Unimplemented) as caught:
        await dispatch(dispatcher, "store.nope")
    assert caught.value.message == (
        "service 'store' has no method 'nope' "
        "(its methods: crash, deny, get, slow, unencodable, who-am-i)"
    )
    assert store.ran == []


@pytest.mark.parametrize(("method", "suggested"), [("whoami", "who-am-i"), ("gett", "get")])
async def test_an_unknown_method_close_to_a_known_one_is_suggested(
    method: str, suggested: str
) -> None:
    dispatcher, _ = make()
    with pytest.raises(Unimplemented, match=f"did you mean '{suggested}'\\?"):
        await dispatch(dispatcher, f"store.{method}")


@pytest.mark.parametrize("target", ["other.get", "get"])
async def test_a_service_not_hosted_here_is_unavailable(target: str) -> None:
    # A stale view sent the call to the wrong address: nothing ran, another
    # instance may serve it.
    dispatcher, store = make()
    with pytest.raises(Unavailable, match="is not served at this address"):
        await dispatch(dispatcher, target)
    assert store.ran == []


async def test_wrong_argument_type_names_the_field() -> None:
    dispatcher, store = make()
    with pytest.raises(InvalidArgument) as caught:
        await dispatch(dispatcher, "store.get", {"id": "three"})
    assert "$.id" in caught.value.message
    assert store.ran == []


async def test_missing_argument_is_named() -> None:
    dispatcher, store = make()
    with pytest.raises(InvalidArgument, match="`id`"):
        await dispatch(dispatcher, "store.get", {"name": "x"})
    assert store.ran == []


async def test_unknown_extra_argument_is_named() -> None:
    dispatcher, store = make()
    with pytest.raises(InvalidArgument, match="colour"):
        await dispatch(dispatcher, "store.get", {"id": 1, "colour": "red"})
    assert store.ran == []


async def test_args_that_are_not_a_map() -> None:
    dispatcher, _ = make()
    with pytest.raises(InvalidArgument):
        await dispatch(dispatcher, "store.get", [1, 2])


async def test_plain_exception_becomes_internal_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dispatcher, store = make()
    with pytest.raises(Internal) as caught:
        await dispatch(dispatcher, "store.crash", request_id="req-crash")
    assert "private detail" not in caught.value.message
    assert "store.crash" in caught.value.message
    # The request id leads from the caller's error to the callee's log line.
    assert "req-crash" in caught.value.message
    assert caught.value.details == {"request_id": "req-crash"}
    assert store.ran == ["crash"]
    (logged,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert logged.exc_info is not None
    assert "req-crash" in logged.getMessage()
    # The dispatcher lives on.
    assert codec.decode(await dispatch(dispatcher, "store.get", {"id": 1}), Item).id == 1


async def test_flotilla_errors_pass_through() -> None:
    dispatcher, _ = make()
    with pytest.raises(PermissionDenied, match="not you") as caught:
        await dispatch(dispatcher, "store.deny")
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
            await dispatch(dispatcher, "relay.onward", {"retryable": retryable})
        assert onward.value.retryable is False
    with pytest.raises(Unavailable, match="not now") as own:
        await dispatch(dispatcher, "relay.own")
    assert own.value.retryable is True  # its own refusal keeps its class's verdict


class Storm(Service, name="storm"):
    """Fails the ways a handler does after an onward call that was retried to no avail."""

    @staticmethod
    def exhausted() -> Unavailable:
        error = Unavailable("inventory is down", retried=True)
        error.onward = True
        return error

    @rpc
    async def passes_it_on(self) -> None:
        raise self.exhausted()

    @rpc
    async def wraps_it(self) -> None:
        try:
            raise self.exhausted()
        except Unavailable as exc:
            raise Unavailable("cannot reserve stock") from exc

    @rpc
    async def fails_while_handling_it(self) -> None:
        try:
            raise self.exhausted()
        except Unavailable:
            raise RuntimeError("a bug in the except block") from None

    @rpc
    async def fails_on_its_own(self) -> None:
        try:
            raise Unavailable("inventory is down")  # not retried: a caller may
        except Unavailable as exc:
            raise Unavailable("cannot reserve stock") from exc


@pytest.mark.parametrize(
    ("method", "error", "retried"),
    [
        ("passes_it_on", Unavailable, True),
        ("wraps_it", Unavailable, True),
        ("fails_while_handling_it", Internal, True),
        ("fails_on_its_own", Unavailable, False),
    ],
)
async def test_a_failure_caused_by_a_retried_onward_failure_is_marked_retried(
    method: str, error: type[FlotillaError], retried: bool
) -> None:
    dispatcher = Dispatcher([Storm()], NoInvoker())
    with pytest.raises(error) as caught:
        await dispatch(dispatcher, f"storm.{method}")
    assert caught.value.retried is retried


async def test_unencodable_result_is_internal() -> None:
    dispatcher, _ = make()
    with pytest.raises(Internal, match="cannot be encoded"):
        await dispatch(dispatcher, "store.unencodable")


async def test_context_from_the_call() -> None:
    dispatcher, store = make()
    deadline = time.monotonic() + 2.0
    principal = Principal("ada", roles=("admin",))
    result = await dispatch(
        dispatcher,
        "store.who-am-i",
        request_id="req-1",
        caller="front",
        deadline=deadline,
        trace="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        principal=principal,
        meta={"tenant": "acme"},
    )
    assert codec.decode(result) == "store"
    (ctx,) = store.contexts
    assert ctx.service == "store"
    assert ctx.caller == "front"
    assert ctx.request_id == "req-1"
    assert ctx.meta == {"tenant": "acme"}
    assert ctx.principal == principal
    assert ctx.headers.trace.startswith("00-4bf92f35")
    assert ctx.deadline == deadline  # the transport's absolute deadline, handed on as is


async def test_meta_is_user_metadata_only() -> None:
    # Request id and caller travel in fields of their own: meta keys that look
    # like the old reserved ones are the user's, and do not set either.
    dispatcher, store = make()
    meta = {"rid": "not-an-id", "from": "not-a-caller"}
    await dispatch(dispatcher, "store.who-am-i", request_id="req-2", caller="front", meta=meta)
    (ctx,) = store.contexts
    assert ctx.request_id == "req-2"
    assert ctx.caller == "front"
    assert ctx.meta == meta


async def test_context_without_deadline_or_meta() -> None:
    dispatcher, store = make()
    await dispatch(dispatcher, "store.who-am-i")
    await dispatch(dispatcher, "store.who-am-i")
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
    result = await dispatch(dispatcher, "store.slow", {"seconds": 0.01}, deadline=passed)
    assert codec.decode(result) == "done"
    assert store.ran == ["slow"]
    assert not store.cancelled


async def test_cancellation_passes_through_untouched(caplog: pytest.LogCaptureFixture) -> None:
    # When the transport cancels a call (Cancel frame, deadline sweep), the
    # handler sees CancelledError, and the dispatcher neither swallows it nor
    # turns it into an Internal error.
    dispatcher, store = make()
    running = asyncio.create_task(dispatch(dispatcher, "store.slow", {"seconds": 10}))
    await store.slow_started.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert store.cancelled
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_server_layers_wrap_the_handler() -> None:
    seen: list[str] = []

    async def metrics(incoming: Incoming, call_next: Handler[Incoming]) -> Any:
        # Before the innermost step: routed (the method is known), nothing decoded yet.
        route = incoming.route
        assert route is not None
        seen.append(f"before {incoming.target} {route.spec.name} {incoming.values}")
        result = await call_next(incoming)
        route = incoming.route
        assert route is not None
        seen.append(
            f"after {route.target} {route.spec.name} {incoming.context.service} {incoming.values}"
        )
        return result

    dispatcher, _ = make(("metrics", metrics))
    await dispatch(dispatcher, "store.get", {"id": 1})
    assert seen == ["before store.get get ()", "after store.get get store (1, 'thing')"]


async def test_layers_see_no_route_for_a_target_not_served_here() -> None:
    routes: list[object] = []

    async def metrics(incoming: Incoming, call_next: Handler[Incoming]) -> Any:
        routes.append(incoming.route)
        return await call_next(incoming)

    dispatcher, _ = make(("metrics", metrics))
    with pytest.raises(Unimplemented):
        await dispatch(dispatcher, "store.nope", {})
    assert routes == [None]


class Outcomes:
    """A server layer that records each call's target and how it ended."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def __call__(self, incoming: Incoming, call_next: Handler[Incoming]) -> Any:
        try:
            result = await call_next(incoming)
        except FlotillaError as exc:
            self.seen.append((incoming.target, exc.code))
            raise
        self.seen.append((incoming.target, "ok"))
        return result


@pytest.mark.parametrize("name", SERVER_STACK)
async def test_every_server_layer_sees_every_call_even_those_refused(name: str) -> None:
    # Metrics must count (and an authorisation layer must see) the calls that
    # fail before the method runs: an unknown method, arguments that do not decode.
    outcomes = Outcomes()
    dispatcher, store = make((name, outcomes))
    await dispatch(dispatcher, "store.get", {"id": 1})
    with pytest.raises(Unimplemented):
        await dispatch(dispatcher, "store.nope")
    with pytest.raises(InvalidArgument):
        await dispatch(dispatcher, "store.get", {"id": "one"})
    with pytest.raises(Unavailable):
        await dispatch(dispatcher, "elsewhere.get")
    with pytest.raises(Internal):
        await dispatch(dispatcher, "store.crash")
    assert outcomes.seen == [
        ("store.get", "ok"),
        ("store.nope", "unimplemented"),
        ("store.get", "invalid_argument"),
        ("elsewhere.get", "unavailable"),
        ("store.crash", "internal"),
    ]
    assert store.ran == ["get", "crash"]


async def test_server_layers_run_in_the_stack_order() -> None:
    order: list[str] = []

    def layer(name: str) -> Any:
        async def record(incoming: Incoming, call_next: Handler[Incoming]) -> Any:
            order.append(name)
            return await call_next(incoming)

        return record

    # Given in reverse: the stack's order wins.
    dispatcher, _ = make(*((name, layer(name)) for name in reversed(SERVER_STACK)))
    await dispatch(dispatcher, "store.get", {"id": 1})
    assert order == list(SERVER_STACK)


async def test_a_layer_may_refuse_a_call_before_it_is_decoded() -> None:
    async def deny(incoming: Incoming, call_next: Handler[Incoming]) -> Any:
        if incoming.headers.principal is None:
            raise PermissionDenied(f"{incoming.target} needs a principal")
        return await call_next(incoming)

    dispatcher, store = make(("user", deny))
    with pytest.raises(PermissionDenied, match=r"store\.get needs a principal"):
        await dispatch(dispatcher, "store.get", {"id": 1})
    assert store.ran == []
    await dispatch(dispatcher, "store.get", {"id": 1}, principal=Principal("ada"))
    assert store.ran == ["get"]


async def test_a_layer_and_the_handler_share_one_context() -> None:
    seen: list[Context] = []

    async def tag(incoming: Incoming, call_next: Handler[Incoming]) -> Any:
        seen.append(incoming.context)
        incoming.context.set_meta(layer="metrics")
        return await call_next(incoming)

    dispatcher, store = make(("metrics", tag))
    await dispatch(dispatcher, "store.who-am-i", request_id="r-1", meta={"tenant": "acme"})
    (ctx,) = store.contexts
    assert seen[0] is ctx
    assert ctx.request_id == "r-1"
    assert ctx.meta == {"tenant": "acme", "layer": "metrics"}


async def test_a_layer_sees_and_may_replace_the_arguments() -> None:
    # Layers run before decoding: they see (and may replace) the encoded arguments.
    async def rewrite(incoming: Incoming, call_next: Handler[Incoming]) -> Any:
        args = codec.decode(incoming.args)
        incoming.args = msgspec.Raw(codec.encode({**args, "id": args["id"] + 1}))
        return await call_next(incoming)

    dispatcher, _ = make(("metrics", rewrite))
    result = await dispatch(dispatcher, "store.get", {"id": 1})
    assert codec.decode(result, Item) == Item(id=2, name="thing")


def test_unknown_server_layer_refused() -> None:
    with pytest.raises(ConfigError, match="retry"):
        make(("retry", lambda i, n: n(i)))
    assert SERVER_STACK == ("metrics", "user", "bulkhead", "faults")


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
    result = await dispatch(dispatcher, "shapes.keywords", {"id": 4, "name": "x"})
    assert codec.decode(result) == "4:x"
    result = await dispatch(dispatcher, "shapes.keywords", {"id": 5})
    assert codec.decode(result) == "5:kw"
    assert service.seen == [(4, "x"), (5, "kw")]
    with pytest.raises(InvalidArgument, match="`id`"):
        await dispatch(dispatcher, "shapes.keywords", {"name": "x"})


async def test_positional_and_keyword_only_parameters_mixed() -> None:
    dispatcher, service = shapes()
    # Given in another order than the signature's: matched by name.
    result = await dispatch(dispatcher, "shapes.mixed", {"size": 3, "name": "n", "id": 1})
    assert codec.decode(result) == "1:n:3"
    result = await dispatch(dispatcher, "shapes.mixed", {"name": "m", "id": 2})
    assert codec.decode(result) == "2:m:1"
    assert service.seen == [(1, "n", 3), (2, "m", 1)]


async def test_context_parameter_in_the_middle() -> None:
    dispatcher, service = shapes()
    result = await dispatch(dispatcher, "shapes.middle", {"name": "n", "id": 7}, request_id="r-7")
    assert codec.decode(result) == "7:shapes:n"
    assert codec.decode(await dispatch(dispatcher, "shapes.middle", {"id": 8})) == "8:shapes:mid"
    (id_, ctx, name), (id2, _, name2) = service.seen
    assert (id_, name, id2, name2) == (7, "n", 8, "mid")
    assert isinstance(ctx, Context)
    assert ctx.request_id == "r-7"


async def test_context_parameter_first() -> None:
    dispatcher, service = shapes()
    assert codec.decode(await dispatch(dispatcher, "shapes.first", {"id": 3})) == "shapes:3:first"
    ((ctx, id_, name),) = service.seen
    assert isinstance(ctx, Context)
    assert (id_, name) == (3, "first")


async def test_keyword_only_context_parameter() -> None:
    dispatcher, service = shapes()
    result = await dispatch(dispatcher, "shapes.keyword_context", {"name": "k", "id": 9})
    assert codec.decode(result) == "9:shapes:k"
    ((id_, ctx, name),) = service.seen
    assert (id_, name) == (9, "k")
    assert isinstance(ctx, Context)


async def test_the_context_is_not_an_argument() -> None:
    dispatcher, service = shapes()
    with pytest.raises(InvalidArgument, match="ctx"):
        await dispatch(dispatcher, "shapes.middle", {"id": 1, "ctx": "forged"})
    assert service.seen == []


async def test_defaults_fill_the_gaps_in_position() -> None:
    dispatcher, service = shapes()
    assert codec.decode(await dispatch(dispatcher, "shapes.defaults", {"b": 20})) == [1, 20, 3]
    assert codec.decode(await dispatch(dispatcher, "shapes.defaults", {"c": 30})) == [1, 2, 30]
    assert service.seen == [(1, 20, 3), (1, 2, 30)]

"""Headers: one immutable value per call, copied and never changed; the deadline relative on the
wire."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Any

import msgspec
import pytest

from flotilla.context import Context
from flotilla.headers import Headers, Principal
from flotilla.pipeline import Handler, compose
from flotilla.request import Request


class NoInvoker:
    async def invoke(self, *args: object, **kwargs: object) -> object:
        raise AssertionError("no calls here")


FULL = Headers(
    request_id="r1",
    caller="front",
    deadline=1_000.0,
    trace="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    principal=Principal("ada", ("admin", "ops")),
    meta={"tenant": "acme"},
)


@pytest.mark.parametrize(
    "field", ["request_id", "caller", "deadline", "trace", "principal", "meta"]
)
def test_headers_are_frozen(field: str) -> None:
    with pytest.raises(AttributeError):
        setattr(FULL, field, None)


def test_a_principal_is_frozen() -> None:
    assert FULL.principal is not None
    with pytest.raises(AttributeError):
        FULL.principal.subject = "mallory"  # type: ignore[misc]


def test_with_meta_returns_a_copy_and_leaves_the_original() -> None:
    before = dict(FULL.meta)
    stamped = FULL.with_meta(build="2026.11", tenant="globex")
    assert stamped.meta == {"tenant": "globex", "build": "2026.11"}
    assert FULL.meta == before  # the original's dict was not written to
    assert stamped.meta is not FULL.meta
    # Everything else is carried over as it was.
    assert stamped.replace(meta=FULL.meta) == FULL


def test_replace_returns_a_copy_and_leaves_the_original() -> None:
    moved = FULL.replace(caller="shop", deadline=2_000.0)
    assert (moved.caller, moved.deadline) == ("shop", 2_000.0)
    assert (FULL.caller, FULL.deadline) == ("front", 1_000.0)
    assert moved.replace(caller="front", deadline=1_000.0) == FULL


def test_default_headers_are_empty_and_share_no_meta() -> None:
    first, second = Headers(), Headers()
    assert (first.request_id, first.caller, first.deadline, first.principal) == ("", "", None, None)
    assert first.meta == {}
    assert first.meta is not second.meta


def test_the_deadline_travels_as_seconds_left_and_comes_back_absolute() -> None:
    headers = Headers(request_id="r", deadline=105.0)
    on_wire = headers.to_wire(now=100.0)
    assert on_wire.deadline == pytest.approx(5.0)
    assert on_wire.replace(deadline=105.0) == headers  # only the deadline changes
    # Received on a host whose monotonic clock reads 7000: 5 s from then.
    received = msgspec.msgpack.decode(msgspec.msgpack.encode(on_wire), type=Headers)
    assert received.from_wire(now=7_000.0).deadline == pytest.approx(7_005.0)
    assert headers.deadline == 105.0  # the sender's value is left as it was


def test_a_passed_deadline_travels_as_negative_seconds_left() -> None:
    assert Headers(deadline=99.0).to_wire(now=100.0).deadline == pytest.approx(-1.0)


def test_no_deadline_stays_none_both_ways() -> None:
    headers = Headers(request_id="r")
    assert headers.to_wire(now=100.0) is headers
    assert headers.from_wire(now=100.0) is headers


def test_remaining() -> None:
    assert Headers().remaining() is None
    assert Headers(deadline=10.0).remaining(now=7.5) == pytest.approx(2.5)
    deadline = time.monotonic() + 5.0
    remaining = Headers(deadline=deadline).remaining()
    assert remaining is not None
    assert 4.0 < remaining <= 5.0


def test_headers_round_trip_through_msgpack() -> None:
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(FULL), type=Headers) == FULL


class Stamp:
    """A user layer that adds metadata to each call it sees."""

    def __call__(self, request: Request, call_next: Handler[Request]) -> Awaitable[Any]:
        request.headers = request.headers.with_meta(build="2026.11")
        return call_next(request)


async def test_a_layer_adding_meta_leaves_the_callers_context_alone() -> None:
    # A request once took the context's meta dict itself: a layer adding to it
    # wrote into the caller's context, and into every later call made from it.
    context = Context(NoInvoker(), Headers(meta={"tenant": "acme"}), service="shop")
    sent: list[Headers] = []

    async def transport(request: Request) -> None:
        sent.append(request.headers)

    send = compose([Stamp()], transport)
    await send(Request("catalog", "get", {}, context.onward_headers()))
    await send(Request("catalog", "get", {}, context.onward_headers()))
    assert [headers.meta for headers in sent] == [{"tenant": "acme", "build": "2026.11"}] * 2
    assert context.meta == {"tenant": "acme"}
    assert context.onward_headers().meta == {"tenant": "acme"}

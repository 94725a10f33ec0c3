"""The deadline middleware: every call gets one, and nothing below outlives it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from flotilla.calls.deadline import DEFAULT_TIMEOUT, Deadline
from flotilla.errors import DeadlineExceeded
from flotilla.headers import Headers
from flotilla.request import Request


def request(*, deadline: float | None = None, **kw: Any) -> Request:
    return Request("svc", "m", {}, Headers(request_id="r", deadline=deadline), **kw)


async def answer(request: Request) -> str:
    return "ok"


def now() -> float:
    return time.monotonic()


def test_default_timeout() -> None:
    assert Deadline().default_timeout == DEFAULT_TIMEOUT == 10.0


async def test_deadline_from_the_default_timeout() -> None:
    req = request()
    before = now()
    assert await Deadline(3.0)(req, answer) == "ok"
    assert req.deadline is not None
    assert before + 3.0 <= req.deadline <= now() + 3.0


async def test_deadline_from_the_method_timeout() -> None:
    req = request(timeout=0.5)
    before = now()
    await Deadline(3.0)(req, answer)
    assert req.deadline is not None
    assert before + 0.5 <= req.deadline <= now() + 0.5


async def test_an_earlier_caller_deadline_is_kept() -> None:
    deadline = now() + 1.0
    req = request(deadline=deadline, timeout=5.0)
    await Deadline(3.0)(req, answer)
    assert req.deadline == deadline


async def test_caller_deadline_wins_over_a_shorter_default_timeout() -> None:
    # Deadline's docstring: "the caller's, else now + the method's or default
    # timeout"; Request.timeout: "used when the caller set no deadline".  A
    # caller who asked for 30 s must not be cut off at the 3 s default.
    deadline = now() + 30.0
    req = request(deadline=deadline)
    await Deadline(3.0)(req, answer)
    assert req.deadline == deadline


async def test_the_deadline_is_set_in_new_headers_leaving_the_callers_alone() -> None:
    # The caller's context holds the headers the request started with: fixing
    # the deadline must not write into them.
    headers = Headers(request_id="r", meta={"tenant": "acme"})
    req = Request("svc", "m", {}, headers)
    await Deadline(3.0)(req, answer)
    assert headers.deadline is None
    assert req.headers is not headers
    assert req.headers.deadline is not None
    assert (req.headers.request_id, req.headers.meta) == ("r", {"tenant": "acme"})


async def test_a_deadline_already_in_force_keeps_the_same_headers() -> None:
    headers = Headers(request_id="r", deadline=now() + 1.0)
    req = Request("svc", "m", {}, headers)
    await Deadline(3.0)(req, answer)
    assert req.headers is headers  # nothing to change: no copy per call


async def test_deadline_is_visible_below() -> None:
    seen: list[float | None] = []

    async def look(req: Request) -> None:
        seen.append(req.deadline)

    req = request()
    await Deadline(1.0)(req, look)
    assert seen == [req.deadline]


async def test_passed_deadline_fails_without_calling_next() -> None:
    called: list[Request] = []

    async def record(req: Request) -> None:
        called.append(req)

    with pytest.raises(DeadlineExceeded, match=r"svc\.m"):
        await Deadline()(request(deadline=now() - 0.001), record)
    assert called == []


async def test_no_timer_is_armed_the_deadline_travels_down() -> None:
    # The middleware only fixes the deadline; the layers that wait enforce it
    # (the transport for the reply): a slow next is not cut off here.
    seen: list[float | None] = []

    async def slow(req: Request) -> str:
        seen.append(req.deadline)
        await asyncio.sleep(0.05)
        return "late but answered"

    req = request()
    assert await Deadline(default_timeout=0.01)(req, slow) == "late but answered"
    assert seen == [req.deadline]


async def test_a_timeout_error_from_below_is_not_a_deadline() -> None:
    async def own_timeout(req: Request) -> None:
        raise TimeoutError("something else timed out")

    with pytest.raises(TimeoutError, match="something else"):
        await Deadline()(request(), own_timeout)


async def test_errors_from_below_pass_through() -> None:
    async def fail(req: Request) -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await Deadline()(request(), fail)

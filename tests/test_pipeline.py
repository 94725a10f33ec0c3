"""The client pipeline: middlewares folded once, in the one order of CLIENT_STACK."""

from __future__ import annotations

from typing import Any

import pytest

from flotilla.errors import ConfigError
from flotilla.pipeline import (
    ATTEMPT_LAYERS,
    CLIENT_STACK,
    REQUEST_LAYERS,
    Handler,
    build_stack,
    compose,
)


def tracer(name: str, log: list[str]) -> Any:
    async def middleware(request: list[str], call_next: Handler[list[str]]) -> Any:
        log.append(f"{name}>")
        request.append(name)
        result = await call_next(request)
        log.append(f"<{name}")
        return [*result, name]

    return middleware


async def terminal(request: list[str]) -> list[str]:
    return [f"terminal saw {request}"]


async def test_compose_runs_outermost_first() -> None:
    log: list[str] = []
    handler = compose([tracer("a", log), tracer("b", log), tracer("c", log)], terminal)
    result = await handler([])
    assert log == ["a>", "b>", "c>", "<c", "<b", "<a"]
    assert result == ["terminal saw ['a', 'b', 'c']", "c", "b", "a"]


async def test_compose_of_nothing_is_the_terminal() -> None:
    assert compose([], terminal) is terminal


async def test_a_middleware_may_answer_without_calling_next() -> None:
    called: list[str] = []

    async def short(request: list[str], call_next: Handler[list[str]]) -> Any:
        return "cached"

    async def inner(request: list[str]) -> Any:
        called.append("inner")
        return "fresh"

    assert await compose([short], inner)([]) == "cached"
    assert called == []


async def test_a_middleware_may_call_next_more_than_once() -> None:
    attempts: list[int] = []

    async def twice(request: list[str], call_next: Handler[list[str]]) -> Any:
        await call_next(request)
        return await call_next(request)

    async def count(request: list[str]) -> int:
        attempts.append(1)
        return len(attempts)

    assert await compose([twice], count)([]) == 2


async def test_build_stack_orders_by_client_stack_whatever_the_dict_order() -> None:
    log: list[str] = []
    names = list(reversed(CLIENT_STACK))
    handler = build_stack({name: tracer(name, log) for name in names}, terminal)
    await handler([])
    assert log[: len(CLIENT_STACK)] == [f"{name}>" for name in CLIENT_STACK]


async def test_build_stack_with_some_layers_only() -> None:
    log: list[str] = []
    layers = {"metrics": tracer("metrics", log), "deadline": tracer("deadline", log)}
    await build_stack(layers, terminal)([])
    assert log == ["deadline>", "metrics>", "<metrics", "<deadline"]


async def test_build_stack_with_its_own_order() -> None:
    log: list[str] = []
    layers = {"x": tracer("x", log), "y": tracer("y", log)}
    await build_stack(layers, terminal, order=("y", "x"))([])
    assert log == ["y>", "x>", "<x", "<y"]


def test_build_stack_refuses_unknown_names() -> None:
    with pytest.raises(ConfigError) as caught:
        build_stack(
            {"deadline": tracer("d", []), "cache": tracer("c", []), "auth": tracer("a", [])},
            terminal,
        )
    assert "['auth', 'cache']" in caught.value.message
    assert "deadline" in caught.value.message  # the known names are listed


def test_client_stack_order() -> None:
    assert CLIENT_STACK == (
        "deadline",
        "user",
        "fallback",
        "retry",
        "balance",
        "breaker",
        "bulkhead",
        "metrics",
    )


def test_balance_splits_the_request_tier_from_the_attempt_tier() -> None:
    assert REQUEST_LAYERS == ("deadline", "user", "fallback", "retry")
    assert ATTEMPT_LAYERS == ("breaker", "bulkhead", "metrics")

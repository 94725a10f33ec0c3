"""Request and Attempt: what the pipeline passes, each try a value of its own."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from flotilla import codec
from flotilla.balancing import Endpoint, RequestView
from flotilla.calls.balance import Balance
from flotilla.calls.endpoints import EndpointSet
from flotilla.errors import ConnectFailed
from flotilla.headers import Headers
from flotilla.registry import Health, Instance
from flotilla.request import Attempt, Request


def endpoint(id: str, port: int) -> Endpoint:
    return Endpoint(
        Instance(id=id, service="svc", address=f"127.0.0.1:{port}", health=Health.HEALTHY)
    )


def test_a_request_reads_target_meta_and_deadline_from_its_headers() -> None:
    headers = Headers(request_id="r1", deadline=50.0, meta={"cart_id": "7"})
    request = Request("carts", "get", {"id": 7}, headers, timeout=2.0, idempotent=True)
    assert request.target == "carts.get"
    assert request.meta == {"cart_id": "7"}
    assert request.deadline == 50.0
    assert (request.timeout, request.idempotent) == (2.0, True)
    assert repr(request) == "Request('carts.get', request_id='r1')"


def test_a_request_follows_its_replaced_headers() -> None:
    original = Headers(request_id="r1")
    request = Request("carts", "get", {}, original)
    request.headers = original.replace(deadline=9.0).with_meta(k="v")
    assert (request.deadline, request.meta) == (9.0, {"k": "v"})
    assert (original.deadline, original.meta) == (None, {})


def test_a_request_declares_nothing_by_default() -> None:
    request = Request("carts", "get", {}, Headers())
    assert (request.timeout, request.idempotent) == (None, False)


def test_an_attempt_reads_through_to_its_request() -> None:
    request = Request("carts", "get", {}, Headers(request_id="r1", deadline=5.0))
    attempt = Attempt(request, endpoint("e1", 9001), 2)
    assert attempt.target == "carts.get"
    assert attempt.deadline == 5.0
    assert repr(attempt) == "Attempt('carts.get', #2, '127.0.0.1:9001')"
    # The deadline layer replaces the request's headers: the attempt sees it.
    request.headers = request.headers.replace(deadline=3.0)
    assert attempt.deadline == 3.0


def test_an_attempt_starts_with_no_connect_time_of_its_own() -> None:
    request = Request("carts", "get", {}, Headers(request_id="r1"))
    first = Attempt(request, endpoint("e1", 9001), 1)
    second = Attempt(request, endpoint("e2", 9002), 2)
    first.connect_seconds = 0.25  # the transport's note, on this try only
    assert (first.connect_seconds, second.connect_seconds) == (0.25, 0.0)


class First:
    def select(self, endpoints: Sequence[Endpoint], request: RequestView) -> Endpoint:
        return endpoints[0]


class OneSet:
    def __init__(self, endpoints: EndpointSet) -> None:
        self.endpoints = endpoints

    def get(self, service: str) -> EndpointSet:
        return self.endpoints


async def test_each_try_of_a_requeued_request_is_an_attempt_of_its_own() -> None:
    endpoints = EndpointSet("svc")
    endpoints.update([endpoint(f"e{i}", 9000 + i).instance for i in range(2)])
    attempts: list[Attempt] = []
    seen: list[tuple[int, str]] = []

    async def send(attempt: Attempt) -> msgspec.Raw:
        attempts.append(attempt)
        seen.append((attempt.number, attempt.endpoint.id))
        if attempt.number == 1:
            attempt.connect_seconds = 0.5  # connected, then lost it before sending
            raise ConnectFailed("refused")
        return msgspec.Raw(codec.encode("ok"))

    directory: Any = OneSet(endpoints)
    request = Request("svc", "m", {}, Headers(request_id="r"))
    assert codec.decode(await Balance(directory, send, First())(request)) == "ok"
    first, second = attempts
    assert first is not second
    assert seen == [(1, "e0"), (2, "e1")]  # a second try went elsewhere
    # Each attempt kept its own endpoint and number after the next was made.
    assert (first.number, first.endpoint.id) == (1, "e0")
    assert (first.connect_seconds, second.connect_seconds) == (0.5, 0.0)
    assert first.request is second.request is request

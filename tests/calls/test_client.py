"""The Caller: its pipeline built once from named layers, over real nodes and loopback sockets."""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest

from flotilla import (
    ConfigError,
    Context,
    Handler,
    Internal,
    InvalidArgument,
    NotFound,
    Request,
    Service,
    Unavailable,
    rpc,
)
from flotilla.calls import endpoints as endpoints_module
from flotilla.calls.client import Caller, split_target
from flotilla.calls.endpoints import UNREACHABLE, Directory, EndpointSet
from flotilla.registry import Health, Instance, MemoryRegistry
from flotilla.runtime.config import NodeConfig, Timings
from flotilla.runtime.node import Node
from flotilla.testing import Cluster, wait_for


class Stamp:
    """The pipeline's documented example of a user layer: adds the caller's build to every call."""

    def __call__(self, request: Request, call_next: Handler[Request]) -> Awaitable[Any]:
        request.headers = request.headers.with_meta(build="2026.11")
        return call_next(request)


class Hop:
    """A user layer that stamps each call with the service that made it."""

    def __call__(self, request: Request, call_next: Handler[Request]) -> Awaitable[Any]:
        request.headers = request.headers.with_meta(hop=request.headers.caller or "outside")
        return call_next(request)


class Recorder:
    """A user layer that records what each request declares of its method."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, float | None, bool]] = []

    def __call__(self, request: Request, call_next: Handler[Request]) -> Awaitable[Any]:
        self.seen.append((request.target, request.timeout, request.idempotent))
        return call_next(request)


class Back(Service, name="back"):
    @rpc(timeout=2.5, idempotent=True)
    async def meta(self, ctx: Context) -> dict[str, str]:
        return dict(ctx.meta)

    @rpc
    async def plain(self) -> str:
        return "plain"

    @rpc
    async def missing(self) -> str:
        raise NotFound("nothing here")


class Front(Service, name="front"):
    @rpc
    async def relay(self, ctx: Context) -> dict[str, dict[str, str]]:
        downstream = await ctx.call("back.meta")
        return {"front": dict(ctx.meta), "back": downstream}


async def test_the_documented_user_layer_reaches_the_callees_context() -> None:
    async with Cluster(layers={"user": Stamp()}) as cluster:
        await cluster.add(Back())
        assert await cluster.call("back.meta") == {"build": "2026.11"}


async def test_a_user_layer_changes_the_onward_call_not_the_callers_context() -> None:
    async with Cluster(layers={"user": Hop()}) as cluster:
        await cluster.add(Back())
        await cluster.add(Front())
        seen = await cluster.call("front.relay")
        assert seen == {"front": {"hop": "outside"}, "back": {"hop": "front"}}


async def test_calls_by_name_take_the_published_timeout_and_idempotence() -> None:
    recorder = Recorder()
    async with Cluster(layers={"user": recorder}) as cluster:
        await cluster.add(Back())
        await cluster.call("back.meta")
        await cluster.call("back.plain")
        await cluster.client(Back).meta()  # typed: from the class's own spec
        assert recorder.seen == [
            ("back.meta", 2.5, True),
            ("back.plain", None, False),
            ("back.meta", 2.5, True),
        ]


async def test_arguments_that_cannot_travel_fail_before_any_layer_sees_the_call() -> None:
    recorder = Recorder()
    async with Cluster(layers={"user": recorder}) as cluster:
        await cluster.add(Back())
        with pytest.raises(InvalidArgument, match="when"):
            await cluster.call("back.plain", when=object())
        assert recorder.seen == []
        assert await cluster.call("back.plain") == "plain"  # and the caller is fine


async def test_an_error_from_a_call_is_marked_onward() -> None:
    # A handler that lets it escape may have done work before: the callee's
    # dispatcher must not pass it on as retryable.
    async with Cluster() as cluster:
        await cluster.add(Back())
        with pytest.raises(NotFound, match="nothing here") as caught:
            await cluster.call("back.missing")
        assert caught.value.onward


async def test_a_result_that_does_not_match_its_type_is_internal() -> None:
    async with Cluster() as cluster:
        await cluster.add(Back())
        with pytest.raises(Internal, match=r"result of back\.plain does not match its type"):
            await cluster.client_node.caller.invoke("back.plain", {}, context=None, result_type=int)


@pytest.mark.parametrize("target", ["back", "back.", ".meta", ""])
def test_a_target_must_be_service_dot_method(target: str) -> None:
    with pytest.raises(InvalidArgument, match=r"is not 'service\.method'"):
        split_target(target)


def test_split_target_keeps_dots_in_the_method() -> None:
    assert split_target("back.v2.meta") == ("back", "v2.meta")


# -- building the pipeline ----------------------------------------------------------------------


@pytest.fixture
async def registry() -> AsyncIterator[MemoryRegistry]:
    registry = MemoryRegistry()
    yield registry
    await registry.aclose()


@pytest.mark.parametrize("name", ["balance", "deadline", "cache"])
async def test_a_layer_name_the_caller_does_not_take_is_a_config_error(
    registry: MemoryRegistry, name: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Caller(registry, secret=b"s" * 32, layers={name: Stamp()})
    message = caught.value.message
    assert repr(name) in message
    # The names one may set are listed; those the caller owns are not offered.
    assert "['user', 'retry', 'breaker', 'bulkhead', 'metrics']" in message


async def test_every_settable_layer_name_is_taken(registry: MemoryRegistry) -> None:
    names = ["user", "retry", "breaker", "bulkhead", "metrics"]
    caller = Caller(registry, secret=b"s" * 32, layers=dict.fromkeys(names, Stamp()))
    await caller.aclose()


class Ejector:
    """An attempt-tier layer that keeps the directory it is given."""

    def __init__(self) -> None:
        self.directories: list[Directory] = []

    def attach(self, directory: Directory) -> None:
        self.directories.append(directory)

    def __call__(self, attempt: Any, call_next: Handler[Any]) -> Awaitable[Any]:
        return call_next(attempt)


@pytest.mark.parametrize("tier", ["user", "breaker"])
async def test_a_layer_with_attach_gets_the_callers_directory_once(
    registry: MemoryRegistry, tier: str
) -> None:
    layer = Ejector()
    caller = Caller(registry, secret=b"s" * 32, layers={tier: layer})
    try:
        assert layer.directories == [caller.directory]
        assert caller.balance.directory is caller.directory  # the view balancing reads
    finally:
        await caller.aclose()


# -- endpoints that fail before the call leaves ---------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def long_ejections(monkeypatch: pytest.MonkeyPatch) -> None:
    # An ejection must outlast the test's few calls even on a slow machine.
    monkeypatch.setattr(endpoints_module, "DOWN_INITIAL", 60.0)
    monkeypatch.setattr(endpoints_module, "DOWN_MAX", 60.0)


def round_robin_cluster() -> Cluster:
    # Round robin: two calls are sure to visit both endpoints.
    return Cluster(NodeConfig(strategy="round_robin", timings=Timings(grace=0.0, drain=2.0)))


async def both_known(cluster: Cluster) -> EndpointSet:
    endpoints = await cluster.client_node.caller.directory.open("back")
    await wait_for(lambda: len(endpoints.endpoints) == 2)
    return endpoints


@pytest.mark.usefixtures("long_ejections")
async def test_a_dead_address_is_requeued_and_ejected_as_unreachable() -> None:
    async with round_robin_cluster() as cluster:
        (live,) = await cluster.add(Back())
        # A registered instance nothing listens at (a killed replica whose
        # lease has not expired yet).
        dead = Instance(
            id="dead",
            service="back",
            address=f"127.0.0.1:{free_port()}",
            health=Health.HEALTHY,
        )
        await cluster.registry.register(dead, lease=await cluster.registry.grant(60))
        endpoints = await both_known(cluster)
        for _ in range(4):  # whichever comes first, every call is answered
            assert await cluster.call("back.plain") == "plain"
        assert endpoints.ejected["dead"].reason == UNREACHABLE
        assert [e.id for e in endpoints.pick_list()] == [live.instances[0].id]


@pytest.mark.usefixtures("long_ejections")
async def test_an_instance_with_another_secret_is_requeued_and_ejected() -> None:
    async with round_robin_cluster() as cluster:
        (live,) = await cluster.add(Back())
        stranger = Node(
            Back(),
            config=cluster.config.replace(secret=secrets.token_bytes(32)),
            registry=cluster.registry,
        )
        await stranger.start()
        try:
            endpoints = await both_known(cluster)
            for _ in range(4):
                assert await cluster.call("back.plain") == "plain"
            assert endpoints.ejected[stranger.instances[0].id].reason == UNREACHABLE
            assert [e.id for e in endpoints.pick_list()] == [live.instances[0].id]
        finally:
            await stranger.aclose()


class Patient(Service, name="patient"):
    @rpc(timeout=2.0)
    async def wait(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds


async def test_the_first_call_by_name_gets_the_methods_longer_timeout() -> None:
    # The default (0.2 s) is shorter than the method's own timeout (2 s): the
    # very first call, which opens the view, must get the method's.
    config = NodeConfig(default_timeout=0.2, timings=Timings(grace=0.0, drain=1.0))
    async with Cluster(config) as cluster:
        await cluster.add(Patient())
        assert await cluster.call("patient.wait", seconds=0.5) == 0.5


class SilentRegistry(MemoryRegistry):
    """A registry whose watches never answer (a stuck file, a partitioned server)."""

    async def watch(self, service: str | None = None) -> AsyncIterator[list[Instance]]:  # type: ignore[override]
        await asyncio.Event().wait()
        yield []


async def test_a_registry_that_never_answers_is_unavailable_not_a_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(endpoints_module, "FIRST_SNAPSHOT_TIMEOUT", 0.1)
    registry = SilentRegistry()
    caller = Caller(registry, secret=b"s", default_timeout=10.0)
    try:
        with pytest.raises(Unavailable, match="registry did not answer"):
            await caller.invoke("svc.m", {}, context=None)
    finally:
        await caller.aclose()
        await registry.aclose()


async def test_a_caller_closed_while_a_call_waits_for_the_registry_fails_it_at_once() -> None:
    registry = SilentRegistry()
    caller = Caller(registry, secret=b"s")
    call = asyncio.ensure_future(caller.invoke("svc.m", {}, context=None))
    await wait_for(lambda: bool(caller.directory._ready))
    await caller.aclose()
    with pytest.raises(Unavailable, match="closed"):
        await asyncio.wait_for(call, 1.0)
    await registry.aclose()

"""Nodes end to end: real loopback connections, the real pipeline, a memory registry."""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from flotilla import (
    Attempt,
    Context,
    DeadlineExceeded,
    Health,
    Internal,
    InvalidArgument,
    Node,
    NodeConfig,
    Service,
    Timings,
    Unavailable,
    Unimplemented,
    codec,
    rpc,
)
from flotilla.calls.endpoints import UNREACHABLE
from flotilla.errors import ConfigError
from flotilla.headers import Headers
from flotilla.pipeline import Handler
from flotilla.registry import Instance, MemoryRegistry
from flotilla.runtime.node import secret_id
from flotilla.testing import Cluster, FakeClock, wait_for
from flotilla.transport.frames import Call, encode_frame
from flotilla.transport.pool import ConnectionPool

# -- services -------------------------------------------------------------------------------


class Product(msgspec.Struct):
    id: int
    name: str
    tags: list[str] = []


class Catalog(Service, name="catalog"):
    @rpc
    async def get(self, id: int, name: str = "lamp") -> Product:
        return Product(id=id, name=name)

    @rpc
    async def tagged(self, id: int, tags: list[str]) -> Product:
        return Product(id=id, name="tagged", tags=tags)

    @rpc
    async def crash(self) -> None:
        raise RuntimeError("private detail")


class Slow(Service, name="slow"):
    """The end of a chain: sleeps, and remembers whether it was cancelled."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.runs = 0

    @rpc
    async def wait(self, seconds: float) -> str:
        self.runs += 1
        self.started.set()
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return "slept"


class Front(Service, name="front"):
    @rpc
    async def relay(self, ctx: Context, seconds: float) -> str:
        result: str = await ctx.call("slow.wait", seconds=seconds)
        return result

    @rpc
    async def product(self, ctx: Context, id: int) -> str:
        product = await ctx.client(Catalog).get(id)
        assert isinstance(product, Product)
        return product.name


_replica_ids = itertools.count()


class Replica(Service, name="replica"):
    """Answers with its own name; ``healthy`` drives its health check."""

    def __init__(self) -> None:
        self.id = f"r{next(_replica_ids)}"
        self.healthy = True

    @rpc
    async def who(self, pause: float = 0.0) -> str:
        if pause:
            await asyncio.sleep(pause)
        return self.id

    async def health(self) -> bool:
        return self.healthy


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with Cluster() as cluster:
        yield cluster


# -- calls ------------------------------------------------------------------------------------


async def test_call_by_name_returns_builtins(cluster: Cluster) -> None:
    await cluster.add(Catalog())
    assert await cluster.call("catalog.get", id=1) == {"id": 1, "name": "lamp", "tags": []}


async def test_unknown_method_is_unimplemented_listing_the_methods(cluster: Cluster) -> None:
    await cluster.add(Catalog())
    with pytest.raises(Unimplemented) as caught:
        await cluster.call("catalog.gets")
    assert caught.value.message == (
        "service 'catalog' has no method 'gets'; did you mean 'get'? "
        "(its methods: crash, get, tagged)"
    )


async def test_wrong_argument_type_names_the_field(cluster: Cluster) -> None:
    await cluster.add(Catalog())
    with pytest.raises(InvalidArgument, match=r"\$\.id"):
        await cluster.call("catalog.get", id="one")


async def test_missing_argument(cluster: Cluster) -> None:
    await cluster.add(Catalog())
    with pytest.raises(InvalidArgument, match="`id`"):
        await cluster.call("catalog.get")


async def test_unknown_extra_argument(cluster: Cluster) -> None:
    await cluster.add(Catalog())
    with pytest.raises(InvalidArgument, match="colour"):
        await cluster.call("catalog.get", id=1, colour="red")


async def test_bad_target(cluster: Cluster) -> None:
    with pytest.raises(InvalidArgument, match=r"service\.method"):
        await cluster.call("catalog")


async def test_plain_exception_is_internal_and_the_node_lives_on(cluster: Cluster) -> None:
    await cluster.add(Catalog())
    context = cluster.context()
    with pytest.raises(Internal) as caught:
        await context.call("catalog.crash")
    assert "private detail" not in caught.value.message
    # The request id crosses the wire, in the message and in the details.
    assert context.request_id in caught.value.message
    assert caught.value.details == {"request_id": context.request_id}
    assert (await cluster.call("catalog.get", id=2))["id"] == 2


async def test_typed_client_returns_the_annotated_struct(cluster: Cluster) -> None:
    await cluster.add(Catalog())
    product = await cluster.client(Catalog).get(id=7, name="desk")
    assert product == Product(id=7, name="desk")
    assert type(product) is Product


async def test_typed_client_takes_positional_args(cluster: Cluster) -> None:
    await cluster.add(Catalog())
    client = cluster.client(Catalog)
    assert await client.get(7) == Product(id=7, name="lamp")
    assert await client.tagged(8, ["a", "b"]) == Product(id=8, name="tagged", tags=["a", "b"])
    assert await client.get(9, name="chair") == Product(id=9, name="chair")


async def test_typed_client_refuses_too_many_args_and_unknown_methods(cluster: Cluster) -> None:
    client = cluster.client(Catalog)
    with pytest.raises(InvalidArgument, match="at most 2"):
        await client.get(1, "a", "b")
    with pytest.raises(AttributeError, match="nope"):
        _ = client.nope


async def test_typed_client_from_a_handler_context(cluster: Cluster) -> None:
    await cluster.add(Catalog())
    await cluster.add(Front())
    assert await cluster.call("front.product", id=3) == "lamp"


async def test_no_instance_is_unavailable_naming_the_service(cluster: Cluster) -> None:
    with pytest.raises(Unavailable, match="'ghost'"):
        await cluster.call("ghost.boo")


async def test_concurrent_first_calls_all_succeed(cluster: Cluster) -> None:
    # Many calls to a service the client has not called yet, all at once: none
    # may see the not-yet-filled view of the service and fail.
    await cluster.add(Catalog())
    results = await asyncio.gather(
        *(cluster.call("catalog.get", id=i) for i in range(10)), return_exceptions=True
    )
    assert [r["id"] if isinstance(r, dict) else r for r in results] == list(range(10))


class Refuser(Service, name="refuser"):
    @rpc
    async def refuse(self) -> None:
        raise Unavailable("not now")  # retryable, as its class is


class Forwarder(Service, name="forwarder"):
    @rpc
    async def forward(self, ctx: Context) -> None:
        await ctx.call("refuser.refuse")  # its error escapes the handler


async def test_an_onward_error_a_handler_lets_escape_is_not_retryable(cluster: Cluster) -> None:
    # The forwarder may have done work before its onward call failed: sending
    # the outer call again is not safe, whatever the inner error said.
    await cluster.add(Refuser())
    await cluster.add(Forwarder())
    with pytest.raises(Unavailable) as direct:
        await cluster.call("refuser.refuse")
    assert direct.value.retryable is True
    with pytest.raises(Unavailable, match="not now") as onward:
        await cluster.call("forwarder.forward")
    assert onward.value.retryable is False


# -- deadlines --------------------------------------------------------------------------------


async def test_deadline_propagates_down_a_chain(cluster: Cluster) -> None:
    # a -> b, where b sleeps past the caller's timeout: the caller hears of it
    # promptly, and b's handler is cancelled rather than left to run.
    slow = Slow()
    await cluster.add(slow)
    await cluster.add(Front())
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        await cluster.context(timeout=0.2).call("front.relay", seconds=5)
    # Not before the deadline (less the millisecond the wire may round off),
    # and well before b would have answered.
    assert 0.19 <= time.monotonic() - started < 4.0
    assert slow.started.is_set()
    async with asyncio.timeout(1.0):
        await slow.cancelled.wait()
    assert slow.runs == 1


async def test_a_direct_call_past_its_deadline_cancels_the_callee(cluster: Cluster) -> None:
    slow = Slow()
    await cluster.add(slow)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"slow\.wait"):
        await cluster.context(timeout=0.1).call("slow.wait", seconds=5)
    assert time.monotonic() - started < 4.0  # well before the callee would have answered
    async with asyncio.timeout(1.0):
        await slow.cancelled.wait()


class Probe(Service, name="probe"):
    """Records the context each call arrives with."""

    def __init__(self) -> None:
        self.contexts: list[Context] = []

    @rpc
    async def look(self, ctx: Context) -> str:
        self.contexts.append(ctx)
        return ctx.request_id


class Middle(Service, name="middle"):
    def __init__(self) -> None:
        self.contexts: list[Context] = []

    @rpc
    async def forward(self, ctx: Context) -> str:
        self.contexts.append(ctx)
        result: str = await ctx.call("probe.look")
        return result


async def test_request_id_caller_meta_and_deadline_travel_down_a_chain(cluster: Cluster) -> None:
    probe, middle = Probe(), Middle()
    await cluster.add(probe)
    await cluster.add(middle)
    root = cluster.context(timeout=5.0)
    root.set_meta(tenant="acme")
    began = time.monotonic()
    assert await root.call("middle.forward") == root.request_id
    took = time.monotonic() - began
    (at_middle,) = middle.contexts
    (at_probe,) = probe.contexts
    assert at_middle.request_id == at_probe.request_id == root.request_id
    assert (at_middle.caller, at_probe.caller) == ("", "middle")
    assert at_middle.meta == at_probe.meta == {"tenant": "acme"}
    # One time budget: each hop's deadline is the root's, give or take the
    # millisecond the wire rounds off and the time in transit (no more than
    # the whole call took, however slow a busy machine makes it).
    assert root.deadline is not None
    for ctx in (at_middle, at_probe):
        assert ctx.deadline is not None
        assert root.deadline - 0.002 <= ctx.deadline <= root.deadline + took


async def test_calls_from_outside_get_fresh_request_ids(cluster: Cluster) -> None:
    probe = Probe()
    await cluster.add(probe)
    ids = {await cluster.call("probe.look") for _ in range(5)}
    assert len(ids) == 5
    assert all(ctx.caller == "" and ctx.meta == {} for ctx in probe.contexts)


async def test_callee_skips_a_call_whose_deadline_passed(cluster: Cluster) -> None:
    # A Call that arrives with no time left (a deadline of 0 s left) is answered
    # deadline_exceeded and never reaches the method.  The client never sends
    # one (see the next test), so the frame is sent by hand.
    slow = Slow()
    (node,) = await cluster.add(slow)
    pool = ConnectionPool(cluster.config.secret or b"")
    try:
        connection = await pool.get(node.address)
        assert connection.writer is not None
        future: asyncio.Future[msgspec.Raw] = asyncio.get_running_loop().create_future()
        connection.pending[1000] = (future, None, "slow.wait")
        args = msgspec.Raw(codec.encode({"seconds": 0}))
        no_time_left = Headers(deadline=0.0)  # as it travels: the seconds left
        connection.writer.send(encode_frame(Call(1000, "slow.wait", args, no_time_left)))
        with pytest.raises(DeadlineExceeded, match="before it started"):
            await future
    finally:
        await pool.aclose()
    assert slow.runs == 0


async def test_caller_does_not_send_a_call_whose_deadline_passed(cluster: Cluster) -> None:
    slow = Slow()
    (node,) = await cluster.add(slow)
    pool = ConnectionPool(cluster.config.secret or b"")
    try:
        connection = await pool.get(node.address)
        passed = Headers(deadline=time.monotonic())
        with pytest.raises(DeadlineExceeded, match="before calling"):
            await connection.call("slow.wait", codec.encode({"seconds": 0}), passed)
        # The connection still works, and the refused call never ran.
        raw = await connection.call("slow.wait", codec.encode({"seconds": 0}), Headers())
        assert codec.decode(raw) == "slept"
    finally:
        await pool.aclose()
    assert slow.runs == 1


async def test_method_timeout_applies_when_the_caller_sets_none(cluster: Cluster) -> None:
    class Quick(Service, name="quick"):
        @rpc(timeout=0.1)
        async def stall(self) -> None:
            await asyncio.sleep(5)

    await cluster.add(Quick())
    with pytest.raises(DeadlineExceeded):
        await cluster.client(Quick).stall()


# -- lifecycle --------------------------------------------------------------------------------


class Recorder(Service):
    def __init__(self, log: list[str], fail_start: bool = False) -> None:
        self.log = log
        self.fail_start = fail_start

    async def on_start(self) -> None:
        if self.fail_start:
            raise RuntimeError(f"{self.name} cannot start")
        self.log.append(f"start {self.name}")

    async def on_stop(self) -> None:
        self.log.append(f"stop {self.name}")


class First(Recorder, name="first"):
    pass


class Second(Recorder, name="second"):
    pass


class Third(Recorder, name="third"):
    pass


FAST = NodeConfig(timings=Timings(ttl=1.0, heartbeat=0.2, grace=0.0, drain=1.0))


async def test_on_start_and_on_stop_in_order() -> None:
    log: list[str] = []
    registry = MemoryRegistry()
    node = Node(First(log), Second(log), Third(log), registry=registry, config=FAST)
    await node.start()
    assert log == ["start first", "start second", "start third"]
    assert sorted(i.service for i in await registry.list()) == ["first", "second", "third"]
    await node.aclose()
    assert log[3:] == ["stop third", "stop second", "stop first"]
    assert await registry.list() == []
    await node.aclose()  # idempotent
    assert len(log) == 6
    await registry.aclose()


async def test_failed_on_start_registers_nothing_and_raises() -> None:
    log: list[str] = []
    registry = MemoryRegistry()
    node = Node(
        First(log), Second(log, fail_start=True), Third(log), registry=registry, config=FAST
    )
    with pytest.raises(RuntimeError, match="second cannot start"):
        await node.start()
    assert await registry.list() == []
    # What started is stopped again; what did not start is not stopped.
    assert log == ["start first", "stop first"]
    await registry.aclose()


class RefusingRegistry(MemoryRegistry):
    """Registers anything but the service named ``refuse``."""

    def __init__(self, refuse: str) -> None:
        super().__init__()
        self.refuse = refuse

    async def register(self, instance: Instance, *, lease: str) -> None:
        if instance.service == self.refuse:
            raise ConnectionError("registry refused")
        await super().register(instance, lease=lease)


async def test_failed_registration_undoes_earlier_registrations() -> None:
    log: list[str] = []
    registry = RefusingRegistry("second")
    node = Node(First(log), Second(log), registry=registry, config=FAST)
    with pytest.raises(ConnectionError):
        await node.start()
    assert await registry.list() == []
    assert log == ["start first", "start second", "stop second", "stop first"]
    await registry.aclose()


def test_a_node_hosts_each_service_once() -> None:
    with pytest.raises(ValueError, match="once"):
        Node(First([]), First([]))


def test_timings_refuse_a_heartbeat_not_under_the_ttl() -> None:
    with pytest.raises(ConfigError, match="shorter"):
        Timings(ttl=1.0, heartbeat=1.0)


def test_timings_leave_room_for_the_health_checks_within_the_ttl() -> None:
    with pytest.raises(ConfigError, match="heartbeat \\+ health_timeout"):
        Timings(ttl=1.0, heartbeat=0.5, health_timeout=0.6)
    derived = Timings(ttl=0.5, heartbeat=0.1)  # the default health_timeout fits
    assert derived.check_timeout > 0
    assert derived.heartbeat + derived.check_timeout < derived.ttl


class SlowStart(Service, name="slow-start"):
    """``on_start`` waits for ``release``; ``log`` tells the order of events."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.log: list[str] = []

    async def on_start(self) -> None:
        self.log.append("start begins")
        self.entered.set()
        await self.release.wait()
        self.log.append("start ends")

    async def on_stop(self) -> None:
        self.log.append("stop")


async def test_stop_during_start_stops_once_started() -> None:
    # A signal while on_start runs: tearing down under the start would leave
    # half of it behind; the node finishes starting, then stops by itself.
    registry = MemoryRegistry()
    service = SlowStart()
    node = Node(service, registry=registry, config=FAST)
    starting = asyncio.create_task(node.start())
    try:
        await service.entered.wait()
        node.stop()
        await asyncio.sleep(0.02)
        assert service.log == ["start begins"]  # nothing stopped under the start
        service.release.set()
        await starting  # the start itself succeeds
        assert len(node.instances) == 1  # it did register
        async with asyncio.timeout(3.0):
            await node.wait_stopped()
        assert service.log == ["start begins", "start ends", "stop"]
        assert await registry.list() == []
        assert node.server is not None
        assert node.server._server is None
        host, _, port = node.server.address.rpartition(":")
        with pytest.raises(ConnectionRefusedError):  # nothing listens there any more
            await asyncio.open_connection(host, int(port))
    finally:
        service.release.set()
        await asyncio.gather(starting, return_exceptions=True)
        await node.aclose()
        await registry.aclose()


async def test_graceful_stop_deregisters_before_the_server_stops_accepting() -> None:
    events: list[str] = []
    registry = MemoryRegistry()
    node = Node(
        Catalog(), config=NodeConfig(timings=Timings(grace=0.2, drain=1.0)), registry=registry
    )
    await node.start()
    server = node.server
    assert server is not None
    address = server.address
    real_revoke = registry.revoke
    real_drain = server.drain

    async def revoke(lease: str) -> None:
        serving = server._server is not None and server._server.is_serving()
        events.append(f"revoke (serving={serving}, draining={server.draining})")
        await real_revoke(lease)

    async def drain(timeout: float) -> None:
        events.append(f"drain (registered={bool(await registry.list())})")
        await real_drain(timeout)

    registry.revoke = revoke  # type: ignore[method-assign]
    server.drain = drain  # type: ignore[method-assign]

    # A caller that knows the address can still reach the node during the grace period.
    pool = ConnectionPool(node.secret)
    watcher = asyncio.create_task(_call_when_gone(registry, pool, address))
    try:
        await node.aclose()
        assert await watcher == {"id": 1, "name": "lamp", "tags": []}
    finally:
        await pool.aclose()
        await registry.aclose()
    assert events == [
        "revoke (serving=True, draining=False)",
        "drain (registered=False)",
    ]


async def _call_when_gone(registry: MemoryRegistry, pool: ConnectionPool, address: str) -> Any:
    async for snapshot in registry.watch("catalog"):
        if not snapshot:
            break
    connection = await pool.get(address)
    return codec.decode(await connection.call("catalog.get", codec.encode({"id": 1}), Headers()))


async def test_stop_and_wait_stopped() -> None:
    registry = MemoryRegistry()
    log: list[str] = []
    node = Node(First(log), config=FAST, registry=registry)
    await node.start()
    assert node.server is not None
    host, _, port = node.server.address.rpartition(":")
    assert [i.service for i in await registry.list()] == ["first"]
    waiter = asyncio.create_task(node.wait_stopped())
    await asyncio.sleep(0)
    assert not waiter.done()  # stopped is not yet
    node.stop()
    async with asyncio.timeout(3.0):
        await waiter  # returns once every part stopped
    assert log == ["start first", "stop first"]  # the services part stopped
    assert await registry.list() == []  # the lease part revoked
    with pytest.raises(ConnectionRefusedError):  # the server part closed
        await asyncio.open_connection(host, int(port))
    node.stop()  # a second stop is harmless
    async with asyncio.timeout(1.0):
        await node.wait_stopped()
    assert log == ["start first", "stop first"]
    await registry.aclose()


class Holder(Service, name="holder"):
    """``hold`` waits until cancelled, then cleans up (taking a moment to)."""

    def __init__(self) -> None:
        self.holding = asyncio.Event()
        self.log: list[str] = []

    @rpc
    async def hold(self) -> None:
        self.holding.set()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.02)
            self.log.append("handler finally")

    async def on_stop(self) -> None:
        self.log.append("on_stop")


async def test_stop_waits_for_cancelled_handlers_before_on_stop() -> None:
    # A handler still running when the drain gives up is cancelled; its
    # clean-up may use what on_stop releases, so it must be done first.
    async with Cluster(NodeConfig(timings=Timings(grace=0.0, drain=0.05))) as cluster:
        holder = Holder()
        (node,) = await cluster.add(holder)
        call = asyncio.create_task(cluster.call("holder.hold"))
        await holder.holding.wait()
        await cluster.stop(node)
        assert holder.log == ["handler finally", "on_stop"]
        with pytest.raises(Unavailable):
            await call


async def test_a_pure_client_node_listens_on_nothing() -> None:
    registry = MemoryRegistry()
    async with Node(config=FAST, registry=registry) as node:
        assert node.instances == []
        assert node.server is None
        assert [part.name for part in node.parts] == ["caller", "events"]
        assert await registry.list() == []
        with pytest.raises(RuntimeError, match="does not listen"):
            _ = node.address
    await registry.aclose()


# -- health, crashes, balancing ------------------------------------------------------------


def available(cluster: Cluster, service: str) -> int:
    """How many endpoints of ``service`` the cluster's client would pick from now."""
    endpoints = cluster.client_node.caller.directory.get(service)
    return -1 if endpoints is None else len(endpoints.pick_list())


async def calls_per_replica(cluster: Cluster, n: int, **args: Any) -> collections.Counter[str]:
    """``n`` concurrent calls, counted by the replica that answered."""
    # One call first, alone: it opens the client's view of the service (the
    # concurrent-first-calls case is tested on its own above).
    await cluster.call("replica.who")
    results = await asyncio.gather(*(cluster.call("replica.who", **args) for _ in range(n)))
    return collections.Counter(results)


async def test_unhealthy_instance_stops_being_picked() -> None:
    timings = Timings(ttl=0.5, heartbeat=0.1, grace=0, drain=1.0)
    async with Cluster(NodeConfig(timings=timings)) as cluster:
        sick, well = (node.services[0] for node in await cluster.add(Replica, replicas=2))
        assert isinstance(sick, Replica)
        assert isinstance(well, Replica)
        assert set(await calls_per_replica(cluster, 40, pause=0.005)) == {sick.id, well.id}

        sick.healthy = False

        async with asyncio.timeout(3.0):  # the next heartbeat reports it
            async for snapshot in cluster.registry.watch("replica"):
                if {i.health for i in snapshot} == {Health.HEALTHY, Health.UNHEALTHY}:
                    break
        await wait_for(lambda: available(cluster, "replica") == 1)  # the client's view follows
        assert await calls_per_replica(cluster, 40, pause=0.005) == {well.id: 40}


class SlowCheck(Service):
    """Its health check takes ``seconds`` of ``clock``; ``checks`` counts the finished ones."""

    def __init__(self, seconds: float, clock: FakeClock) -> None:
        self.seconds = seconds
        self.clock = clock
        self.checks = 0

    async def health(self) -> bool:
        await self.clock.sleep(self.seconds)
        self.checks += 1
        return True


class SlowCheckA(SlowCheck, name="check-a"):
    pass


class SlowCheckB(SlowCheck, name="check-b"):
    pass


async def test_health_checks_run_together_so_slow_ones_keep_the_lease(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Each check takes about 0.6 of what a beat may spend (ttl - heartbeat): one
    # after the other they would outlast the ttl, together they fit with room.
    timings = Timings(ttl=0.5, heartbeat=0.02, grace=0.0, drain=1.0, health_timeout=0.45)
    seconds = 0.28
    assert timings.heartbeat + 2 * seconds > timings.ttl
    assert timings.heartbeat + seconds < timings.ttl - 0.15
    # On a fake clock: a busy machine cannot stretch a check past the ttl.
    clock = FakeClock()
    registry = MemoryRegistry(clock)
    a, b = SlowCheckA(seconds, clock), SlowCheckB(seconds, clock)
    node = Node(a, b, config=NodeConfig(timings=timings), registry=registry, clock=clock)
    starting = asyncio.create_task(node.start())  # its first checks wait for the clock too
    try:
        async with asyncio.timeout(10.0):
            while not starting.done():
                await clock.advance(0.01)
            await starting
            while min(a.checks, b.checks) < 4:  # several beats
                await clock.advance(0.01)
                live = await registry.list()
                assert [i.service for i in live] == ["check-a", "check-b"]
                assert {i.health for i in live} == {Health.HEALTHY}
    finally:
        await node.aclose()
        await registry.aclose()
    assert not [r for r in caplog.records if "was lost" in r.getMessage()]


class RecordingRegistry(MemoryRegistry):
    """Remembers every instance registered, in order."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.registered: list[Instance] = []

    async def register(self, instance: Instance, *, lease: str) -> None:
        self.registered.append(instance)
        await super().register(instance, lease=lease)


async def test_a_lost_lease_is_registered_again_with_the_health_just_checked() -> None:
    clock = FakeClock()
    registry = RecordingRegistry(clock)
    replica = Replica()
    node = Node(replica, registry=registry, clock=clock, config=FAST)
    await node.start()
    try:
        (instance,) = node.instances
        replica.healthy = False
        await registry.deregister(instance.id)  # the lease is gone behind the node's back
        async with asyncio.timeout(5.0):
            while len(registry.registered) < 2:  # a beat: check, heartbeat refused, register
                await clock.advance(FAST.timings.heartbeat)
        renewed = registry.registered[1]
        assert renewed.id == instance.id
        assert renewed.health is Health.UNHEALTHY  # not the HEALTHY it started with
        assert [i.health for i in await registry.list("replica")] == [Health.UNHEALTHY]
    finally:
        await node.aclose()
        await registry.aclose()


async def test_crashed_instance_leaves_when_its_lease_expires_on_the_fake_clock() -> None:
    clock = FakeClock()
    async with Cluster(clock=clock) as cluster:
        nodes = await cluster.add(Replica, replicas=2)
        crashed, survivor = nodes
        survivor_id = survivor.services[0].id  # type: ignore[attr-defined]
        assert len(await calls_per_replica(cluster, 40, pause=0.005)) == 2

        await cluster.crash(crashed)
        await asyncio.sleep(0.05)  # real time passes; the fake clock does not
        assert len(await cluster.registry.list("replica")) == 2  # lease still held

        await clock.advance(cluster.config.timings.ttl - 0.1)
        assert len(await cluster.registry.list("replica")) == 2  # not yet past the ttl

        await clock.advance(0.2)
        live = await cluster.registry.list("replica")
        assert [i.id for i in live] == [survivor.instances[0].id]  # renewed by heartbeats

        endpoints = cluster.client_node.caller.directory.get("replica")
        assert endpoints is not None
        await wait_for(lambda: len(endpoints.endpoints) == 1)
        assert await calls_per_replica(cluster, 20) == {survivor_id: 20}


async def test_calls_spread_over_two_replicas(cluster: Cluster) -> None:
    await cluster.add(Replica, replicas=2)
    counts = await calls_per_replica(cluster, 100, pause=0.01)
    assert len(counts) == 2
    assert min(counts.values()) >= 10, counts


async def test_round_robin_splits_evenly() -> None:
    async with Cluster(NodeConfig(strategy="round_robin")) as cluster:
        await cluster.add(Replica, replicas=2)
        await cluster.call("replica.who")  # opens the view
        counts = collections.Counter([await cluster.call("replica.who") for _ in range(20)])
        assert sorted(counts.values()) == [10, 10]


async def test_graceful_stop_of_a_replica_sends_calls_to_the_other(cluster: Cluster) -> None:
    first, second = await cluster.add(Replica, replicas=2)
    await calls_per_replica(cluster, 10)
    await cluster.stop(first)
    await wait_for(lambda: available(cluster, "replica") == 1)
    counts = await calls_per_replica(cluster, 20)
    assert counts == {second.services[0].id: 20}  # type: ignore[attr-defined]


# -- method options published, secrets -------------------------------------------------------


class Sleepy(Service, name="sleepy"):
    @rpc(timeout=0.3)
    async def slow(self) -> str:
        await asyncio.sleep(5.0)
        return "woke"

    @rpc(idempotent=True)
    async def quick(self) -> str:
        return "quick"


async def test_a_call_by_name_honours_the_published_method_timeout(cluster: Cluster) -> None:
    # No spec, no caller deadline: the caller knows of the 0.3 s timeout only
    # from the method table the node published, not the 10 s default.
    await cluster.add(Sleepy())
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        await cluster.call("sleepy.slow")
    assert 0.29 <= time.monotonic() - started < 4.0  # not the 10 s default, nor 5 s of sleep
    endpoints = cluster.client_node.caller.directory.get("sleepy")
    assert endpoints is not None
    assert endpoints.methods["slow"].timeout == 0.3
    assert endpoints.methods["quick"].idempotent is True
    assert endpoints.methods["quick"].timeout is None


async def test_instances_publish_pid_secret_id_and_methods(cluster: Cluster) -> None:
    (node,) = await cluster.add(Sleepy())
    (published,) = await cluster.registry.list("sleepy")
    assert published == node.instances[0]
    assert published.metadata["pid"] == str(os.getpid())
    assert published.metadata["secret_id"] == secret_id(node.secret)
    assert "replica" not in published.metadata  # set only by `flotilla run`'s processes
    assert [method.name for method in published.methods] == ["quick", "slow"]
    # Public: it neither is nor contains the secret.
    assert node.secret.hex() not in published.metadata["secret_id"]


async def test_a_replica_with_another_secret_takes_no_traffic(cluster: Cluster) -> None:
    # One replica of three started with another FLOTILLA_SECRET: its handshakes
    # fail.  Each failed attempt never left this process, so it is sent to a
    # good replica at once, and the bad endpoint is ejected as unreachable.
    good = await cluster.add(Replica, replicas=2)
    outsider = Replica()
    bad = Node(
        outsider,
        config=cluster.config.replace(secret=b"another secret, another system"),
        registry=cluster.registry,
    )
    await bad.start()
    try:
        await wait_for_instances(cluster, "replica", 3)
        bad_id = bad.instances[0].id
        assert bad.instances[0].metadata["secret_id"] != secret_id(cluster.config.secret or b"")
        await cluster.call("replica.who")  # opens the client's view of the service
        endpoints = cluster.client_node.caller.directory.get("replica")
        assert endpoints is not None
        assert len(endpoints.endpoints) == 3

        answered: collections.Counter[str] = collections.Counter()
        ejections = []
        for _ in range(10):
            batch = await asyncio.gather(*(cluster.call("replica.who") for _ in range(50)))
            answered.update(batch)
            ejections.append(endpoints.ejected.get(bad_id))
        good_ids = {node.services[0].id for node in good}  # type: ignore[attr-defined]
        assert set(answered) == good_ids
        assert sum(answered.values()) == 500
        # Ejected after the first failed handshake, well within the first batch.
        assert ejections[0] is not None
        assert ejections[0].reason == UNREACHABLE
    finally:
        await bad.aclose()


async def wait_for_instances(cluster: Cluster, service: str, count: int) -> None:
    async with asyncio.timeout(5.0):
        async for snapshot in cluster.registry.watch(service):
            if len(snapshot) == count:
                return


class AttemptLog:
    """An attempt-tier client layer: records the endpoint each attempt went to."""

    def __init__(self) -> None:
        self.addresses: list[str] = []

    async def __call__(self, attempt: Attempt, call_next: Handler[Attempt]) -> msgspec.Raw:
        self.addresses.append(attempt.endpoint.address)
        response: msgspec.Raw = await call_next(attempt)
        return response


@pytest.mark.parametrize("slot", ["breaker", "bulkhead", "metrics"])
async def test_a_node_takes_attempt_layers(slot: str) -> None:
    log = AttemptLog()
    async with Cluster(layers={slot: log}) as cluster:
        (node,) = await cluster.add(Catalog())
        assert (await cluster.call("catalog.get", id=1))["id"] == 1
        assert log.addresses == [node.address]


async def test_a_stopped_node_cannot_start_again() -> None:
    node = Node(Catalog(), config=FAST)
    await node.start()
    await node.aclose()
    with pytest.raises(RuntimeError, match="cannot start again"):
        await node.start()


async def test_a_cancelled_aclose_still_stops_every_part() -> None:
    registry = MemoryRegistry()
    node = Node(Catalog(), config=NodeConfig(timings=Timings(grace=0.3)), registry=registry)
    await node.start()
    closing = asyncio.ensure_future(node.aclose())
    await wait_for(lambda: node._teardown is not None)
    closing.cancel()  # during the grace period
    with pytest.raises(asyncio.CancelledError):
        await closing
    await asyncio.wait_for(node.wait_stopped(), 5.0)
    assert await registry.list() == []
    assert node.caller.pool._closed  # the last part stopped too
    await registry.aclose()

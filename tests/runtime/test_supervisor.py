"""The supervisor, with real processes on the embedded registry."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from flotilla import FailedPrecondition, Node, NodeConfig
from flotilla.registry import Instance, Registry, open_registry
from flotilla.runtime.gateway_spec import GatewaySpec
from flotilla.runtime.replica import ProcessState
from flotilla.runtime.settings import load_secret
from flotilla.runtime.supervisor import Supervisor
from flotilla.runtime.system_file import ServiceSpec, SystemSpec

ECHO = """
import asyncio, os, signal

from flotilla import Service, rpc


class Echo(Service, name="echo"):
    async def on_start(self) -> None:
        if os.environ.get("IGNORE_SIGTERM"):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)

    @rpc
    async def hello(self, name: str) -> dict:
        greeting = os.environ.get("GREETING", "hi")
        return {"text": f"{greeting}, {name}", "replica": os.environ["FLOTILLA_REPLICA"]}
"""


def system(tmp_path: Path, **service: object) -> SystemSpec:
    (tmp_path / "echo_service.py").write_text(ECHO)
    data_dir = tmp_path / ".flotilla"
    return SystemSpec(
        name="test",
        data_dir=data_dir,
        registry=f"sqlite://{data_dir / 'registry.db'}",
        services={"echo": ServiceSpec(class_="echo_service:Echo", **service)},  # type: ignore[arg-type]
    )


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    registry = open_registry(f"sqlite://{tmp_path / '.flotilla' / 'registry.db'}")
    yield registry
    await registry.aclose()


async def until(condition: Callable[[], Awaitable[bool] | bool], seconds: float = 20.0) -> None:
    """Poll ``condition`` (other processes' doings: there is no event to wait on)."""
    async with asyncio.timeout(seconds):
        while True:
            result = condition()
            if await result if inspect.isawaitable(result) else result:
                return
            await asyncio.sleep(0.05)


async def registered(registry: Registry, count: int) -> list[Instance]:
    instances: list[Instance] = []

    async def counted() -> bool:
        nonlocal instances
        instances = await registry.list("echo")
        return len(instances) == count

    await until(counted)
    return instances


def pid_of(instance: Instance) -> int:
    return int(instance.metadata["pid"])  # every node publishes its process id


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_replicas_register_and_a_killed_one_is_restarted(
    tmp_path: Path, registry: Registry
) -> None:
    lines: list[str] = []
    spec = system(tmp_path, replicas=2, env={"GREETING": "hello"})
    async with Supervisor(spec, tmp_path, output=lines.append) as supervisor:
        instances = await registered(registry, 2)
        pids = {process.pid for process in supervisor.status()}
        assert {pid_of(instance) for instance in instances} == pids
        # Each process publishes its replica number (FLOTILLA_REPLICA) beside its pid.
        assert sorted(instance.metadata["replica"] for instance in instances) == ["1", "2"]
        assert [p.state for p in supervisor.status()] == [ProcessState.RUNNING] * 2

        # The environment: the system's secret, the service's env, the replica number.
        secret = load_secret(spec.data_dir)
        async with Node(config=NodeConfig(registry=spec.registry, secret=secret)) as client:
            replies = [await client.call("echo.hello", name="ada") for _ in range(20)]
        assert {reply["text"] for reply in replies} == {"hello, ada"}
        assert {reply["replica"] for reply in replies} == {"1", "2"}

        victim = supervisor.status()[0]
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)

        def restarted() -> bool:
            now = supervisor.status()[0]
            return now.state is ProcessState.RUNNING and now.pid not in (None, victim.pid)

        await until(restarted)
        now = supervisor.status()[0]
        assert (now.restarts, now.exit_code) == (1, -signal.SIGKILL)
        assert supervisor.status()[1].restarts == 0

        async def reregistered() -> bool:
            return now.pid in {pid_of(i) for i in await registry.list("echo")}

        await until(reregistered)
        last_pids = [process.pid for process in supervisor.status()]

    assert [p.state for p in supervisor.status()] == [ProcessState.STOPPED] * 2
    assert not any(alive(pid) for pid in last_pids if pid is not None)
    # A graceful stop deregisters before the process exits: its rows are gone now.
    left = await registry.list()
    assert not {pid_of(instance) for instance in left} & set(last_pids)
    # The SIGKILLed victim never deregistered: its row goes when its lease runs out.

    async def empty() -> bool:
        return await registry.list() == []

    await until(empty)
    assert any(line.startswith("echo.1 | ") and "serving echo-" in line for line in lines)
    assert any(line.startswith("echo.2 | ") for line in lines)


async def test_a_child_ignoring_sigterm_is_killed_after_the_bound(
    tmp_path: Path, registry: Registry
) -> None:
    spec = system(tmp_path, env={"IGNORE_SIGTERM": "1"})
    supervisor = Supervisor(spec, tmp_path, stop_timeout=1.0, output=lambda line: None)
    runner = asyncio.create_task(supervisor.supervise())
    (instance,) = await registered(registry, 1)
    started = time.monotonic()
    await supervisor.stop()
    took = time.monotonic() - started
    await supervisor.stop()  # idempotent: returns at once
    await runner
    assert 1.0 <= took < 10.0  # the bound, then a kill; not the 15 s default
    (process,) = supervisor.status()
    assert (process.state, process.exit_code) == (ProcessState.STOPPED, -signal.SIGKILL)
    assert not alive(pid_of(instance))


async def test_cancelling_the_supervisor_stops_every_child(
    tmp_path: Path, registry: Registry
) -> None:
    supervisor = Supervisor(system(tmp_path, replicas=2), tmp_path, output=lambda line: None)
    runner = asyncio.create_task(supervisor.supervise())
    instances = await registered(registry, 2)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert [p.state for p in supervisor.status()] == [ProcessState.STOPPED] * 2
    assert not any(alive(pid_of(instance)) for instance in instances)


async def test_a_configuration_exit_is_not_restarted_and_fails_the_system(tmp_path: Path) -> None:
    spec = system(tmp_path)
    broken = SystemSpec(
        name=spec.name,
        data_dir=spec.data_dir,
        registry=spec.registry,
        services={"echo": ServiceSpec(class_="no_such_module:Echo", replicas=2)},
    )
    lines: list[str] = []
    async with Supervisor(broken, tmp_path, output=lines.append) as supervisor:
        async with asyncio.timeout(30):
            await supervisor.wait_stopped()  # every replica failed: nothing left to run
        assert supervisor.all_failed
        for process in supervisor.status():
            assert (process.state, process.exit_code) == (ProcessState.FAILED, 2)
            assert process.restarts == 0
    assert any("cannot import 'no_such_module'" in line for line in lines)


async def test_a_crash_is_restarted_while_a_configuration_exit_is_not(tmp_path: Path) -> None:
    (tmp_path / "crash.py").write_text("import sys\nsys.exit(3)\n")
    spec = system(tmp_path)
    mixed = SystemSpec(
        name=spec.name,
        data_dir=spec.data_dir,
        registry=spec.registry,
        services={
            "crashes": ServiceSpec(class_="crash:Nothing"),  # the import exits 3
            "broken": ServiceSpec(class_="echo_service:Missing"),
        },
    )
    async with Supervisor(mixed, tmp_path, output=lambda line: None) as supervisor:
        await until(lambda: supervisor.status()[0].restarts >= 1)
        await until(lambda: supervisor.status()[1].state is ProcessState.FAILED)
        assert supervisor.status()[0].exit_code == 3
        assert not supervisor.all_failed


async def test_a_second_supervisor_of_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    spec = system(tmp_path)
    async with Supervisor(spec, tmp_path, output=lambda line: None):
        second = Supervisor(spec, tmp_path, output=lambda line: None)
        with pytest.raises(FailedPrecondition, match=f"pid {os.getpid()}"):
            await second.__aenter__()
    # The first one released its claim on leaving: a new one may start.
    async with Supervisor(spec, tmp_path, output=lambda line: None) as third:
        await until(lambda: third.status()[0].state is ProcessState.RUNNING)


async def test_data_dir_and_its_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    spec = system(tmp_path)
    previous = os.umask(0)
    try:
        async with Supervisor(spec, tmp_path, output=lambda line: None):
            pass
    finally:
        os.umask(previous)
    assert stat.S_IMODE(spec.data_dir.stat().st_mode) == 0o700
    for name in ("secret", "supervisor.lock"):
        assert stat.S_IMODE((spec.data_dir / name).stat().st_mode) == 0o600, name


async def test_stop_before_run_and_run_after_stop_do_nothing(tmp_path: Path) -> None:
    supervisor = Supervisor(system(tmp_path), tmp_path, output=lambda line: None)
    await supervisor.stop()
    await supervisor.supervise()  # stopping was asked for already: starts nothing
    assert supervisor.status()[0].state is ProcessState.STOPPED
    assert supervisor.status()[0].pid is None
    with pytest.raises(RuntimeError):
        await supervisor.supervise()


def test_a_gateway_table_adds_the_gateway_process_with_its_url(tmp_path: Path) -> None:
    spec = system(tmp_path)
    spec = SystemSpec(
        name=spec.name,
        data_dir=spec.data_dir,
        registry=spec.registry,
        services=spec.services,
        gateway=GatewaySpec(routes="echo_routes:ROUTES", port=9001),
    )
    names = [(p.name, p.address) for p in Supervisor(spec, tmp_path, environ={}).status()]
    assert names == [("echo.1", None), ("gateway.1", "http://127.0.0.1:9001")]
    overridden = Supervisor(spec, tmp_path, environ={"FLOTILLA_GATEWAY_PORT": "8123"})
    assert overridden.status()[-1].address == "http://127.0.0.1:8123"

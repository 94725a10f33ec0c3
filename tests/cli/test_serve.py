"""``flotilla serve``: services that cannot be served are refused before anything starts."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from flotilla import Node, NodeConfig
from flotilla.registry import Instance, Registry, open_registry
from flotilla.runtime.node import secret_id
from flotilla.runtime.settings import Settings

if TYPE_CHECKING:  # fixtures' types; tests/cli/conftest.py provides the fixtures
    from conftest import Flotilla

BROKEN = """
from __future__ import annotations

from flotilla import Service, rpc


class Broken(Service, name="broken"):
    @rpc
    async def get(self, id: int) -> Missing:  # noqa: F821 - the mistake under test
        return None
"""


def test_an_annotation_naming_an_undefined_type_exits_2(flotilla: Flotilla, tmp_path: Path) -> None:
    (tmp_path / "broken_service.py").write_text(BROKEN)
    env = {**os.environ, "FLOTILLA_DATA_DIR": str(tmp_path / ".flotilla")}
    done = flotilla("serve", "broken_service:Broken", cwd=tmp_path, env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: service 'broken_service:Broken' cannot be served: "), (
        done.stderr
    )
    assert "Missing" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / ".flotilla").exists()  # refused before anything started


CHATTY = """
import logging

from flotilla import Service, rpc

log = logging.getLogger("chatty")


class Chatty(Service, name="chatty"):
    @rpc
    async def chatter(self, lines: int) -> int:
        for number in range(lines):
            log.info("line %d %s", number, "x" * 1000)
        return lines
"""


async def _registered(registry: Registry) -> list[Instance]:
    return await registry.list("chatty")


async def test_a_replica_whose_output_is_never_read_keeps_serving(tmp_path: Path) -> None:
    (tmp_path / "chatty_service.py").write_text(CHATTY)
    settings = Settings.from_env({"FLOTILLA_DATA_DIR": str(tmp_path / ".flotilla")})
    env = {**os.environ, "FLOTILLA_DATA_DIR": str(settings.data_dir)}
    # A pipe nobody reads, as a supervisor stopped with Ctrl-Z: it fills at 64 KiB.
    process = subprocess.Popen(  # noqa: ASYNC220 - started once, never waited on here
        [sys.executable, "-m", "flotilla", "serve", "chatty_service:Chatty"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    registry = open_registry(settings.registry)
    try:
        async with asyncio.timeout(60):  # a failing wait's bound; starting is slow when busy
            while not await _registered(registry):  # noqa: ASYNC110 - another process
                await asyncio.sleep(0.05)
        config = NodeConfig(registry=settings.registry, secret=settings.secret)
        async with Node(config=config) as client:
            # 2000 lines of 1 KB: thirty times what the pipe holds.
            assert await client.context(timeout=10).call("chatty.chatter", lines=2000) == 2000
            # Over several lease periods (1.5 s) it keeps heartbeating and answering.
            until = time.monotonic() + 5
            while time.monotonic() < until:
                assert await client.context(timeout=5).call("chatty.chatter", lines=50) == 50
                assert len(await _registered(registry)) == 1
                await asyncio.sleep(0.2)
    finally:
        await registry.aclose()
        process.kill()
        process.wait()
        assert process.stdout is not None
        process.stdout.close()


def test_a_replica_whose_supervisor_is_gone_does_not_start(
    flotilla: Flotilla, tmp_path: Path
) -> None:
    (tmp_path / "chatty_service.py").write_text(CHATTY)
    # Not the parent of `flotilla serve` (this test process is): as if its
    # supervisor had died between starting it and its check.
    env = {**os.environ, "FLOTILLA_DATA_DIR": str(tmp_path / ".flotilla")}
    env["FLOTILLA_PARENT_PID"] = "1"
    done = flotilla("serve", "chatty_service:Chatty", cwd=tmp_path, env=env)
    assert done.returncode == 1
    assert done.stderr == (
        "error: failed_precondition: the supervisor (pid 1) is gone; not starting\n"
    )
    assert not (tmp_path / ".flotilla").exists()  # refused before anything started


async def test_a_served_instance_publishes_its_pid_replica_and_secret_id(tmp_path: Path) -> None:
    (tmp_path / "chatty_service.py").write_text(CHATTY)
    settings = Settings.from_env({"FLOTILLA_DATA_DIR": str(tmp_path / ".flotilla")})
    env = {**os.environ, "FLOTILLA_DATA_DIR": str(settings.data_dir), "FLOTILLA_REPLICA": "3"}
    process = subprocess.Popen(  # noqa: ASYNC220 - started once, waited on in finally
        [sys.executable, "-m", "flotilla", "serve", "chatty_service:Chatty"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    registry = open_registry(settings.registry)
    try:
        async with asyncio.timeout(60):  # a failing wait's bound; starting is slow when busy
            while not (live := await _registered(registry)):
                assert process.poll() is None
                await asyncio.sleep(0.05)
        (instance,) = live
        assert instance.metadata == {
            "pid": str(process.pid),
            "replica": "3",
            "secret_id": secret_id(settings.secret),
        }
        assert [method.name for method in instance.methods] == ["chatter"]
    finally:
        await registry.aclose()
        process.terminate()
        process.wait()

"""A replica's own rules (its processes are tested through the supervisor)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from flotilla.runtime.replica import Backoff, ProcessState, ProcessStatus, Replica
from flotilla.runtime.system_file import ServiceSpec


def test_backoff_doubles_to_a_cap_and_resets_after_a_good_run() -> None:
    backoff = Backoff()
    assert [backoff.delay(uptime=0.1) for _ in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff.delay(uptime=31.0) == 0.5
    assert backoff.delay(uptime=1.0) == 1


def test_a_replica_before_its_first_start(tmp_path: Path) -> None:
    exited: list[int] = []
    replica = Replica(
        "greeter",
        ServiceSpec(class_="greeter:Greeter"),
        2,
        system_dir=tmp_path,
        call_environment={"FLOTILLA_STRATEGY": "p2c"},
        stopping=asyncio.Event(),
        stop_timeout=1.0,
        output=print,
        on_exit=exited.append,
    )
    assert replica.snapshot() == ProcessStatus(
        name="greeter.2",
        service="greeter",
        replica=2,
        state=ProcessState.STARTING,
        pid=None,
        restarts=0,
        exit_code=None,
    )
    env = replica._environment({"PYTHONPATH": "/elsewhere"})
    assert env["FLOTILLA_REPLICA"] == "2"
    assert env["FLOTILLA_STRATEGY"] == "p2c"
    assert env["PYTHONPATH"].split(os.pathsep) == [str(tmp_path), "/elsewhere"]

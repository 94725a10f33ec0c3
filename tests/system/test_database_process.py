"""A served process and its database: the data directory by default; an unreachable
database makes the instance unhealthy, never the process exit."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from flotilla.registry import Health, Instance, open_registry
from flotilla.runtime.settings import Settings

LEDGER = """
from flotilla import Database, Service, rpc


class Ledger(Service, name="ledger"):
    db = Database()

    @rpc
    async def ping(self) -> str:
        return "pong"
"""


async def serve_ledger(tmp_path: Path, **env: str) -> tuple[asyncio.subprocess.Process, Settings]:
    (tmp_path / "ledger_service.py").write_text(LEDGER)
    settings = Settings.from_env({"FLOTILLA_DATA_DIR": str(tmp_path / ".flotilla")})
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "flotilla", "serve", "ledger_service:Ledger"),
        cwd=tmp_path,
        env={**os.environ, "FLOTILLA_DATA_DIR": str(settings.data_dir), **env},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    return process, settings


async def registered(settings: Settings) -> Instance:
    registry = open_registry(settings.registry)
    try:
        async with asyncio.timeout(60):  # a failing wait's bound; starting is slow when busy
            while not (found := await registry.list("ledger")):  # noqa: ASYNC110 - a process
                await asyncio.sleep(0.05)
    finally:
        await registry.aclose()
    return found[0]


async def stop(process: asyncio.subprocess.Process) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = await asyncio.wait_for(process.communicate(), timeout=20)
    return output.decode()


async def test_by_default_the_database_is_a_file_in_the_data_directory(tmp_path: Path) -> None:
    process, settings = await serve_ledger(tmp_path)
    try:
        instance = await registered(settings)
    finally:
        output = await stop(process)
    assert instance.health is Health.HEALTHY, output
    assert (settings.data_dir / "ledger.db").exists()
    assert process.returncode == 0, output


async def test_an_unreachable_database_leaves_the_process_up_and_unhealthy(
    tmp_path: Path,
) -> None:
    down = "postgresql://app:hunter2@127.0.0.1:1/ledger"
    process, settings = await serve_ledger(tmp_path, FLOTILLA_DATABASE_URL_LEDGER=down)
    try:
        instance = await registered(settings)
        await asyncio.sleep(1.0)  # several attempts to connect, every beat unhealthy
        assert process.returncode is None  # still running
    finally:
        output = await stop(process)
    assert instance.health is Health.UNHEALTHY, output
    assert "postgresql+asyncpg://app:***@127.0.0.1:1/ledger" in output
    assert "hunter2" not in output
    assert process.returncode == 0, output  # a clean stop, not a crash

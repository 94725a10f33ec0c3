"""``flotilla ps``: the live instances, as a table or as JSON."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from flotilla.registry import Health, Instance, open_registry
from flotilla.runtime.node import secret_id
from flotilla.runtime.settings import load_secret

if TYPE_CHECKING:  # fixtures' types; tests/cli/conftest.py provides the fixtures
    from conftest import Flotilla, System


def test_json_lists_every_instance_with_its_health(flotilla: Flotilla, system: System) -> None:
    done = flotilla("ps", "--json", "--data-dir", str(system.data_dir))
    assert (done.returncode, done.stderr) == (0, "")
    listed = json.loads(done.stdout)
    expected = system.wait_registered(2)
    assert [item["id"] for item in listed] == [instance.id for instance in expected]
    for item in listed:
        fields = {"id", "service", "address", "version", "health", "metadata", "methods"}
        assert set(item) == fields
        assert (item["service"], item["health"]) == ("echo", "healthy")
        host, _, port = item["address"].rpartition(":")
        assert host == "127.0.0.1"
        assert port.isdigit()


def test_table_shows_every_instance(flotilla: Flotilla, system: System) -> None:
    done = flotilla("ps", "--data-dir", str(system.data_dir))
    assert done.returncode == 0
    header, *rows = done.stdout.strip().splitlines()
    assert header.split() == [
        "SERVICE",
        "INSTANCE",
        "ADDRESS",
        "VERSION",
        "HEALTH",
        "PID",
        "REPLICA",
        "BREAKERS",
    ]
    instances = {instance.id: instance for instance in system.wait_registered(2)}
    assert sorted(row.split()[1] for row in rows) == sorted(instances)
    for row in rows:
        service, id, _, _, health, pid, replica, breakers = row.split()
        assert (service, health) == ("echo", "healthy")
        metadata = instances[id].metadata
        assert (pid, replica) == (metadata.get("pid", "-"), metadata.get("replica", "-"))
        assert "ops" in metadata  # flotilla run gives every replica an ops port
        assert breakers == "closed"  # asked of each replica's ops port


def test_an_empty_registry(flotilla: Flotilla, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s" * 64)  # a system that runs nothing
    listed = flotilla("ps", "--json", "--data-dir", str(tmp_path))
    assert (listed.returncode, json.loads(listed.stdout)) == (0, [])
    table = flotilla("ps", "--data-dir", str(tmp_path))
    assert (table.returncode, table.stdout, table.stderr) == (0, "", "no live instances\n")


def test_no_system_at_the_data_dir(flotilla: Flotilla, tmp_path: Path) -> None:
    done = flotilla("ps", "--data-dir", str(tmp_path / "none"))
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: no flotilla system at {tmp_path / 'none'}")


def test_a_row_whose_local_process_is_gone_shows_dead(flotilla: Flotilla, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s" * 64)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: its pid names no process now
    rows = [
        Instance(
            id="gone",
            service="echo",
            address="127.0.0.1:1",
            health=Health.HEALTHY,
            metadata={"pid": str(gone.pid), "replica": "2"},
        ),
        Instance(
            id="here",
            service="echo",
            address="127.0.0.1:2",
            health=Health.HEALTHY,
            metadata={"pid": str(os.getpid())},
        ),
        # Another machine's pid says nothing about this one's processes.
        Instance(
            id="remote",
            service="echo",
            address="10.1.2.3:1",
            health=Health.HEALTHY,
            metadata={"pid": str(gone.pid)},
        ),
    ]
    asyncio.run(_register(tmp_path, rows))
    done = flotilla("ps", "--data-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    cells = {row.split()[1]: row.split() for row in done.stdout.strip().splitlines()[1:]}
    assert cells["gone"][4:] == ["dead", str(gone.pid), "2", "-"]  # no ops port: "-"
    assert cells["here"][4:] == ["healthy", str(os.getpid()), "-", "-"]
    assert cells["remote"][4] == "healthy"


def test_a_row_started_with_another_secret_shows_wrong_secret(
    flotilla: Flotilla, tmp_path: Path
) -> None:
    # Its handshakes fail, so it takes no calls, though it reports itself healthy.
    (tmp_path / "secret").write_text("s" * 64)
    ours = secret_id(load_secret(tmp_path))
    here = str(os.getpid())

    def row(id: str, **metadata: str) -> Instance:
        address = f"127.0.0.1:{len(id)}"
        return Instance(
            id=id,
            service="echo",
            address=address,
            health=Health.HEALTHY,
            metadata={"pid": here, **metadata},
        )

    rows = [
        row("same", secret_id=ours),
        row("other", secret_id=secret_id(b"another secret")),
        row("older"),  # publishes no secret id: not judged
    ]
    asyncio.run(_register(tmp_path, rows))
    done = flotilla("ps", "--data-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    header, *lines = done.stdout.strip().splitlines()
    health_at = header.index("HEALTH")
    health = {line.split()[1]: line[health_at:].split("  ")[0].strip() for line in lines}
    assert health == {"same": "healthy", "other": "wrong secret", "older": "healthy"}


async def _register(data_dir: Path, instances: list[Instance]) -> None:
    registry = open_registry(f"sqlite://{data_dir / 'registry.db'}")
    try:
        lease = await registry.grant(120)
        for instance in instances:
            await registry.register(instance, lease=lease)
    finally:
        await registry.aclose()


def test_an_ops_port_that_does_not_answer_shows_a_question_mark(
    flotilla: Flotilla, tmp_path: Path
) -> None:
    (tmp_path / "secret").write_text("s" * 64)
    rows = [
        Instance(
            id="mute",
            service="echo",
            address="127.0.0.1:3",
            health=Health.HEALTHY,
            metadata={"pid": str(os.getpid()), "ops": "127.0.0.1:1"},  # nothing listens there
        )
    ]
    asyncio.run(_register(tmp_path, rows))
    done = flotilla("ps", "--data-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    header, line = done.stdout.strip().splitlines()
    assert header.split()[-1] == "BREAKERS"
    assert line.split()[-1] == "?"

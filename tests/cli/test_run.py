"""``flotilla run``: a whole system from its flotilla.toml, as real processes, stopped cleanly."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import pytest
from rich.console import Console

from flotilla.cli.status_view import instance_pid, status_table
from flotilla.registry import Health, Instance
from flotilla.runtime.replica import ProcessState, ProcessStatus

if TYPE_CHECKING:  # fixtures' types; tests/cli/conftest.py provides the fixtures
    from conftest import Flotilla, System


def started_pids(output: str) -> dict[str, int]:
    return {name: int(pid) for name, pid in re.findall(r"started (\S+) \(pid (\d+)\)", output)}


def pid_of(instance: Instance) -> int:
    """The pid its node published (every node does)."""
    return int(instance.metadata["pid"])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_every_replica_runs_registers_and_answers(flotilla: Flotilla, system: System) -> None:
    pids = started_pids(system.output())
    assert set(pids) == {"echo.1", "echo.2"}
    instances = system.wait_registered(2)
    assert {pid_of(instance) for instance in instances} == set(pids.values())

    # Child output comes through, one prefixed line at a time.
    def serving(output: str) -> bool:
        lines = output.splitlines()
        return all(
            any(line.startswith(f"{name} | ") and "serving echo-" in line for line in lines)
            for name in pids
        )

    system.wait_output(serving)

    done = flotilla("call", "--data-dir", str(system.data_dir), "echo.hello", '{"name": "Ada"}')
    assert done.returncode == 0
    assert json.loads(done.stdout)["text"] == "Hello, Ada"  # the service's env from the file
    listed = flotilla("ps", "--json", "--data-dir", str(system.data_dir))
    assert sorted(item["id"] for item in json.loads(listed.stdout)) == sorted(
        instance.id for instance in instances
    )


def test_for_seconds_stops_by_itself_and_leaves_nothing(flotilla: Flotilla, tmp_path: Path) -> None:
    # The window may close before the replica serves (a busy machine starts
    # it slowly): what --for promises holds either way.  That a serving
    # replica drains on the stop is the signal test's (the same stop path).
    running = flotilla.start(flotilla.write_system(tmp_path, replicas=1), "--for", "1.5")
    assert running.process.wait(timeout=120) == 0  # start-up included: slow when busy
    output = running.output()
    assert "stopping system cli-test" in output
    assert "stopped system cli-test" in output
    assert "Traceback" not in output
    assert set(started_pids(output)) == {"echo.1"}
    assert not any(alive(pid) for pid in started_pids(output).values())
    assert running.wait_registered(0) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_every_process_gracefully(
    flotilla: Flotilla, tmp_path: Path, signum: signal.Signals
) -> None:
    running = flotilla.start(flotilla.write_system(tmp_path, replicas=1), "--for", "120")
    running.wait_registered(1)
    assert running.stop(signum) == 0
    output = running.output()
    assert "stopping system cli-test" in output
    assert re.search(r"echo\.1 \| .*stopped echo-", output), output  # it drained
    assert "Traceback" not in output
    assert not any(alive(pid) for pid in started_pids(output).values())
    assert running.wait_registered(0) == []


def test_a_malformed_system_file_starts_nothing(flotilla: Flotilla, tmp_path: Path) -> None:
    flotilla.write_system(tmp_path)
    path = tmp_path / "flotilla.toml"
    path.write_text(path.read_text().replace("replicas = 2", 'replicas = "2"'))
    done = flotilla("run", "--no-status", "--for", "5", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.endswith(
        f"error: {path}:6: services.echo.replicas: Expected `int`, got `str`\n"
    )
    assert "started" not in done.stderr
    assert not (tmp_path / ".flotilla").exists()


def test_a_missing_system_file_is_named(flotilla: Flotilla, tmp_path: Path) -> None:
    done = flotilla("run", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.endswith(
        f"error: {tmp_path / 'flotilla.toml'}: no such file"
        " (a system is described by a flotilla.toml)\n"
    )


def test_without_a_terminal_the_status_table_becomes_log_lines(
    flotilla: Flotilla, tmp_path: Path
) -> None:
    flotilla.write_system(tmp_path, replicas=1)
    done = flotilla("run", "--for", "0", str(tmp_path))  # no --no-status; stdout is a pipe
    assert (done.returncode, done.stdout) == (0, "")
    assert "started echo.1" in done.stderr


def test_status_table_joins_instances_with_their_processes() -> None:
    processes = [
        ProcessStatus(
            name="echo.1",
            service="echo",
            replica=1,
            state=ProcessState.RUNNING,
            pid=101,
            restarts=2,
            exit_code=-9,
        ),
        ProcessStatus(
            name="echo.2",
            service="echo",
            replica=2,
            state=ProcessState.RESTARTING,
            pid=None,
            restarts=5,
            exit_code=1,
        ),
    ]
    instances = [
        Instance(
            id="echo-a",
            service="echo",
            address="127.0.0.1:4000",
            health=Health.HEALTHY,
            metadata={"pid": "101", "replica": "1"},
        ),
        # echo.1's previous process, killed: its lease has not run out yet.
        Instance(
            id="echo-b",
            service="echo",
            address="127.0.0.1:4001",
            health=Health.HEALTHY,
            metadata={"pid": "99", "replica": "1"},
        ),
        Instance(id="elsewhere", service="other", address="10.0.0.1:1", health=Health.UNKNOWN),
    ]
    out = io.StringIO()
    instances[0] = msgspec.structs.replace(
        instances[0], metadata={**instances[0].metadata, "ops": "127.0.0.1:5000"}
    )
    breakers = {"127.0.0.1:5000": "2 open"}
    table = status_table(
        "system t", processes, instances, exited_pids=frozenset({99}), breakers=breakers
    )
    Console(file=out, width=200).print(table)
    text = out.getvalue()
    assert "system t" in text
    rows = {cells[1]: cells for cells in map(_cells, text.splitlines()) if cells}
    assert rows["echo-a"] == [
        *("echo", "echo-a", "127.0.0.1:4000", "healthy", "echo.1", "101", "2", "2 open")
    ]
    assert rows["echo-b"] == ["echo", "echo-b", "127.0.0.1:4001", "dead", "-", "99", "-", "-"]
    assert rows["elsewhere"] == ["other", "elsewhere", "10.0.0.1:1", "unknown", "-", "-", "-", "-"]
    assert rows["-"] == ["echo", "-", "-", "restarting (exit 1)", "echo.2", "-", "5", "-"]
    assert len(rows) == 4


def _cells(line: str) -> list[str]:
    """The cells of one body row of a rich table (``│ a │ b │``), or [] for other lines."""
    cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
    return cells if len(cells) == 8 and cells[0] != "SERVICE" else []


def test_instance_pid_reads_the_metadata_not_the_id() -> None:
    def pid(id: str, **metadata: str) -> int | None:
        return instance_pid(Instance(id=id, service="s", address="h:1", metadata=metadata))

    assert pid("custom", pid="4242") == 4242
    assert pid("my-service-4242-a1b2c3") is None  # an id is a name, not a record
    assert pid("x", pid="") is None
    assert pid("x", pid="12a") is None
    assert pid("x", pid="²") is None


def test_killing_the_supervisor_stops_every_replica(flotilla: Flotilla, tmp_path: Path) -> None:
    running = flotilla.start(flotilla.write_system(tmp_path, replicas=2), "--for", "120")
    running.wait_registered(2)
    pids = started_pids(running.output()).values()
    running.process.kill()  # SIGKILL: no chance to stop anything itself
    running.process.wait()
    # Each replica drains and deregisters on its own (SIGTERM from the kernel),
    # which takes a moment: poll for it (the supervisor is gone, as it should be).
    assert running.wait_registered(0, running=False) == []
    deadline = time.monotonic() + 60
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "replicas outlived their supervisor"
        time.sleep(0.05)


def test_sighup_is_a_graceful_stop(flotilla: Flotilla, tmp_path: Path) -> None:
    running = flotilla.start(flotilla.write_system(tmp_path, replicas=1), "--for", "120")
    running.wait_registered(1)
    assert running.stop(signal.SIGHUP) == 0
    assert "stopping system cli-test" in running.output()
    assert running.wait_registered(0) == []


def test_a_second_run_of_the_same_system_is_refused(flotilla: Flotilla, system: System) -> None:
    done = flotilla("run", "--no-status", "--for", "5", str(system.directory))
    assert done.returncode == 2
    assert f"already running under flotilla run (pid {system.process.pid})" in done.stderr
    assert "started" not in done.stderr
    assert len(system.wait_registered(2)) == 2  # the first one is untouched


BAD_CLASSES = """\
[system]
name = "bad"

[services.echo]
class = "echo_service:Echo"

[services.missing_module]
class = "no_such_module:X"

[services.missing_class]
class = "echo_service:Nope"

[services.not_a_service]
class = "echo_service:asyncio"

[services.inventory]
class = "echo_service:Echo"
"""


def test_every_class_is_checked_before_anything_starts(flotilla: Flotilla, tmp_path: Path) -> None:
    flotilla.write_system(tmp_path)
    (tmp_path / "flotilla.toml").write_text(BAD_CLASSES)
    done = flotilla("run", "--no-status", "--for", "5", str(tmp_path))
    assert done.returncode == 2, done.stderr
    path = tmp_path / "flotilla.toml"
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors[0].startswith(f"error: {path}:8: services.missing_module.class: cannot import")
    assert errors[1] == (
        f"error: {path}:11: services.missing_class.class: "
        "module 'echo_service' has no attribute 'Nope'"
    )
    assert errors[2] == (
        f"error: {path}:14: services.not_a_service.class: "
        "'echo_service:asyncio' is a module, not a flotilla.Service subclass"
    )
    assert errors[3].startswith(
        f"error: {path}:17: services.inventory.class: 'echo_service:Echo' is the service 'echo'"
    )
    assert len(errors) == 4
    assert "started" not in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / ".flotilla").exists()


def test_an_unknown_registry_scheme_is_refused_at_its_line(
    flotilla: Flotilla, tmp_path: Path
) -> None:
    flotilla.write_system(tmp_path)
    path = tmp_path / "flotilla.toml"
    path.write_text(path.read_text().replace('name = "cli-test"', 'registry = "bogus://x"'))
    done = flotilla("run", "--no-status", "--for", "5", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.startswith(
        f"error: {path}:2: system.registry: unknown registry URL 'bogus://x'"
    )
    check = flotilla("check", str(tmp_path))  # the same check, starting nothing
    assert (check.returncode, check.stderr) == (2, done.stderr)


def test_an_unknown_events_scheme_is_refused_at_its_line(
    flotilla: Flotilla, tmp_path: Path
) -> None:
    flotilla.write_system(tmp_path)
    path = tmp_path / "flotilla.toml"
    path.write_text(path.read_text().replace('name = "cli-test"', 'events = "kafka://x"'))
    done = flotilla("check", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {path}:2: system.events: unknown events URL 'kafka://x'")


def test_a_registry_given_by_option_is_checked_naming_the_option(
    flotilla: Flotilla, tmp_path: Path
) -> None:
    flotilla.write_system(tmp_path)
    done = flotilla("run", "--no-status", "--for", "5", "--registry", "bogus://x", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.startswith("error: --registry: unknown registry URL 'bogus://x'")
    assert "started" not in done.stderr


def test_a_database_in_memory_for_the_whole_system_is_refused(
    flotilla: Flotilla, tmp_path: Path
) -> None:
    flotilla.write_system(tmp_path)
    done = flotilla("run", "--no-status", "--for", "5", "--database", "sqlite://", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.startswith("error: --database: a system's database cannot be SQLite")


def test_check_says_ok_for_a_good_system(flotilla: Flotilla, tmp_path: Path) -> None:
    flotilla.write_system(tmp_path)
    done = flotilla("check", str(tmp_path))
    assert (done.returncode, done.stdout) == (0, f"{tmp_path / 'flotilla.toml'}: ok (1 services)\n")


def test_when_every_replica_fails_on_its_configuration_run_exits_2(
    flotilla: Flotilla, tmp_path: Path
) -> None:
    # The class is fine; the environment the replicas get is not.
    flotilla.write_system(tmp_path, replicas=2)
    path = tmp_path / "flotilla.toml"
    path.write_text(path.read_text().replace('GREETING = "Hello"', 'FLOTILLA_PORT = "http"'))
    done = flotilla("run", "--no-status", "--for", "60", str(tmp_path))
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("not restarting it") == 2
    assert "echo.1 | error: FLOTILLA_PORT='http' is not a port number" in done.stderr
    assert done.stderr.endswith(
        "error: every process of system cli-test exited with a configuration mistake "
        "(see their output above)\n"
    )


def test_data_dir_option_overrides_the_file(flotilla: Flotilla, tmp_path: Path) -> None:
    system_dir = tmp_path / "sys"
    system_dir.mkdir()
    flotilla.write_system(system_dir, replicas=1)
    data_dir = tmp_path / "elsewhere"
    options = ("--no-status", "--for", "0", "--data-dir", str(data_dir))
    done = flotilla("run", *options, str(system_dir))
    assert done.returncode == 0, done.stderr
    assert (data_dir / "secret").is_file()
    assert not (system_dir / ".flotilla").exists()


def test_data_dir_variable_overrides_the_file(flotilla: Flotilla, tmp_path: Path) -> None:
    system_dir = tmp_path / "sys"
    system_dir.mkdir()
    flotilla.write_system(system_dir, replicas=1)
    data_dir = tmp_path / "from-env"
    env = {**os.environ, "FLOTILLA_DATA_DIR": str(data_dir)}
    done = flotilla("run", "--no-status", "--for", "0", str(system_dir), env=env)
    assert done.returncode == 0, done.stderr
    assert (data_dir / "secret").is_file()
    assert not (system_dir / ".flotilla").exists()


def test_data_dir_option_beats_the_variable(flotilla: Flotilla, tmp_path: Path) -> None:
    system_dir = tmp_path / "sys"
    system_dir.mkdir()
    flotilla.write_system(system_dir, replicas=1)
    env = {**os.environ, "FLOTILLA_DATA_DIR": str(tmp_path / "from-env")}
    options = ("--no-status", "--for", "0", "--data-dir", str(tmp_path / "option"))
    done = flotilla("run", *options, str(system_dir), env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "option" / "secret").is_file()
    assert not (tmp_path / "from-env").exists()


def test_a_policy_for_a_method_the_service_lacks_is_refused_at_its_line(
    flotilla: Flotilla, tmp_path: Path
) -> None:
    flotilla.write_system(tmp_path)
    path = tmp_path / "flotilla.toml"
    policies = (
        "\n[resilience.services.echo.methods.hello]\nretry = { max_attempts = 1 }\n"
        "\n[resilience.services.echo.methods.helo]\nretry = { max_attempts = 1 }\n"
    )
    path.write_text(path.read_text() + policies)
    line = path.read_text().splitlines().index("[resilience.services.echo.methods.helo]") + 1
    done = flotilla("check", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr == (
        f"error: {path}:{line}: resilience.services.echo.methods.helo: echo has no @rpc"
        " method 'helo' (its methods: hello, ping, slow)\n"
    )


def test_a_bad_resilience_value_starts_nothing(flotilla: Flotilla, tmp_path: Path) -> None:
    flotilla.write_system(tmp_path)
    path = tmp_path / "flotilla.toml"
    path.write_text(path.read_text() + "\n[resilience]\nbreaker = { window = 0 }\n")
    done = flotilla("run", "--no-status", "--for", "5", str(tmp_path))
    assert done.returncode == 2
    line = len(path.read_text().splitlines())
    assert done.stderr.startswith(
        f"error: {path}:{line}: resilience.breaker.window: window must be positive, not 0"
    )
    assert "started" not in done.stderr


def test_the_gateway_process_shows_its_url_in_the_status_table() -> None:
    gateway = ProcessStatus(
        name="gateway.1",
        service="gateway",
        replica=1,
        state=ProcessState.RUNNING,
        pid=7,
        restarts=0,
        exit_code=None,
        address="http://127.0.0.1:8080",
    )
    out = io.StringIO()
    Console(file=out, width=200).print(status_table("t", [gateway], []))
    rows = [cells for cells in map(_cells, out.getvalue().splitlines()) if cells]
    assert ["gateway", "-", "http://127.0.0.1:8080", "running", "gateway.1", "7", "0", "-"] in rows

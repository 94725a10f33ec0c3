"""The CLI, run as real processes (``python -m flotilla ...``) against a system in a temp dir."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flotilla.registry import Instance, open_registry

ECHO = """
import asyncio, os

from flotilla import Service, rpc


class Echo(Service, name="echo"):
    @rpc
    async def hello(self, name: str) -> dict[str, str]:
        greeting = os.environ["GREETING"]
        return {"text": f"{greeting}, {name}", "replica": os.environ["FLOTILLA_REPLICA"]}

    @rpc
    async def ping(self) -> str:
        return "pong"

    @rpc(timeout=1)
    async def slow(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
"""

SYSTEM_FILE = """\
[system]
name = "cli-test"

[services.echo]
class = "echo_service:Echo"
replicas = {replicas}
env = {{ GREETING = "Hello" }}
"""


class System:
    """A ``flotilla run`` process and the directory of its system."""

    def __init__(self, directory: Path, process: subprocess.Popen[bytes], log: Path) -> None:
        self.directory = directory
        self.data_dir = directory / ".flotilla"
        self.process = process
        self.log = log

    @property
    def registry(self) -> str:
        return f"sqlite://{self.data_dir / 'registry.db'}"

    def output(self) -> str:
        """Everything the run process wrote to stderr (its log and its children's output)."""
        return self.log.read_text()

    def wait_output(self, done: Callable[[str], bool], timeout: float = 60) -> str:
        """Poll the output until ``done(output)``; returns it.

        A child's lines reach the output through the supervisor's pipe, a moment
        after what the child did (registering, say) can be seen elsewhere.
        """
        deadline = time.monotonic() + timeout
        while not done(output := self.output()):
            assert time.monotonic() < deadline, output
            time.sleep(0.05)
        return output

    def wait_registered(
        self, count: int, timeout: float = 60, *, running: bool = True
    ) -> list[Instance]:
        """Poll the registry until exactly ``count`` instances are live; returns them.

        With ``running`` (the default), the run process exiting meanwhile fails the wait.
        ``timeout`` only bounds a failing wait: a busy machine may take tens of
        seconds to start a system (a check-class process, then every replica).
        """

        async def poll() -> list[Instance]:
            registry = open_registry(self.registry)
            try:
                async with asyncio.timeout(timeout):
                    while len(live := await registry.list()) != count:
                        assert not running or self.process.poll() is None, self.output()
                        await asyncio.sleep(0.05)
                return live
            finally:
                await registry.aclose()

        return asyncio.run(poll())

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Signal the run process and wait for it; returns its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


class Flotilla:
    """Runs the ``flotilla`` command in a process of its own, as a user would."""

    command = (sys.executable, "-m", "flotilla")

    def __call__(
        self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.command, *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=cwd,
            env=env,
            check=False,
        )

    def write_system(self, directory: Path, replicas: int = 2) -> Path:
        (directory / "echo_service.py").write_text(ECHO)
        (directory / "flotilla.toml").write_text(SYSTEM_FILE.format(replicas=replicas))
        return directory

    def start(self, directory: Path, *options: str) -> System:
        """``flotilla run --no-status OPTIONS DIRECTORY``; its stderr goes to a file.

        A file, not a pipe: nobody reads a pipe while the system runs, and a full
        one would block the system.
        """
        log = directory.parent / f"{directory.name}.log"
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [*self.command, "run", "--no-status", *options, str(directory)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        return System(directory, process, log)


@pytest.fixture(scope="session")
def flotilla() -> Flotilla:
    return Flotilla()


@pytest.fixture(scope="module")
def system(flotilla: Flotilla, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """One running system (two replicas of ``echo``) per test module."""
    running = flotilla.start(
        flotilla.write_system(tmp_path_factory.mktemp("system")), "--for", "120"
    )
    try:
        running.wait_registered(2)
        yield running
    finally:
        running.stop()

"""``flotilla call``: a result as JSON on stdout; mistakes as ``error: ...`` and an exit code."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # fixtures' types; tests/cli/conftest.py provides the fixtures
    from conftest import Flotilla, System


def test_prints_the_result_as_indented_json(flotilla: Flotilla, system: System) -> None:
    done = flotilla("call", "--data-dir", str(system.data_dir), "echo.hello", '{"name": "Ada"}')
    assert (done.returncode, done.stderr) == (0, "")
    result = json.loads(done.stdout)
    assert result["text"] == "Hello, Ada"
    assert result["replica"] in {"1", "2"}
    assert done.stdout.startswith('{\n  "')  # pretty, for people


def test_arguments_default_to_none_and_data_dir_to_the_environment(
    flotilla: Flotilla, system: System, tmp_path: Path
) -> None:
    env = {**os.environ, "FLOTILLA_DATA_DIR": str(system.data_dir)}
    done = flotilla("call", "echo.ping", cwd=tmp_path, env=env)
    assert (done.returncode, json.loads(done.stdout)) == (0, "pong")


def test_data_dir_defaults_to_dot_flotilla(flotilla: Flotilla, system: System) -> None:
    done = flotilla("call", "echo.ping", cwd=system.directory)
    assert (done.returncode, json.loads(done.stdout)) == (0, "pong")


def test_malformed_json_exits_2_before_calling(flotilla: Flotilla, system: System) -> None:
    done = flotilla("call", "--data-dir", str(system.data_dir), "echo.hello", '{"name": ')
    assert done.returncode == 2
    assert done.stderr.startswith("error: malformed JSON: ")
    assert done.stdout == ""


def test_arguments_must_be_an_object(flotilla: Flotilla, system: System) -> None:
    done = flotilla("call", "--data-dir", str(system.data_dir), "echo.hello", '["Ada"]')
    assert done.returncode == 2
    assert done.stderr == ("error: malformed JSON: the arguments must be an object, not an array\n")


def test_a_target_without_a_method_is_a_usage_mistake(flotilla: Flotilla, system: System) -> None:
    done = flotilla("call", "--data-dir", str(system.data_dir), "echo")
    assert (done.returncode, done.stderr) == (
        2,
        "error: call target 'echo' is not 'service.method'\n",
    )


def test_errors_of_the_call_exit_1_with_their_code(flotilla: Flotilla, system: System) -> None:
    data_dir = str(system.data_dir)
    unknown_method = flotilla("call", "--data-dir", data_dir, "echo.nope")
    assert unknown_method.returncode == 1
    assert unknown_method.stderr == (
        "error: unimplemented: service 'echo' has no method 'nope' "
        "(its methods: hello, ping, slow)\n"
    )
    near_miss = flotilla("call", "--data-dir", data_dir, "echo.pong")
    assert near_miss.returncode == 1
    assert "did you mean 'ping'?" in near_miss.stderr
    bad_argument = flotilla("call", "--data-dir", data_dir, "echo.hello", '{"name": 7}')
    assert bad_argument.returncode == 1
    assert bad_argument.stderr.startswith("error: invalid_argument: ")
    assert "Expected `str`, got `int`" in bad_argument.stderr
    unknown_service = flotilla("call", "--data-dir", data_dir, "nobody.hello")
    assert unknown_service.returncode == 1
    assert unknown_service.stderr.startswith("error: unavailable: ")


def test_timeout_bounds_the_call(flotilla: Flotilla, system: System) -> None:
    args = ("--data-dir", str(system.data_dir), "--timeout", "0.3")
    done = flotilla("call", *args, "echo.slow", '{"seconds": 5}')
    assert done.returncode == 1
    assert done.stderr.startswith("error: deadline_exceeded: ")


def test_a_method_timeout_bounds_a_call_by_name(flotilla: Flotilla, system: System) -> None:
    # echo.slow declares @rpc(timeout=1): the CLI knows it from the method table
    # the service publishes, and it caps the CLI's own timeout (here 120 s).
    started = time.monotonic()
    done = flotilla(
        "call", "--data-dir", str(system.data_dir), "--timeout", "120",
        "echo.slow", '{"seconds": 60}',
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert done.returncode == 1
    assert done.stderr.startswith("error: deadline_exceeded: "), done.stderr
    # 1 s and the process's own start-up (seconds on a busy machine), far from
    # the 60 s the method would sleep under the CLI's 120 s.
    assert elapsed < 30.0, elapsed
    quick = flotilla("call", "--data-dir", str(system.data_dir), "echo.slow", '{"seconds": 0.1}')
    assert (quick.returncode, quick.stdout) == (0, "null\n")


def test_no_system_at_the_data_dir(flotilla: Flotilla, tmp_path: Path) -> None:
    done = flotilla("call", "--data-dir", str(tmp_path / "none"), "echo.ping")
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: no flotilla system at {tmp_path / 'none'}")
    assert not (tmp_path / "none").exists()  # a client creates nothing


def test_an_unknown_registry_scheme_is_a_usage_mistake(flotilla: Flotilla, tmp_path: Path) -> None:
    env = {**os.environ, "FLOTILLA_REGISTRY": "bogus://x", "FLOTILLA_SECRET": "s" * 32}
    done = flotilla(
        "call", "--data-dir", str(tmp_path / "data"), "echo.ping", cwd=tmp_path, env=env
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: unknown registry URL 'bogus://x'"), done.stderr
    assert "known schemes" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_an_integer_the_wire_cannot_carry_is_refused(flotilla: Flotilla, system: System) -> None:
    args = '{"name": "x", "extra": [1, {"n": 99999999999999999999999999}]}'
    done = flotilla("call", "--data-dir", str(system.data_dir), "echo.hello", args)
    assert done.returncode == 2
    assert done.stderr == (
        "error: integer at $.extra[1].n is out of range: calls carry integers from -2**63 "
        "to 2**64-1 (send a bigger number as a string)\n"
    )


@pytest.mark.parametrize("timeout", ["inf", "nan", "-1", "0", "1e300"])
def test_a_timeout_must_be_finite_and_bounded(
    flotilla: Flotilla, system: System, timeout: str
) -> None:
    args = ("--data-dir", str(system.data_dir), "--timeout", timeout)
    done = flotilla("call", *args, "echo.ping")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "--timeout must be more than 0 and at most 86400 seconds" in done.stderr


def test_the_data_dir_is_found_in_a_parent_and_named(flotilla: Flotilla, system: System) -> None:
    below = system.directory / "deep" / "er"
    below.mkdir(parents=True, exist_ok=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith("FLOTILLA_")}
    done = flotilla("call", "echo.ping", cwd=below, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == "pong"
    assert done.stderr == (
        f"flotilla: data directory {system.data_dir} (found in a parent directory)\n"
    )
    from_env = flotilla("call", "echo.ping", cwd=below, env={**env, "FLOTILLA_DATA_DIR": "/x"})
    assert from_env.stderr.startswith("flotilla: data directory /x (FLOTILLA_DATA_DIR)\n")


def test_a_data_dir_that_cannot_be_read_is_an_error(flotilla: Flotilla, tmp_path: Path) -> None:
    (tmp_path / "secret").mkdir()  # not a file: no system here
    done = flotilla("call", "--data-dir", str(tmp_path), "echo.ping")
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: no flotilla system at {tmp_path}")
    registry = tmp_path / "d"
    registry.mkdir()
    (registry / "secret").write_text("s" * 64)
    (registry / "registry.db").write_text("not a database, " * 100)
    broken = flotilla("ps", "--data-dir", str(registry))
    assert broken.returncode == 1
    assert broken.stderr.startswith("error: ")
    assert "Traceback" not in broken.stderr


def test_version(flotilla: Flotilla) -> None:
    done = flotilla("--version")
    assert done.returncode == 0
    assert re.fullmatch(r"flotilla \d+\.\d+\.\d+\S*\n", done.stdout)

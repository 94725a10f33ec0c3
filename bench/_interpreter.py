"""Run the bench under another Python: a side virtual environment per interpreter.

``bench/rpc.py --python python3.12`` builds ``bench/.venvs/py3.12`` (once:
``python3.12 -m venv`` and ``pip install -e`` of this checkout, so it runs
the code in ``src/`` as it is) and starts itself again with that
environment's interpreter; every child process then runs on it too.  The
environment is rebuilt when the interpreter or ``pyproject.toml`` changed.

The interpreter is found as a command or a path; a name that pyenv's shims
know but do not activate (``python3.12`` when the global version is 3.11) is
looked up among pyenv's installed versions.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENVS = HERE / ".venvs"
MARKER = ".flotilla-bench.json"
MINIMUM = (3, 11)

_PROBE = "import json, sys; print(json.dumps([sys.executable, list(sys.version_info[:2])]))"


class InterpreterError(Exception):
    """The interpreter asked for cannot run the bench; the message says why."""


def _probe(command: str) -> tuple[str, tuple[int, int]] | None:
    try:
        done = subprocess.run(
            [command, "-c", _PROBE], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    executable, version = json.loads(done.stdout)
    return executable, (version[0], version[1])


def _pyenv_candidates(name: str) -> list[str]:
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found = [path for path in (root / "versions").glob(f"*/bin/{name}") if path.is_file()]
    return [str(path) for path in sorted(found, reverse=True)]


def resolve(command: str) -> tuple[str, tuple[int, int]]:
    """The real executable behind ``command`` and its (major, minor) version."""
    for candidate in [command, *_pyenv_candidates(Path(command).name)]:
        probed = _probe(candidate)
        if probed is not None:
            executable, version = probed
            if version < MINIMUM:
                raise InterpreterError(
                    f"{command} is Python {version[0]}.{version[1]}; flotilla needs 3.11+"
                )
            return executable, version
    raise InterpreterError(f"cannot run {command!r}: not a working Python interpreter")


def environment(command: str) -> Path:
    """The bench environment for ``command``, built or rebuilt if needed."""
    executable, version = resolve(command)
    venv = VENVS / f"py{version[0]}.{version[1]}"
    wanted = {
        "python": executable,
        "pyproject_mtime_ns": (REPO / "pyproject.toml").stat().st_mtime_ns,
    }
    marker = venv / MARKER
    try:
        if json.loads(marker.read_text()) == wanted:
            return venv
    except (OSError, ValueError):
        pass
    print(f"building {venv} for {executable} (once) ...", file=sys.stderr)
    shutil.rmtree(venv, ignore_errors=True)
    try:
        subprocess.run([executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, "-e", str(REPO)], check=True)
    except subprocess.CalledProcessError as exc:
        raise InterpreterError(f"building {venv} failed: {exc}") from None
    marker.write_text(json.dumps(wanted))
    return venv


def running_in(venv: Path) -> bool:
    return Path(sys.prefix).resolve() == venv.resolve()

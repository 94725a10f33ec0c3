"""Process plumbing of the resilience bench: a set of replicas and the load clients that call them.

Every process is started through :class:`rpc.Children` (it dies with the
driver) and speaks one JSON line per message on stdout (see ``_replica.py``
and ``_rload.py``).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rpc import Children, _read_json_line

START_TIMEOUT = 20.0  # seconds for a replica to register, on a busy 2-core box


class Replicas:
    """``count`` replica processes sharing one fresh registry and secret.

    ``extra(i)`` gives replica ``i``'s own arguments (its faults, say).
    """

    def __init__(
        self,
        children: Children,
        workdir: Path,
        count: int,
        extra: Callable[[int], Sequence[str]] = lambda i: (),
    ) -> None:
        registry_dir = Path(tempfile.mkdtemp(prefix="registry-", dir=workdir))
        self.common = [
            "--registry",
            f"sqlite:///{registry_dir / 'registry.db'}",
            "--secret",
            secrets.token_hex(32),
        ]
        self.children = children
        self.procs = [
            children.spawn(
                "_replica.py", *self.common, "--index", str(i), *extra(i), log=f"replica{i}.log"
            )
            for i in range(count)
        ]
        self.ready = [
            _read_json_line(proc, START_TIMEOUT, f"replica {i}", children, f"replica{i}.log")
            for i, proc in enumerate(self.procs)
        ]
        self.alive = [True] * count

    def instances(self, index: int) -> list[str]:
        """The registry instance ids of replica ``index`` (what signals name endpoints by)."""
        return list(self.ready[index]["instances"])

    def arm(self, index: int) -> None:
        """Switch replica ``index``'s faults on."""
        os.kill(self.procs[index].pid, signal.SIGUSR1)

    def kill(self, index: int) -> None:
        """SIGKILL replica ``index``: no goodbye, no deregistration."""
        self.procs[index].kill()
        self.alive[index] = False

    def stats(self) -> list[dict[str, Any] | None]:
        """Each live replica's counters (None for a killed one)."""
        report: list[dict[str, Any] | None] = []
        for i, proc in enumerate(self.procs):
            if not self.alive[i]:
                report.append(None)
                continue
            os.kill(proc.pid, signal.SIGUSR2)
            report.append(
                _read_json_line(proc, 10, f"replica {i}", self.children, f"replica{i}.log")
            )
        return report

    def calls(self, target: str) -> int:
        """Calls to ``target`` all live replicas received so far."""
        return sum(s["calls"].get(target, 0) for s in self.stats() if s is not None)

    def close(self) -> None:
        for proc in self.procs:
            self.children.stop(proc)


def run_load(
    children: Children,
    replicas: Replicas,
    options: Sequence[str],
    *,
    warmup: float,
    seconds: float,
    action: Callable[[], None] | None = None,
    action_after: float = 0.0,
) -> dict[str, Any]:
    """Run one ``_rload.py`` client to its end; ``action`` runs ``action_after`` s into its window.

    The result gets ``window_at`` (Unix seconds the window opened) and, with an
    action, ``action_at``.
    """
    log = "load.log"
    timing = ["--warmup", str(warmup), "--seconds", str(seconds)]
    proc = children.spawn("_rload.py", *replicas.common, *timing, *options, log=log)
    timeout = START_TIMEOUT + warmup + seconds
    opened = _read_json_line(proc, timeout, "load client", children, log)
    action_at = None
    if action is not None:
        time.sleep(max(opened["at"] + action_after - time.time(), 0.0))
        action_at = time.time()
        action()
    result = _read_json_line(proc, timeout + 30, "load client", children, log)
    if proc.wait(30) != 0:
        raise RuntimeError(f"load client exited with {proc.returncode}\n{children.log_tail(log)}")
    if proc.stdout is not None:
        proc.stdout.close()
    result["window_at"] = opened["at"]
    result["action_at"] = action_at
    return result


def policy_json(**fields: Any) -> str:
    """A resilience Policy's fields as the JSON ``--policy`` takes."""
    return json.dumps(fields)

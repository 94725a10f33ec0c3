"""Request ids: unique per call, across processes, without a system call per id."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

from flotilla.context import Context, new_request_id


class NoInvoker:
    async def invoke(self, *args: object, **kwargs: object) -> object:
        raise AssertionError("no calls here")

    def client(self, *args: object, **kwargs: object) -> object:
        raise AssertionError("no calls here")


def test_ids_are_unique_hex_strings() -> None:
    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for request_id in ids[:100] + ids[-100:]:
        assert request_id
        int(request_id, 16)  # hex only: safe in logs, headers, file names


def test_a_context_without_an_id_gets_a_fresh_one() -> None:
    first, second = Context(NoInvoker()), Context(NoInvoker())
    assert first.request_id
    assert first.request_id != second.request_id
    assert Context(NoInvoker(), request_id="given").request_id == "given"


def test_ids_are_unique_across_processes() -> None:
    # The counter starts over in every process: the per-process prefix keeps
    # the ids of two processes apart.
    code = "from flotilla.context import new_request_id as n; print(n(), n())"
    outputs = [
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
        for _ in range(2)
    ]
    ids = [*outputs[0], *outputs[1], new_request_id(), new_request_id()]
    assert len(set(ids)) == len(ids), ids


def test_ids_are_unique_across_a_fork() -> None:
    # A forked child (a pre-forking server, multiprocessing's "fork") inherits
    # the parent's prefix and counter: it must not hand out the parent's ids.
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, 3.12+
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write_end, new_request_id().encode())
        finally:
            os._exit(0)
    os.close(write_end)
    parent_id = new_request_id()
    with os.fdopen(read_end, "rb") as pipe:
        child_id = pipe.read().decode()
    os.waitpid(pid, 0)
    assert child_id
    assert child_id != parent_id

"""The context of a call: its headers, the headers of onward calls, and request ids that are
unique per call, across processes, without a system call per id."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings

import pytest

from flotilla.context import Context, new_request_id
from flotilla.headers import Headers, Principal


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
    assert Context(NoInvoker(), Headers(request_id="given")).request_id == "given"
    # Headers that came without an id (a hand-made frame) get one too.
    assert Context(NoInvoker(), Headers(caller="front")).request_id


def test_the_properties_read_the_headers() -> None:
    principal = Principal("ada", ("admin",))
    headers = Headers(
        request_id="r1", caller="front", deadline=123.0, principal=principal, meta={"t": "a"}
    )
    context = Context(NoInvoker(), headers, service="shop")
    assert context.headers is headers
    assert (context.request_id, context.caller, context.deadline) == ("r1", "front", 123.0)
    assert context.principal is principal
    assert context.meta == {"t": "a"}
    assert context.service == "shop"


def test_onward_headers_name_this_service_as_the_caller() -> None:
    headers = Headers(request_id="r1", caller="front", deadline=123.0, meta={"t": "a"})
    context = Context(NoInvoker(), headers, service="shop")
    onward = context.onward_headers()
    assert onward == headers.replace(caller="shop")
    assert context.onward_headers() is onward  # made once per context
    assert context.caller == "front"  # the context's own headers are unchanged


def test_set_meta_reaches_later_onward_calls_only() -> None:
    context = Context(NoInvoker(), Headers(request_id="r1", meta={"t": "a"}), service="shop")
    before = context.onward_headers()
    context.set_meta(step="2")
    assert context.meta == {"t": "a", "step": "2"}
    assert context.onward_headers().meta == {"t": "a", "step": "2"}
    assert before.meta == {"t": "a"}  # copy on write: the earlier value kept its own


def test_remaining_counts_down_to_the_deadline() -> None:
    assert Context(NoInvoker()).remaining() is None
    deadline = time.monotonic() + 5.0
    remaining = Context(NoInvoker(), Headers(deadline=deadline)).remaining()
    assert remaining is not None
    assert 4.0 < remaining <= 5.0
    assert Headers(deadline=1_000.0).remaining(now=1_000.5) == pytest.approx(-0.5)


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


def test_meta_cannot_be_changed_in_place() -> None:
    headers = Headers(meta={"tenant": "acme"})
    ctx = Context(NoInvoker(), headers)
    with pytest.raises(TypeError):
        ctx.meta["tenant"] = "evil"  # type: ignore[index]
    assert headers.meta == {"tenant": "acme"}

"""The deadline middleware: every call has one, and nothing below may outlive it."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Any

import msgspec

from flotilla.errors import DeadlineExceeded
from flotilla.pipeline import Handler
from flotilla.request import Request

__all__ = ["DEFAULT_TIMEOUT", "Deadline"]

DEFAULT_TIMEOUT = 10.0


class Deadline:
    """Fixes the request's deadline (in its headers), and refuses a call whose deadline has passed.

    The deadline is the caller's, capped by the method's own timeout when it
    declares one; with no caller deadline it is now + the method's timeout, else
    now + the default timeout.

    It arms no timer: every layer that waits bounds its own wait by
    the request's deadline (the transport the wait for the reply, the pool the
    connect, balancing the first registry snapshot, retries their backoff).
    A timer per call (``asyncio.timeout``) cost more than all the rest of the
    client pipeline together; see BENCHMARKS.md.
    """

    def __init__(self, default_timeout: float = DEFAULT_TIMEOUT) -> None:
        self.default_timeout = default_timeout

    # A plain function returning the next layer's awaitable: no coroutine frame
    # of its own on every call, since there is nothing to do after ``next``.
    def __call__(self, request: Request, call_next: Handler[Request]) -> Awaitable[Any]:
        now = time.monotonic()
        headers = request.headers
        deadline = headers.deadline
        timeout = request.timeout
        if deadline is None:
            deadline = now + (timeout if timeout is not None else self.default_timeout)
        elif timeout is not None and now + timeout < deadline:
            deadline = now + timeout
        if deadline <= now:
            raise DeadlineExceeded(f"deadline passed before calling {request.target}")
        if deadline != headers.deadline:
            # A new headers value: the caller's context keeps its own.  (msgspec's
            # replace itself, not Headers.replace: this runs on every call.)
            request.headers = msgspec.structs.replace(headers, deadline=deadline)
        return call_next(request)

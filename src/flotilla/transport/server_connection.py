"""One peer's connection to a :class:`~flotilla.transport.server.Server`.

A :class:`ServerConnection` is the server's ``asyncio.Protocol`` for one
socket: it runs the handshake (challenge, proof, welcome), then starts each
``Call`` as a task, answers it with a ``Reply`` or ``Failure``, and forgets it
once, whoever ends it first (its task, a ``Cancel``, the deadline sweep, a lost
connection).  The bounds it enforces, and why, are described in
:mod:`flotilla.transport.server`; the server owns what its connections share
(the handshake table, the count of calls in flight, the rate-limited log).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import sys
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, cast

import msgspec

from flotilla.errors import (
    ConnectionCut,
    DeadlineExceeded,
    FlotillaError,
    Internal,
    ProtocolError,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from flotilla.headers import Headers
from flotilla.transport.frames import (
    Call,
    Cancel,
    Challenge,
    Failure,
    Frame,
    FrameReader,
    Hello,
    Reply,
    Welcome,
    encode_frame,
    proof,
)
from flotilla.transport.sweep import Sweeper
from flotilla.transport.writer import FrameWriter

if TYPE_CHECKING:
    from flotilla.transport.server import Server

__all__ = ["HANDSHAKE_MAX_FRAME", "HANDSHAKE_TIMEOUT", "ServerConnection"]

Task = asyncio.Task[None]

log = logging.getLogger("flotilla.transport")

if sys.version_info >= (3, 12):

    def _start_task(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> Task:
        # Run the handler at once, inside this read: most calls finish without
        # suspending, and then no task is scheduled and no loop turn is spent.
        return asyncio.Task(coro, loop=loop, eager_start=True)

else:

    def _start_task(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> Task:
        return loop.create_task(coro)


# A peer has this long to prove it knows the secret, and may send at most this
# much before it has: an unauthenticated socket must not hold memory or a slot.
# A real client needs one round trip; 2 s leaves room for a far region and a
# busy peer, while an idle socket is let go soon.
HANDSHAKE_TIMEOUT = 2.0
HANDSHAKE_MAX_FRAME = 1024

# The kinds of refused half-open peers, as the rate-limited log counts them.
_TIMED_OUT = "timed out"
_MALFORMED = "malformed"
_WRONG_PROOF = "with a wrong proof"
_EVICTED = "evicted"


class ServerConnection(asyncio.Protocol):
    """One peer's connection: handshake state, then its calls in flight by id."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.reader = FrameReader(HANDSHAKE_MAX_FRAME)
        self.transport: asyncio.Transport | None = None
        self.writer: FrameWriter | None = None
        self.peer = "?"
        self.nonce = os.urandom(16)
        self.authenticated = False
        # id -> [task, absolute deadline or None, method]
        self.calls: dict[int, list[Any]] = {}
        self.handshake_timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._batching = False
        self._refused = False
        # Set while the transport takes writes; calls wait on it to start.
        self._writable = asyncio.Event()
        self._writable.set()
        self._sweeper = Sweeper(
            self._loop, self._expire, lambda: bool(self.calls) and self.transport is not None
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.writer = FrameWriter(self.transport, self._loop)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.server._connections.add(self)
        evicted = self.server._handshakes.admit(self, peer[0] if peer else "?")
        if evicted is not None:
            message = "evicted: the server has too many connections in their handshake"
            evicted._refuse_handshake(_EVICTED, ResourceExhausted.code, message)
        self.handshake_timer = self._loop.call_later(
            HANDSHAKE_TIMEOUT,
            self._refuse_handshake,
            _TIMED_OUT,
            DeadlineExceeded.code,
            f"no handshake within {HANDSHAKE_TIMEOUT:g} s",
        )
        self.transport.write(encode_frame(Challenge(self.nonce)))

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
            # Handlers that finish at once (eager tasks, 3.12+) answer inside this
            # loop: their replies leave together when it ends.
            self._batching = len(frames) > 1
            for frame in frames:
                self._handle(frame)
        except FlotillaError as exc:  # ProtocolError, or Unauthenticated in the handshake
            self._close_for(exc.code, exc.message)
        except Exception as exc:
            # A bug of ours, not the peer's: still, only this connection pays,
            # and asyncio's handler never sees it (it would log a traceback
            # per read and leave the connection half-dead).
            self._close_for(Internal.code, f"unexpected {type(exc).__name__}: {exc}")
        finally:
            if self._batching:
                self._batching = False
                if self.writer is not None:
                    self.writer.flush()

    def _handle(self, frame: Frame) -> None:
        if not self.authenticated:
            if type(frame) is not Hello:
                raise ProtocolError(f"{type(frame).__name__} frame before the handshake")
            self._authenticate(frame)
        elif type(frame) is Call:
            self._start_call(frame)
        elif type(frame) is Cancel:
            entry = self.calls.get(frame.id)
            if entry is not None:
                self.server._cancel(entry[0])
                self._finished(frame.id, entry)
        else:
            raise ProtocolError(f"unexpected {type(frame).__name__} frame")

    def _authenticate(self, hello: Hello) -> None:
        expected = proof(self.server.secret, self.nonce, b"client")
        if not hmac.compare_digest(hello.proof, expected):
            raise Unauthenticated("peer does not know the cluster secret")
        self.authenticated = True
        self.server._handshakes.remove(self)
        self.reader.max_frame = self.server.max_frame
        if self.handshake_timer is not None:
            self.handshake_timer.cancel()
        self._write(Welcome(proof(self.server.secret, hello.nonce, b"server")))

    def _start_call(self, call: Call) -> None:
        if self.server.draining:
            # Refused before any work: retryable, a retry may send it elsewhere.
            self._write(Failure(call.id, Unavailable.code, "instance is draining"))
            return
        if call.id in self.calls:
            raise ProtocolError(f"call id {call.id} is already in flight")
        if len(self.calls) >= self.server.max_calls_per_connection:
            # Refused before any work: the caller may try again or elsewhere.
            message = f"{len(self.calls)} calls in flight on this connection, the most allowed"
            self._write(Failure(call.id, ResourceExhausted.code, message, None, True))
            return
        headers = call.headers
        deadline = headers.deadline
        if deadline is not None:
            if deadline <= 0:
                # The caller has already given up: skip the work.
                message = f"deadline of {call.method} passed before it started"
                self._write(Failure(call.id, DeadlineExceeded.code, message))
                return
            headers = headers.from_wire(time.monotonic())
            deadline = headers.deadline
            self._sweeper.arm()
        self.server._call_started()
        # In the table before the task starts: an eager task may finish (and
        # take itself out) before _start_task returns.
        entry = self.calls[call.id] = [None, deadline, call.method]
        entry[0] = _start_task(self._loop, self._run(call, headers, entry))

    def _finished(self, call_id: int, entry: list[Any]) -> None:
        """Forget a call, once, whoever gets there first.

        Its task's end, a Cancel, the deadline sweep and a lost connection all
        call this: a task cancelled before its first step never runs its own
        clean-up, and a done-callback instead would cost every call a turn of
        the event loop.  The entry, not just the id, must match: a peer may
        reuse the id of a call it cancelled before that call has unwound.
        """
        if self.calls.get(call_id) is entry:
            del self.calls[call_id]
            self.server._call_finished()

    def _expire(self, now: float) -> None:
        """Stop the calls that ran past their deadline; their callers are told so."""
        for call_id, entry in list(self.calls.items()):
            task, deadline, method = entry
            if deadline is not None and deadline <= now and not task.done():
                message = f"{method} ran past its deadline"
                self._write(Failure(call_id, DeadlineExceeded.code, message))
                self.server._cancel(task)
                self._finished(call_id, entry)

    async def _run(self, call: Call, headers: Headers, entry: list[Any]) -> None:
        try:
            while not self._writable.is_set():
                # The peer is not reading its replies: make no more of them
                # until it does (the deadline sweep still ends the wait).
                await self._writable.wait()
            result = await self.server.handler(call.method, call.args, headers)
            reply = encode_frame(Reply(call.id, msgspec.Raw(result)))
        except ConnectionCut:
            # Asked for on purpose (an injected fault): cut as a crash would,
            # with no reply and no flush; connection_lost ends the other calls.
            if self.transport is not None:
                self.transport.abort()
            return
        except FlotillaError as exc:
            reply = _encode_failure(call.id, exc)
        except asyncio.CancelledError:
            # The caller cancelled or went away: it waits for no answer.
            raise
        except Exception:
            log.exception("call %s from %s failed", call.method, self.peer)
            reply = encode_frame(Failure(call.id, Internal.code, "internal error"))
        finally:
            self._finished(call.id, entry)
        self._send(reply)

    def _write(self, frame: Frame) -> None:
        self._send(encode_frame(frame))

    def _send(self, data: bytearray) -> None:
        if self.writer is not None:
            # Batch only while other replies may join: calls in flight, or more
            # frames of the same read still to handle.
            self.writer.send(data, batch=self._batching or bool(self.calls))

    def _close_for(self, code: str, message: str) -> None:
        """Close over a fault; in the handshake the peer is told ``code`` (the log rate-limited)."""
        if not self.authenticated:
            kind = _WRONG_PROOF if code == Unauthenticated.code else _MALFORMED
            self._refuse_handshake(kind, code, message)
        elif not self._refused:
            self._refused = True
            log.warning("closing connection from %s: %s", self.peer, message)
            self.close()

    def _refuse_handshake(self, kind: str, code: str, message: str) -> None:
        """Tell a peer in its handshake why it is refused (a Failure for call 0), and close."""
        if self._refused or self.transport is None:
            return
        self._refused = True
        self.server._warn_half_open(kind, "closing connection from %s: %s", self.peer, message)
        self.transport.write(encode_frame(Failure(0, code, message)))
        self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- flow control: see flotilla.transport.server's docstring ---------------------------

    def pause_writing(self) -> None:
        if self.writer is not None:
            self.writer.paused = True
        self._writable.clear()
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.writer is not None:
            self.writer.paused = False
        self._writable.set()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.reader.pending and not self._refused:
            message = "closed inside a frame (%d bytes)"
            if self.authenticated:
                log.warning("connection from %s " + message, self.peer, self.reader.pending)
            else:
                self.server._warn_half_open(
                    _MALFORMED, "connection from %s " + message, self.peer, self.reader.pending
                )
        if self.handshake_timer is not None:
            self.handshake_timer.cancel()
        self.server._handshakes.remove(self)
        self._sweeper.cancel()
        for call_id, entry in list(self.calls.items()):
            self.server._cancel(entry[0])
            self._finished(call_id, entry)
        self.server._connections.discard(self)
        self.transport = None


def _encode_failure(call_id: int, exc: FlotillaError) -> bytearray:
    """The Failure frame for ``exc``; details that cannot be encoded are dropped, not the reply."""
    failure = Failure(
        call_id, exc.code, exc.message, exc.details or None, exc.retryable, exc.retried
    )
    try:
        return encode_frame(failure)
    except TypeError:
        log.warning("details of a %s error cannot be encoded; sent without them", exc.code)
        failure.details = None
        return encode_frame(failure)

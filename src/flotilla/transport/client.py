"""The RPC client's connection: one persistent, multiplexed connection to one peer.

Calls on a connection are matched to replies by request id, so any number of
them share one socket.  When a connection drops, every call waiting on it
fails with ``Unavailable`` and its owner is told (the pool,
:mod:`flotilla.transport.pool`, tells the caller's view of the endpoints,
which stops offering that address until it is back).

A handshake that fails is a fault of that endpoint, like a refused connect:
:class:`~flotilla.errors.HandshakeFailed`, with ``details["reason"]`` saying
why: the server's code when it refused us in a ``Failure`` for id 0
(``unauthenticated``, ``resource_exhausted``, ...), ``unauthenticated`` when the
server could not prove it knows the secret, ``closed`` when it hung up,
``protocol_error`` when it spoke no Flotilla.  The pool logs one line per
address per streak of such failures, not one per call.

Flow control: when the server stops reading what we send (the transport's
write buffer passed its high mark), new calls on that connection fail at once
with :class:`~flotilla.errors.ResourceExhausted` marked ``never_sent``, until
the buffer drains.  Buffering them instead would only grow memory behind a
peer that does not keep up, and delay the answer that balancing needs to send
the call elsewhere.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections.abc import Callable
from typing import cast

import msgspec

from flotilla.errors import (
    ConnectFailed,
    DeadlineExceeded,
    FlotillaError,
    HandshakeFailed,
    Internal,
    ProtocolError,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    error_for_code,
)
from flotilla.headers import Headers
from flotilla.transport.frames import (
    DEFAULT_MAX_FRAME,
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

__all__ = ["Connection"]

log = logging.getLogger("flotilla.transport")

# What a refusal by the server most likely means, for the one line the pool logs.
_REFUSAL_HINTS = {
    Unauthenticated.code: "wrong cluster secret?",
    ResourceExhausted.code: "it has too many connections in their handshake",
}


class Connection(asyncio.Protocol):
    """A client connection to one server, usable once :meth:`ready` returned.

    Each call waits on a future of its own; a reply resolves it by id.  A call's
    deadline is enforced by a :class:`~flotilla.transport.sweep.Sweeper`, not by
    a timer per call.
    """

    def __init__(self, address: str, secret: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.address = address
        self.secret = secret
        self.reader = FrameReader(max_frame)
        self.transport: asyncio.Transport | None = None
        self.writer: FrameWriter | None = None
        # id -> (future, absolute deadline or None, method): what a sweep needs.
        self.pending: dict[int, tuple[asyncio.Future[msgspec.Raw], float | None, str]] = {}
        self.next_id = 0
        self.nonce = os.urandom(16)
        self.on_lost: Callable[[Connection], None] | None = None
        self._loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._sweeper = Sweeper(self._loop, self._expire, lambda: bool(self.pending) and self.open)
        self._challenged = False

    @property
    def open(self) -> bool:
        return self.transport is not None and self._ready.done() and not self.transport.is_closing()

    async def ready(self) -> None:
        """Wait for the handshake to complete (or fail)."""
        await self._ready

    def call(self, method: str, args: bytes, headers: Headers) -> asyncio.Future[msgspec.Raw]:
        """Send one call; the future resolves to its result (or the callee's error).

        The deadline in ``headers`` is absolute, on ``time.monotonic()``; the
        callee is told how much of it is left.  A plain function returning the
        future, not a coroutine: no frame of its own on every call.  A caller
        that stops waiting cancels the future; the next sweep (within
        :data:`~flotilla.transport.sweep.SWEEP_INTERVAL`) forgets the call and
        tells the callee, so it stops working for nobody.
        """
        writer = self.writer
        if writer is None or writer.transport.is_closing():
            raise ConnectFailed(f"connection to {self.address} is closed")
        if writer.paused:
            # The server reads nothing we send: fail now, balancing may go elsewhere.
            raise ResourceExhausted(f"{self.address} is not reading our calls", never_sent=True)
        deadline = headers.deadline
        if deadline is not None:
            now = time.monotonic()
            if deadline <= now:
                raise DeadlineExceeded(f"deadline passed before calling {method}")
            headers = headers.to_wire(now)
        self._sweeper.arm()
        self.next_id = call_id = self.next_id + 1
        future: asyncio.Future[msgspec.Raw] = self._loop.create_future()
        self.pending[call_id] = (future, deadline, method)
        writer.send(
            encode_frame(Call(call_id, method, msgspec.Raw(args), headers)),
            batch=len(self.pending) > 1,
        )
        return future

    def _expire(self, now: float) -> None:
        """Fail the calls whose deadline passed, forget those their caller gave up on,
        and tell the callees of both."""
        expired = [
            call_id
            for call_id, (future, deadline, _) in self.pending.items()
            if (deadline is not None and deadline <= now) or future.cancelled()
        ]
        for call_id in expired:
            future, _, method = self.pending.pop(call_id)
            if not future.done():
                future.set_exception(DeadlineExceeded(f"{method} did not answer in time"))
            self._cancel(call_id)

    def _cancel(self, call_id: int) -> None:
        if self.writer is not None and self.open:
            self.writer.send(encode_frame(Cancel(call_id)))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.writer = FrameWriter(self.transport, self._loop)

    def pause_writing(self) -> None:
        if self.writer is not None:
            self.writer.paused = True

    def resume_writing(self) -> None:
        if self.writer is not None:
            self.writer.paused = False

    def data_received(self, data: bytes) -> None:
        try:
            for frame in self.reader.feed(data):
                self._handle(frame)
        except FlotillaError as exc:
            self._fail(exc)
        except Exception as exc:
            # A bug of ours: only this connection pays; asyncio's handler never sees it.
            self._fail(Internal(f"unexpected {type(exc).__name__}: {exc}"))

    def _handle(self, frame: Frame) -> None:
        if type(frame) is Reply:
            entry = self.pending.pop(frame.id, None)
            if entry is not None and not entry[0].done():
                entry[0].set_result(frame.result)
        elif type(frame) is Failure:
            entry = self.pending.pop(frame.id, None)
            if entry is not None and not entry[0].done():
                error = error_for_code(
                    frame.code, frame.message, frame.details, frame.retryable, frame.retried
                )
                entry[0].set_exception(error)
            elif frame.id == 0 and not self._ready.done():
                self._refused(frame)
        elif type(frame) is Challenge and not self._challenged and self.transport is not None:
            # Answered once, during the handshake: a peer must not get proofs
            # for nonces of its choosing at will.
            self._challenged = True
            hello = Hello(proof(self.secret, frame.nonce, b"client"), self.nonce)
            self.transport.write(encode_frame(hello))
        elif type(frame) is Welcome and not self._ready.done():
            if not hmac.compare_digest(frame.proof, proof(self.secret, self.nonce, b"server")):
                raise HandshakeFailed(
                    f"{self.address} does not know the cluster secret",
                    details={"reason": Unauthenticated.code},
                )
            self._ready.set_result(None)
        else:
            raise ProtocolError(f"unexpected {type(frame).__name__} frame")

    def _refused(self, failure: Failure) -> None:
        """The server refused our handshake (a Failure for call 0): say why, and hang up."""
        hint = _REFUSAL_HINTS.get(failure.code, failure.message)
        message = f"{self.address} refused our handshake: {failure.code} ({hint})"
        self._fail(HandshakeFailed(message, details={"reason": failure.code}))

    def _fail(self, exc: FlotillaError) -> None:
        """Close over ``exc``: in the handshake it fails :meth:`ready`, later it is logged."""
        if not self._ready.done():
            if not isinstance(exc, HandshakeFailed):
                message = f"{self.address} broke the handshake: {exc.message}"
                exc = HandshakeFailed(message, details={"reason": exc.code})
            self._fail_handshake(exc)
        elif self.transport is not None and not self.transport.is_closing():
            log.warning("closing connection to %s: %s", self.address, exc.message)
        if self.transport is not None:
            self.transport.close()

    def _fail_handshake(self, exc: HandshakeFailed) -> None:
        self._ready.set_exception(exc)
        # Whoever awaits ready() gets it; nobody may (the connect timed out):
        # then it must not be logged as "never retrieved" when collected.
        self._ready.exception()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._sweeper.cancel()
        if not self._ready.done():
            self._fail_handshake(
                HandshakeFailed(
                    f"{self.address} closed the connection during the handshake",
                    details={"reason": "closed"},
                )
            )
        # The calls in flight may or may not have run: not safe to retry blindly.
        # An error each: a caller marks the error it gets (onward, retryable).
        pending, self.pending = self.pending, {}
        for future, _, _ in pending.values():
            if not future.done():
                future.set_exception(
                    Unavailable(f"connection to {self.address} lost", retryable=False)
                )
        if self.on_lost is not None:
            self.on_lost(self)

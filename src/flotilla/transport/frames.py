"""The RPC wire format: pure encoders and a pure incremental decoder, no sockets.

A frame is a 4-byte big-endian body length followed by a msgpack body.  The
body is a tagged array (``[tag, field, field, ...]``), so field names never
travel and a call costs a few dozen bytes of framing.

A connection goes through one handshake, then carries calls both ways
multiplexed by request id::

    client                                   server
      |  <----------- Challenge(nonce_s) -----  |   on accept
      |  --- Hello(proof(nonce_s), nonce_c) --> |   refused unless the proof holds
      |  <----------- Welcome(proof(nonce_c)) - |   the client checks the server too
      |  --- Call(id, method, args, headers) ---> ... <--- Reply(id, ...) / Failure(id, ...)
      |  --- Cancel(id) --->                    |   the caller gave up (deadline)

The proof is an HMAC-SHA256 of the peer's nonce under the cluster secret, so
the secret never travels and a recorded handshake cannot be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import msgspec

from flotilla.errors import ProtocolError
from flotilla.headers import Headers

__all__ = [
    "DEFAULT_MAX_FRAME",
    "Call",
    "Cancel",
    "Challenge",
    "Failure",
    "Frame",
    "FrameReader",
    "Hello",
    "Reply",
    "Welcome",
    "encode_frame",
    "proof",
]

DEFAULT_MAX_FRAME = 16 * 1024 * 1024
HEADER = 4


class Challenge(msgspec.Struct, tag=0, array_like=True):
    nonce: bytes


class Hello(msgspec.Struct, tag=1, array_like=True):
    proof: bytes
    nonce: bytes


class Welcome(msgspec.Struct, tag=2, array_like=True):
    proof: bytes


class Call(msgspec.Struct, tag=3, array_like=True):
    id: int
    method: str
    """``service.method``"""
    args: msgspec.Raw
    """The arguments (a msgpack map) left encoded: the callee decodes them into its own types."""
    headers: Headers = Headers()
    """The call's headers, their deadline as the seconds left (hosts' clocks disagree)."""


class Reply(msgspec.Struct, tag=4, array_like=True):
    id: int
    result: msgspec.Raw


class Failure(msgspec.Struct, tag=5, array_like=True):
    id: int
    code: str
    message: str
    details: dict[str, Any] | None = None
    retryable: bool | None = None
    """The error's own verdict (it may differ from its class's default)."""
    retried: bool = False
    """Retries were already spent on this failure downstream: do not retry it again
    (:attr:`flotilla.errors.FlotillaError.retried`).  Last, with a default, so a peer
    that predates it sends and reads a frame that still decodes on both sides."""


class Cancel(msgspec.Struct, tag=6, array_like=True):
    id: int


Frame = Challenge | Hello | Welcome | Call | Reply | Failure | Cancel

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Frame)


def encode_frame(frame: Frame) -> bytearray:
    """The frame's bytes, length header included."""
    buffer = bytearray(HEADER)
    _encoder.encode_into(frame, buffer, HEADER)
    buffer[:HEADER] = (len(buffer) - HEADER).to_bytes(HEADER, "big")
    return buffer


def proof(secret: bytes, nonce: bytes, role: bytes) -> bytes:
    """Evidence of knowing ``secret``, bound to the peer's ``nonce`` and our ``role``.

    The role keeps a server's proof from being reflected back as a client's.
    """
    return hmac.new(secret, b"flotilla/1 " + role + b" " + nonce, hashlib.sha256).digest()


class FrameReader:
    """Turns a byte stream into frames; raises :class:`ProtocolError` on garbage.

    The length is checked before the body is buffered, so an oversized frame is
    refused after its first four bytes instead of after it has eaten memory.
    """

    __slots__ = ("_buffer", "_needed", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()
        # Bytes the buffer must hold before a frame in it can be complete:
        # a large frame arriving in many reads is only appended to, never
        # re-parsed or copied until it is whole.
        self._needed = HEADER

    @property
    def pending(self) -> int:
        """Bytes of a frame started and not yet complete (non-zero at EOF means truncated)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        """Add ``data`` from the stream; return the frames it completed, in order."""
        if self._buffer:
            self._buffer += data
            if len(self._buffer) < self._needed:
                return []
            data = bytes(self._buffer)
            self._buffer.clear()
        view = memoryview(data)
        end = len(data)
        position = 0
        frames: list[Frame] = []
        self._needed = HEADER
        while end - position >= HEADER:
            size = int.from_bytes(view[position : position + HEADER], "big")
            if size > self.max_frame:
                raise ProtocolError(f"frame of {size} bytes exceeds the limit of {self.max_frame}")
            stop = position + HEADER + size
            if stop > end:
                self._needed = HEADER + size
                break
            try:
                frames.append(_decoder.decode(view[position + HEADER : stop]))
            except RecursionError:
                raise ProtocolError("malformed frame: nested too deep") from None
            except Exception as exc:
                # Whatever the decoder raises (msgspec's errors, ValueError...),
                # bytes from a peer are at fault, never this process: the
                # connection is closed, nothing escapes into the event loop.
                raise ProtocolError(f"malformed frame: {exc}") from None
            position = stop
        if position < end:
            self._buffer += view[position:]
        return frames

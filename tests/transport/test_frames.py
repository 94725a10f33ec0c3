"""The wire format, without sockets: encode, decode incrementally, refuse garbage."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from flotilla.errors import ProtocolError
from flotilla.headers import Headers, Principal
from flotilla.transport import frames
from flotilla.transport.frames import (
    DEFAULT_MAX_FRAME,
    HEADER,
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


def raw(value: object) -> msgspec.Raw:
    return msgspec.Raw(msgspec.msgpack.encode(value))


FRAMES: list[Frame] = [
    Challenge(b"n" * 16),
    Hello(b"p" * 32, b"c" * 16),
    Welcome(b"w" * 32),
    Call(1, "catalog.get", raw({"id": 7})),
    Call(2**40, "catalog.get", raw({}), Headers(deadline=0.25, meta={"tenant": "acme"})),
    Call(
        8,
        "catalog.get",
        raw({}),
        Headers("abc", "front", 0.25, "00-trace-01", Principal("ada", ("admin",)), {"t": "a"}),
    ),
    Reply(3, raw({"name": "lamp", "price": 9.5})),
    Reply(4, raw(None)),
    Failure(5, "not_found", "no such thing"),
    Failure(6, "invalid_argument", "bad", {"field": "id", "n": [1, 2]}),
    Failure(8, "unavailable", "leaf down", None, False, True),
    Cancel(7),
]


def header(size: int) -> bytes:
    return size.to_bytes(HEADER, "big")


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: type(f).__name__)
def test_round_trip(frame: Frame) -> None:
    data = encode_frame(frame)
    assert int.from_bytes(data[:HEADER], "big") == len(data) - HEADER
    reader = FrameReader()
    assert reader.feed(bytes(data)) == [frame]
    assert reader.pending == 0


def test_fed_byte_by_byte() -> None:
    stream = b"".join(bytes(encode_frame(frame)) for frame in FRAMES)
    reader = FrameReader()
    decoded: list[Frame] = []
    for i in range(len(stream)):
        decoded.extend(reader.feed(stream[i : i + 1]))
    assert decoded == FRAMES
    assert reader.pending == 0


def test_several_frames_in_one_chunk() -> None:
    stream = b"".join(bytes(encode_frame(frame)) for frame in FRAMES)
    assert FrameReader().feed(stream) == FRAMES


def test_chunks_split_anywhere() -> None:
    stream = b"".join(bytes(encode_frame(frame)) for frame in FRAMES)
    for cut in range(1, len(stream)):
        reader = FrameReader()
        decoded = reader.feed(stream[:cut]) + reader.feed(stream[cut:])
        assert decoded == FRAMES, cut


def test_oversized_length_refused_after_the_header_alone() -> None:
    reader = FrameReader(max_frame=100)
    with pytest.raises(ProtocolError, match="exceeds the limit of 100"):
        reader.feed(header(101))  # not one byte of the body sent


def test_oversized_after_a_good_frame_in_the_same_chunk() -> None:
    reader = FrameReader(max_frame=100)
    with pytest.raises(ProtocolError, match="exceeds"):
        reader.feed(bytes(encode_frame(Cancel(1))) + header(10_000))


def test_frame_of_exactly_the_limit_accepted() -> None:
    frame = Welcome(b"x" * 50)
    data = bytes(encode_frame(frame))
    reader = FrameReader(max_frame=len(data) - HEADER)
    assert reader.feed(data) == [frame]


def test_call_headers_travel_as_one_compact_array() -> None:
    headers = Headers("rid-1", "front", 0.25, "", Principal("ada", ("admin",)), {"tenant": "acme"})
    body = bytes(encode_frame(Call(1, "a.b", raw({}), headers)))[HEADER:]
    # Tag first; the headers a positional array (no field names on the wire).
    fields = [3, 1, "a.b", {}, ["rid-1", "front", 0.25, "", ["ada", ["admin"]], {"tenant": "acme"}]]
    assert msgspec.msgpack.decode(body) == fields


def test_default_headers_cost_a_few_bytes_and_may_be_left_out() -> None:
    body = bytes(encode_frame(Call(1, "a.b", raw({}))))[HEADER:]
    assert msgspec.msgpack.decode(body) == [3, 1, "a.b", {}, ["", "", None, "", None, {}]]
    assert len(body) <= 16
    # A Call without headers at all still decodes, with the defaults.
    short = msgspec.msgpack.encode([3, 1, "a.b", {}])
    (decoded,) = FrameReader().feed(header(len(short)) + short)
    assert decoded == Call(1, "a.b", raw({}))
    assert decoded.headers == Headers()
    assert (decoded.headers.deadline, decoded.headers.request_id, decoded.headers.meta) == (
        None,
        "",
        {},
    )


class OldFailure(msgspec.Struct, tag=5, array_like=True):
    """The Failure frame as peers before ``retried`` encode and decode it."""

    id: int
    code: str
    message: str
    details: dict[str, Any] | None = None
    retryable: bool | None = None


def test_a_failure_from_a_peer_without_retried_decodes_as_not_retried() -> None:
    old = msgspec.msgpack.encode(OldFailure(9, "unavailable", "down", None, True))
    (frame,) = FrameReader().feed(header(len(old)) + old)
    assert frame == Failure(9, "unavailable", "down", None, True, retried=False)


def test_a_peer_without_retried_still_reads_our_failure() -> None:
    data = encode_frame(Failure(9, "unavailable", "down", None, False, True))
    old = msgspec.msgpack.decode(bytes(data[HEADER:]), type=OldFailure)
    assert old == OldFailure(9, "unavailable", "down", None, False)


def test_the_retried_flag_is_one_trailing_byte() -> None:
    old = msgspec.msgpack.encode(OldFailure(9, "unavailable", "down"))
    marked = encode_frame(Failure(9, "unavailable", "down", retried=True))
    assert len(marked) - HEADER == len(old) + 1
    assert msgspec.msgpack.decode(bytes(marked[HEADER:]))[-1] is True


def test_default_limit() -> None:
    assert FrameReader().max_frame == DEFAULT_MAX_FRAME
    with pytest.raises(ProtocolError):
        FrameReader().feed(header(DEFAULT_MAX_FRAME + 1))


@pytest.mark.parametrize(
    "body",
    [
        b"\xc1\xc1\xc1",  # never-used msgpack byte
        msgspec.msgpack.encode([99, 1]),  # unknown tag
        msgspec.msgpack.encode([6, "not an id"]),  # wrong field type
        msgspec.msgpack.encode({"id": 1}),  # not a tagged array
        msgspec.msgpack.encode([3, 1]),  # Call missing fields
    ],
    ids=["undecodable", "unknown-tag", "wrong-type", "map", "missing-fields"],
)
def test_garbage_body_is_a_protocol_error(body: bytes) -> None:
    with pytest.raises(ProtocolError, match="malformed frame"):
        FrameReader().feed(header(len(body)) + body)


def deeply_nested_failure(depth: int = 1000) -> bytes:
    """A Failure frame whose details nest ``depth`` arrays deep (msgspec recurses on them)."""
    body = b"\x95\x05\x00\xa1x\xa1y" + b"\x81\xa1k" + b"\x91" * depth + b"\xc0"
    return header(len(body)) + body


@pytest.mark.usefixtures("default_recursion_limit")
def test_deeply_nested_frame_is_a_protocol_error_not_a_recursion_error() -> None:
    with pytest.raises(ProtocolError, match="malformed frame: nested too deep"):
        FrameReader().feed(deeply_nested_failure())


def test_any_exception_from_the_decoder_is_a_protocol_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Broken:
        def decode(self, data: object) -> Frame:
            raise ValueError("surprise")

    monkeypatch.setattr(frames, "_decoder", Broken())
    with pytest.raises(ProtocolError, match="malformed frame: surprise"):
        FrameReader().feed(bytes(encode_frame(Cancel(1))))


def test_pending_reports_a_truncated_frame() -> None:
    data = bytes(encode_frame(Call(1, "a.b", raw({"x": 1}))))
    reader = FrameReader()
    assert reader.feed(data[:-3]) == []
    assert reader.pending == len(data) - 3
    assert reader.feed(data[-3:]) == [Call(1, "a.b", raw({"x": 1}))]
    assert reader.pending == 0


def test_a_large_frame_fed_in_small_chunks_comes_out_once_whole() -> None:
    # A 4 MiB frame arriving in 64 KiB reads: nothing comes out early, pending
    # tracks the bytes held, and the frame behind it (its header split across
    # reads) follows as soon as it is whole.
    big = Reply(1, raw(b"x" * (4 * 1024 * 1024)))
    after = Reply(2, raw("y" * 100_000))
    first, second = bytes(encode_frame(big)), bytes(encode_frame(after))
    stream = first + second
    ends = [(len(first), big), (len(stream), after)]
    chunk = 64 * 1024
    reader = FrameReader()
    out: list[Frame] = []
    for start in range(0, len(stream), chunk):
        piece = stream[start : start + chunk]
        fed = start + len(piece)
        completed = reader.feed(piece)
        assert completed == [frame for end, frame in ends if start < end <= fed], fed
        out.extend(completed)
        consumed = max([end for end, _ in ends if end <= fed], default=0)
        assert reader.pending == fed - consumed, fed
    assert out == [big, after]
    assert reader.pending == 0


def test_pending_counts_a_partial_header() -> None:
    reader = FrameReader()
    assert reader.feed(b"\x00\x00") == []
    assert reader.pending == 2


def test_decoded_raw_outlives_the_reader_buffer() -> None:
    reader = FrameReader()
    data = bytes(encode_frame(Reply(1, raw({"k": "v"}))))
    (first,) = reader.feed(data[:5]) + reader.feed(data[5:])
    reader.feed(bytes(encode_frame(Cancel(2)))[:3])  # reuse the buffer
    assert isinstance(first, Reply)
    assert msgspec.msgpack.decode(first.result) == {"k": "v"}


def test_proof_depends_on_secret_role_and_nonce() -> None:
    base = proof(b"secret", b"nonce-1", b"client")
    assert base == proof(b"secret", b"nonce-1", b"client")
    assert len(base) == 32
    assert base != proof(b"secret", b"nonce-1", b"server")
    assert base != proof(b"secret", b"nonce-2", b"client")
    assert base != proof(b"other", b"nonce-1", b"client")

"""Encoding: msgpack on the wire, JSON at the edges (CLI, gateway), both via msgspec.

Values are anything msgspec encodes natively: builtins, ``msgspec.Struct``,
dataclasses, enums, datetimes, UUIDs, decimals.  A value that does not match
the type it is decoded into raises :class:`~flotilla.errors.InvalidArgument`
naming the offending field, e.g. ``Expected `int`, got `str` - at `$.id```.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from flotilla.errors import InvalidArgument

__all__ = ["decode", "decode_json", "encode", "encode_json", "to_builtins"]

T = TypeVar("T")

_msgpack_encoder = msgspec.msgpack.Encoder()
_json_encoder = msgspec.json.Encoder()
# Decoders are cached per type: building one costs far more than using it.
_msgpack_decoders: dict[Any, msgspec.msgpack.Decoder[Any]] = {}

encode = _msgpack_encoder.encode


def decode(data: bytes | memoryview | msgspec.Raw, type: Any = Any) -> Any:
    """Decode msgpack ``data`` into ``type``; bad shape raises ``InvalidArgument``."""
    decoder = _msgpack_decoders.get(type)
    if decoder is None:
        decoder = _msgpack_decoders[type] = msgspec.msgpack.Decoder(type)
    try:
        return decoder.decode(data)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise _invalid(exc, "msgpack") from None


def encode_json(value: Any) -> bytes:
    return _json_encoder.encode(value)


def decode_json(data: bytes | str, type: Any = Any) -> Any:
    """Decode JSON ``data`` into ``type``; bad JSON or bad shape raises ``InvalidArgument``."""
    try:
        return msgspec.json.decode(data, type=type)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise _invalid(exc, "JSON") from None


def _invalid(exc: msgspec.DecodeError, encoding: str) -> InvalidArgument:
    """A value of the wrong shape names its field; bytes that are no value say so."""
    if isinstance(exc, msgspec.ValidationError):
        return InvalidArgument(str(exc))
    return InvalidArgument(f"malformed {encoding}: {exc}")


def to_builtins(value: Any) -> Any:
    """``value`` as plain dicts, lists and scalars (what JSON would carry)."""
    return msgspec.to_builtins(value)

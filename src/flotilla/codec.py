"""Encoding: msgpack on the wire, JSON at the edges (CLI, gateway), both via msgspec.

Values are anything msgspec encodes natively: builtins, ``msgspec.Struct``,
dataclasses, enums, datetimes, UUIDs, decimals.  A value that does not match
the type it is decoded into raises :class:`~flotilla.errors.InvalidArgument`
naming the offending field, e.g. ``Expected `int`, got `str` - at `$.id```.
A value that cannot be encoded at all (an ``object()``, an int beyond 64 bits
in msgpack) raises ``InvalidArgument`` too: it is the caller's bad input, not a
fault of Flotilla, and :func:`encode_args` names the argument that holds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

from flotilla.errors import InvalidArgument

__all__ = ["decode", "decode_json", "encode", "encode_args", "encode_json", "to_builtins"]

T = TypeVar("T")

_msgpack_encoder = msgspec.msgpack.Encoder()
_json_encoder = msgspec.json.Encoder()
# Decoders are cached per type: building one costs far more than using it.
_msgpack_decoders: dict[Any, msgspec.msgpack.Decoder[Any]] = {}

encode = _msgpack_encoder.encode

# What msgspec raises for a value it cannot encode: an unsupported type
# (TypeError), an int out of range (OverflowError), a bad enum or datetime
# value (ValueError), a structure nested too deep (RecursionError).
_UNENCODABLE = (TypeError, OverflowError, ValueError, RecursionError)


def encode_args(args: Mapping[str, Any]) -> bytes:
    """The msgpack map of a call's arguments; a value that cannot be encoded is named.

    Raises ``InvalidArgument("argument 'a' cannot be encoded: ...")`` with
    ``details={"field": "a"}``.  The happy path costs one encode; only a
    failure pays for finding the culprit, one argument at a time.
    """
    try:
        return _msgpack_encoder.encode(args)
    except _UNENCODABLE as exc:
        for name, value in args.items():
            try:
                _msgpack_encoder.encode(value)
            except _UNENCODABLE as culprit:
                raise InvalidArgument(
                    f"argument {name!r} cannot be encoded: {_reason(culprit)}",
                    details={"field": name},
                ) from None
        # Every value encodes alone: the mapping itself is at fault (a key
        # that is not a string, or not a mapping at all).
        raise InvalidArgument(f"arguments cannot be encoded: {_reason(exc)}") from None


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
    """``value`` as JSON; a value JSON cannot carry raises ``InvalidArgument``.

    Ints of any size are fine (JSON has no limit); NaN and infinities become
    ``null``, as msgspec writes them.
    """
    try:
        return _json_encoder.encode(value)
    except _UNENCODABLE as exc:
        raise InvalidArgument(f"value cannot be encoded as JSON: {_reason(exc)}") from None


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


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deep"
    return str(exc) or type(exc).__name__


def to_builtins(value: Any) -> Any:
    """``value`` as plain dicts, lists and scalars (what JSON would carry)."""
    return msgspec.to_builtins(value)

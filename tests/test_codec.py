"""msgpack on the wire, JSON at the edges; a bad shape is an InvalidArgument naming the field."""

from __future__ import annotations

import datetime
import enum
import uuid
from typing import Any

import msgspec
import pytest

from flotilla import codec
from flotilla.errors import InvalidArgument


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Item(msgspec.Struct):
    id: int
    name: str
    colour: Colour = Colour.RED


def test_msgpack_round_trip_of_builtins() -> None:
    value = {"a": [1, 2.5, "x", None, True], "b": {"c": b"bytes"}}
    assert codec.decode(codec.encode(value)) == value


def test_msgpack_round_trip_into_a_struct() -> None:
    item = Item(id=3, name="lamp", colour=Colour.BLUE)
    assert codec.decode(codec.encode(item), Item) == item


def test_msgpack_round_trip_of_rich_types() -> None:
    stamp = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    ident = uuid.UUID(int=7)
    assert codec.decode(codec.encode(stamp), datetime.datetime) == stamp
    assert codec.decode(codec.encode(ident), uuid.UUID) == ident


def test_decode_accepts_raw() -> None:
    raw = msgspec.Raw(codec.encode({"id": 1, "name": "a"}))
    assert codec.decode(raw, Item) == Item(id=1, name="a")


def test_wrong_type_names_the_field() -> None:
    data = codec.encode({"id": "seven", "name": "lamp"})
    with pytest.raises(InvalidArgument) as caught:
        codec.decode(data, Item)
    assert "$.id" in caught.value.message
    assert "int" in caught.value.message


def test_missing_field_is_named() -> None:
    with pytest.raises(InvalidArgument, match="name"):
        codec.decode(codec.encode({"id": 1}), Item)


def test_malformed_msgpack() -> None:
    with pytest.raises(InvalidArgument, match="malformed msgpack"):
        codec.decode(b"\xc1", Any)


def test_decoders_are_cached_per_type() -> None:
    codec.decode(codec.encode(1), int)
    first = codec._msgpack_decoders[int]
    codec.decode(codec.encode(2), int)
    assert codec._msgpack_decoders[int] is first


def test_json_round_trip() -> None:
    item = Item(id=1, name="lamp")
    data = codec.encode_json(item)
    assert data == b'{"id":1,"name":"lamp","colour":"red"}'
    assert codec.decode_json(data, Item) == item
    assert codec.decode_json(data.decode()) == {"id": 1, "name": "lamp", "colour": "red"}


def test_json_errors() -> None:
    with pytest.raises(InvalidArgument, match="malformed JSON"):
        codec.decode_json(b"{not json")
    with pytest.raises(InvalidArgument, match=r"\$\.id"):
        codec.decode_json(b'{"id": "x", "name": "a"}', Item)


def test_to_builtins() -> None:
    assert codec.to_builtins(Item(id=1, name="a")) == {"id": 1, "name": "a", "colour": "red"}


# -- values that cannot be encoded --------------------------------------------------------


def test_encode_args_round_trips() -> None:
    args = {"id": 1, "item": Item(id=2, name="lamp")}
    assert codec.decode(codec.encode_args(args)) == {
        "id": 1,
        "item": {"id": 2, "name": "lamp", "colour": "red"},
    }


@pytest.mark.parametrize(
    ("value", "reason"),
    [(2**70, "ints"), (object(), "unsupported"), ({"x": [object()]}, "unsupported")],
    ids=["int-beyond-64-bits", "object", "nested-object"],
)
def test_encode_args_names_the_argument_that_cannot_be_encoded(value: Any, reason: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        codec.encode_args({"fine": 1, "bad": value})
    assert caught.value.message.startswith("argument 'bad' cannot be encoded: ")
    assert reason in caught.value.message
    assert caught.value.details == {"field": "bad"}


def test_encode_args_with_a_key_that_is_no_string_is_invalid() -> None:
    class Opaque:
        pass

    with pytest.raises(InvalidArgument, match="arguments cannot be encoded"):
        codec.encode_args({Opaque(): 1})  # type: ignore[dict-item]


def test_encode_args_nested_too_deep_is_invalid() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(InvalidArgument, match="argument 'deep' cannot be encoded: nested too deep"):
        codec.encode_args({"deep": deep})


def test_encode_json_of_big_ints_is_fine_and_of_objects_invalid() -> None:
    assert codec.encode_json({"a": 2**70}) == b'{"a":1180591620717411303424}'
    with pytest.raises(InvalidArgument, match=r"cannot be encoded as JSON: .*unsupported"):
        codec.encode_json({"a": object()})

"""The exception tree: stable, unique codes that rebuild as the same class on the other side."""

from __future__ import annotations

import pytest

from flotilla import errors
from flotilla.errors import (
    ConnectFailed,
    ConnectionCut,
    FlotillaError,
    HandshakeFailed,
    Internal,
    ResourceExhausted,
    Unavailable,
    error_for_code,
)


def all_error_classes() -> list[type[FlotillaError]]:
    found: list[type[FlotillaError]] = []
    pending = [FlotillaError]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            if sub.__module__ == errors.__name__:
                found.append(sub)
                pending.append(sub)
    return found


CLASSES = all_error_classes()
# Local refinements of unavailable: on the wire they are plain unavailable.
WIRE_CLASSES = [cls for cls in CLASSES if not issubclass(cls, (ConnectFailed, ConnectionCut))]


def test_the_tree_has_every_exported_error() -> None:
    exported = {getattr(errors, name) for name in errors.__all__ if name != "error_for_code"}
    assert exported == {FlotillaError, *CLASSES}


def test_codes_are_unique_except_connect_failed() -> None:
    codes = [cls.code for cls in WIRE_CLASSES]
    assert len(codes) == len(set(codes))
    assert ConnectFailed.code == Unavailable.code == "unavailable"


@pytest.mark.parametrize("cls", WIRE_CLASSES, ids=lambda cls: cls.__name__)
def test_error_for_code_round_trips(cls: type[FlotillaError]) -> None:
    original = cls("it broke", details={"field": "id"})
    rebuilt = error_for_code(original.code, original.message, original.details)
    assert type(rebuilt) is cls
    assert rebuilt.message == "it broke"
    assert rebuilt.details == {"field": "id"}
    assert rebuilt.retryable == cls.retryable


def test_error_for_code_takes_the_senders_retryable() -> None:
    assert error_for_code("unavailable", "lost", None, False).retryable is False
    assert error_for_code("internal", "odd", None, True).retryable is True
    assert error_for_code("resource_exhausted", "full").retryable is True  # class default
    assert error_for_code("resource_exhausted", "full", None, None).retryable is True


def test_retried_is_off_by_default_and_carried_by_error_for_code() -> None:
    assert not Unavailable("x").retried
    assert Unavailable("x", retried=True).retried
    assert error_for_code("unavailable", "leaf down", None, False, True).retried
    assert error_for_code("teapot", "odd", retried=True).retried  # unknown codes too
    assert not error_for_code("unavailable", "leaf down").retried


def test_connect_failed_rebuilds_as_unavailable() -> None:
    rebuilt = error_for_code(ConnectFailed.code, "no route")
    assert type(rebuilt) is Unavailable
    assert rebuilt.message == "no route"


def test_never_sent_is_local_knowledge() -> None:
    assert ConnectFailed("x").never_sent
    assert HandshakeFailed("x").never_sent
    assert not Unavailable("x").never_sent
    assert Unavailable("x", never_sent=True).never_sent
    # A rebuilt error came from a peer, so it surely was sent.
    assert not error_for_code(HandshakeFailed.code, "x").never_sent


def test_unknown_code_becomes_internal_naming_the_code() -> None:
    rebuilt = error_for_code("teapot", "short and stout")
    assert type(rebuilt) is Internal
    assert "teapot" in rebuilt.message
    assert "short and stout" in rebuilt.message


def test_message_defaults_to_the_code() -> None:
    assert Unavailable().message == "unavailable"
    assert str(Unavailable()) == "unavailable"
    assert Unavailable().details == {}


def test_retryable_per_class() -> None:
    retryable = {cls for cls in CLASSES if cls.retryable}
    assert retryable == {
        ResourceExhausted,
        errors.Aborted,
        Unavailable,
        ConnectFailed,
        HandshakeFailed,
    }


def test_instance_may_override_retryable() -> None:
    lost = Unavailable("connection lost", retryable=False)
    assert lost.retryable is False
    assert Unavailable.retryable is True
    assert Unavailable("refused").retryable is True
    assert Internal("odd", retryable=True).retryable is True
    assert Internal.retryable is False


def test_repr_names_class_and_message() -> None:
    assert repr(Internal("boom")) == "Internal('boom')"

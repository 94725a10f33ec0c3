"""import_named: ``module:attribute`` entries imported, with errors that name the entry."""

from __future__ import annotations

import pytest

from flotilla.errors import ConfigError
from flotilla.runtime.named import import_named

ANSWER = 42


def test_the_named_attribute_is_returned() -> None:
    assert import_named("tests.runtime.test_named:ANSWER", "answer") == 42


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tests.runtime.test_named", "answer 'tests.runtime.test_named' is not 'module:attribute'"),
        (":ANSWER", "answer ':ANSWER' is not 'module:attribute'"),
        ("no_such_module_here:X", "cannot import 'no_such_module_here' for answer"),
        (
            "tests.runtime.test_named:NOPE",
            "module 'tests.runtime.test_named' has no attribute 'NOPE'",
        ),
    ],
)
def test_a_name_that_cannot_be_imported_is_a_config_error(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        import_named(spec, "answer")
    assert message in caught.value.message


def test_the_form_is_what_the_entry_says() -> None:
    with pytest.raises(ConfigError, match="is not 'module:Class'"):
        import_named("hello", "service", form="module:Class")

"""Input checks shared by the services: a refusal names the field it is about.

Types are checked by Flotilla at each service's edge (a string where an int
belongs never reaches a method); these check the values.  The field's name is
in the message and in ``details["field"]``, so the gateway's 422 can say it.
"""

from __future__ import annotations

import os
import unicodedata
from typing import Annotated

import msgspec

from flotilla import ConfigError, InvalidArgument

RowId = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
"""An id as the databases store it (a signed 64-bit integer): a larger number in a path or a
body is refused at the service's edge (422 naming it), not handed to the driver to overflow."""


def invalid(field: str, problem: str) -> InvalidArgument:
    """``InvalidArgument`` about ``field`` (``"items[2].quantity"``, say)."""
    return InvalidArgument(f"{field}: {problem}", details={"field": field})


def text(field: str, value: str, *, max_length: int, min_length: int = 1) -> str:
    """``value`` stripped of surrounding blanks, of ``min_length`` to ``max_length`` chars."""
    value = value.strip()
    if len(value) < min_length:
        raise invalid(
            field,
            "must not be blank" if min_length == 1 else f"must be at least {min_length} characters",
        )
    if len(value) > max_length:
        raise invalid(field, f"must be at most {max_length} characters")
    if any(unicodedata.category(char) == "Cc" for char in value):
        # A NUL, say: PostgreSQL refuses it in text, and no name or email holds one.
        raise invalid(field, "must not contain control characters")
    return value


def count(field: str, value: int, *, low: int, high: int) -> int:
    """``value`` if ``low <= value <= high``."""
    if value < low:
        raise invalid(field, f"must be at least {low}, not {value}")
    if value > high:
        raise invalid(field, f"must be at most {high}, not {value}")
    return value


def env_int(name: str, default: int, *, low: int, high: int) -> int:
    """The integer in environment variable ``name`` (``default`` when unset); a value that
    is not an integer from ``low`` to ``high`` stops the service with ``ConfigError``."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigError(f"{name}={text!r}: must be an integer from {low} to {high}")
    return value

"""The shared checks: field errors name their field; settings are integers in range."""

from __future__ import annotations

import pytest
from shop.checks import count, env_int, text

from flotilla import ConfigError, InvalidArgument


def test_a_value_out_of_range_names_its_field() -> None:
    assert count("limit", 5, low=1, high=10) == 5
    with pytest.raises(InvalidArgument, match=r"^limit: must be at most 10, not 11$") as caught:
        count("limit", 11, low=1, high=10)
    assert caught.value.details == {"field": "limit"}
    assert text("name", "  Ada ", max_length=5) == "Ada"
    with pytest.raises(InvalidArgument, match=r"^name: must be at most 2 characters$"):
        text("name", "Ada", max_length=2)


@pytest.mark.parametrize("value", ["a\x00b", "tab\tinside", "bell\x07"])
def test_text_with_a_control_character_is_refused(value: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^name: must not contain control characters$"):
        text("name", value, max_length=50)


def test_a_setting_is_read_or_defaulted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOP_X", raising=False)
    assert env_int("SHOP_X", 7, low=0, high=10) == 7
    monkeypatch.setenv("SHOP_X", " 9 ")
    assert env_int("SHOP_X", 7, low=0, high=10) == 9


@pytest.mark.parametrize("value", ["ten", "11", "-1", "1.5"])
def test_a_bad_setting_stops_the_service_naming_it(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SHOP_X", value)
    with pytest.raises(ConfigError, match=r"^SHOP_X=.*: must be an integer from 0 to 10$"):
        env_int("SHOP_X", 7, low=0, high=10)

"""The simulated card provider: which cards pay, the limit, and its setting."""

from __future__ import annotations

import pytest
from shop.payments import Payments

from flotilla import ConfigError


def test_only_the_good_card_pays_and_only_up_to_the_limit() -> None:
    payments = Payments(limit_cents=1000)
    assert payments.decide("tok_ok", 1000) is None
    assert payments.decide("tok_ok", 1001) == "1001 cents is over the limit of 1000"
    assert payments.decide("tok_decline", 5) == "card 'tok_decline' was declined"
    assert payments.decide("tok_unknown", 5) == "card 'tok_unknown' was declined"


def test_the_limit_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOP_PAYMENT_LIMIT_CENTS", raising=False)
    assert Payments().limit_cents == 1_000_000
    monkeypatch.setenv("SHOP_PAYMENT_LIMIT_CENTS", "2500")
    assert Payments().limit_cents == 2500
    monkeypatch.setenv("SHOP_PAYMENT_LIMIT_CENTS", "lots")
    with pytest.raises(ConfigError, match="SHOP_PAYMENT_LIMIT_CENTS='lots'"):
        Payments()

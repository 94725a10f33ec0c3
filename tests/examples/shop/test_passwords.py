"""The scrypt hashes: a round trip, a wrong password, a stored value that is no hash."""

from __future__ import annotations

import pytest
from shop.passwords import ScryptCost, hash_password, verify_password

CHEAP = ScryptCost(log_n=4)


async def test_a_password_verifies_against_its_hash_and_no_other() -> None:
    stored = await hash_password("correct horse", CHEAP)
    assert await verify_password("correct horse", stored)
    assert not await verify_password("correct horsE", stored)
    assert stored != await hash_password("correct horse", CHEAP)  # a fresh salt each time


async def test_the_hash_keeps_its_cost_so_it_can_be_raised_later() -> None:
    stored = await hash_password("correct horse", ScryptCost(log_n=5, r=4, p=2))
    assert stored.split("$")[:4] == ["scrypt", "5", "4", "2"]
    assert await verify_password("correct horse", stored)


@pytest.mark.parametrize("stored", ["", "plain text", "bcrypt$4$8$1$00$00", "scrypt$x$8$1$00$00"])
async def test_a_stored_value_that_is_no_scrypt_hash_matches_nothing(stored: str) -> None:
    assert not await verify_password("plain text", stored)

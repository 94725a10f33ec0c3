"""The running shop, one per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tests.examples.shop.kit import ShopKit, running_shop


@pytest.fixture
async def shop() -> AsyncIterator[ShopKit]:
    async with running_shop() as kit:
        yield kit

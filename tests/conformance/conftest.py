"""Clean-up for the conformance suites' server backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.servers import NATS, delete_streams, nats_prefix


@pytest.fixture(autouse=True)
async def _drop_nats_event_streams(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[None]:
    """After an events test on NATS, delete the streams it made (named after its tmp_path)."""
    yield
    params = getattr(request.node, "callspec", None)
    on_nats = params is not None and "nats" in (
        params.params.get("setup"),
        params.params.get("two_handles"),
    )
    if on_nats:
        prefix = nats_prefix(tmp_path)
        await delete_streams(NATS.url, [prefix, f"{prefix}_DLQ"])

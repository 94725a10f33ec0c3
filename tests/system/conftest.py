"""The event backends the multi-process event tests run on (see ``eventful/brokers.py``).

``nats`` needs the NATS server of ``tests/servers.py`` (skipped without it,
failed under ``CI=true``); every process of the test reaches it through a
proxy of the test's, and the test's streams are deleted after it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from tests.proxy import TcpProxy
from tests.servers import NATS, delete_streams, require, unique_name
from tests.system.eventful.brokers import Broker, EmbeddedBroker, NatsBroker


@pytest.fixture(params=["embedded", "nats"])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    if request.param == "embedded":
        yield EmbeddedBroker()
        return
    url = require(NATS)
    server = urlsplit(url)
    prefix = unique_name("EV")
    try:
        async with TcpProxy(server.hostname or "127.0.0.1", server.port or 4222) as proxy:
            yield NatsBroker(proxy, prefix)
    finally:
        await delete_streams(url, [prefix, f"{prefix}_DLQ"])

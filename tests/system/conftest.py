"""The event backends the multi-process event tests run on (see ``eventful/brokers.py``)."""

from __future__ import annotations

import pytest
from tests.system.eventful.brokers import Broker, EmbeddedBroker


@pytest.fixture(params=["embedded"])
def broker(request: pytest.FixtureRequest) -> Broker:
    assert request.param == "embedded"
    return EmbeddedBroker()

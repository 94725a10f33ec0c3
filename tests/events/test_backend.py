"""The backend contract's own types: AlreadyHandled stands in the one error tree."""

from __future__ import annotations

import pytest

from flotilla import AlreadyExists, AlreadyHandled, Service, rpc
from flotilla.errors import FlotillaError
from flotilla.testing import Cluster


def test_already_handled_is_an_already_exists() -> None:
    error = AlreadyHandled("event e1 was already handled by group 'billing'")
    assert isinstance(error, AlreadyExists)
    assert isinstance(error, FlotillaError)
    assert (error.code, error.retryable) == ("already_exists", False)


class Charges(Service, name="charges"):
    @rpc
    async def charge(self, event_id: str) -> None:
        # What an RPC method that opens db.transaction(event=...) lets escape on a repeat.
        raise AlreadyHandled(f"event {event_id} was already handled by group 'charges'")


async def test_an_rpc_that_lets_it_escape_answers_already_exists_not_internal() -> None:
    async with Cluster() as cluster:
        await cluster.add(Charges())
        with pytest.raises(AlreadyExists, match="already handled"):
            await cluster.call("charges.charge", event_id="e1")

"""The callee of the hello system: greets, and says which replica did."""

from __future__ import annotations

import os

import msgspec

from flotilla import InvalidArgument, Service, rpc


class Greeting(msgspec.Struct):
    text: str
    replica: str
    """Which copy of the greeter answered (``flotilla run`` numbers them)."""


class Greeter(Service, name="greeter"):
    def __init__(self) -> None:
        self.greeting = os.environ.get("GREETING", "Hello")
        self.replica = f"greeter#{os.environ.get('FLOTILLA_REPLICA', '0')} (pid {os.getpid()})"

    @rpc(idempotent=True)
    async def hello(self, name: str) -> Greeting:
        if not name.strip():
            raise InvalidArgument("name must not be blank")
        return Greeting(text=f"{self.greeting}, {name}!", replica=self.replica)

"""The caller of the hello system: greets a whole list of people through the greeter."""

from __future__ import annotations

import asyncio

from greeter import Greeter, Greeting

from flotilla import Context, Service, rpc


class Front(Service, name="front"):
    @rpc
    async def greet(self, ctx: Context, names: list[str]) -> list[Greeting]:
        """One greeter call per name, all at once; the balancer spreads them over the replicas."""
        greeter = ctx.client(Greeter)
        return list(await asyncio.gather(*(greeter.hello(name=name) for name in names)))

"""Typed clients: call a service's ``@rpc`` methods as attributes, results decoded into their types.

::

    product = await ctx.client(Catalog).get(id=1)   # a Product, not a dict
    quick = ctx.client(Catalog).with_policy(Policy(retry=RetryPolicy(max_attempts=1)))

A client may carry a resilience policy of its own (``with_policy``, or
``policy=`` to ``ctx.client``): it is every call's ``Request.policy``, over
what the system configures for the method.

The client reads the method specs of the service class (its timeout and
idempotence travel with each call); it never imports anything at run time that
imports it back, so ``context`` can hand one out without an import cycle.

Statically, attributes answered by ``__getattr__`` are typed only loosely; the
mypy plugin :mod:`flotilla.mypy_plugin` gives each one the signature of the
service's ``@rpc`` method (less ``self`` and the Context parameter) and reports
a name that is no ``@rpc`` method, exactly the names this class refuses.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from flotilla.errors import InvalidArgument

if TYPE_CHECKING:
    from flotilla.context import Context, Invoker
    from flotilla.resilience.policy import Policy
    from flotilla.service import Service

__all__ = ["TypedClient"]

S = TypeVar("S", bound="Service")


class TypedClient(Generic[S]):
    """Calls the ``@rpc`` methods of a service class by attribute; results come back typed.

    Positional arguments map to the method's parameters in order (the Context
    parameter skipped).  Only ``@rpc`` methods are attributes: anything else
    (a helper, ``on_start``) raises :class:`AttributeError`.
    """

    def __init__(
        self,
        invoker: Invoker,
        service: type[S],
        context: Context | None,
        *,
        policy: Policy | None = None,
    ) -> None:
        self._invoker = invoker
        self._service = service
        self._context = context
        self._policy = policy
        self._by_attribute = {spec.attribute: spec for spec in service.methods().values()}

    def with_policy(self, policy: Policy | None) -> TypedClient[S]:
        """The same client, its calls made under ``policy`` (None: the configured one)."""
        return TypedClient(self._invoker, self._service, self._context, policy=policy)

    def __getattr__(self, attribute: str) -> Callable[..., Awaitable[Any]]:
        spec = self._by_attribute.get(attribute)
        if spec is None:
            raise AttributeError(f"{self._service.__name__} has no @rpc method {attribute!r}")
        target = f"{self._service.name}.{spec.name}"
        fields = spec.args_type.__struct_fields__

        async def call(*args: Any, **kwargs: Any) -> Any:
            if len(args) > len(fields):
                raise InvalidArgument(f"{target} takes at most {len(fields)} positional arguments")
            for name, value in zip(fields, args, strict=False):
                if name in kwargs:
                    raise InvalidArgument(f"{target} got multiple values for argument {name!r}")
                kwargs[name] = value
            return await self._invoker.invoke(
                target,
                kwargs,
                context=self._context,
                result_type=spec.result_type,
                spec=spec,
                policy=self._policy,
            )

        return call

"""The context of one call: its headers (who asked, by when, under which request id), and how
to call onward.

A handler that declares a ``ctx: Context`` parameter gets the context of the
call it serves.  Calls made through it inherit the request id and the
deadline, so a chain of calls shares one time budget and one id in the logs::

    @rpc
    async def checkout(self, ctx: Context, cart_id: int) -> Receipt:
        cart = await ctx.call("carts.get", id=cart_id)
        await ctx.emit("orders.created", OrderCreated(cart_id=cart_id), key=str(cart_id))

An event handler's context is the context of the call that emitted the event
(its headers travel in the envelope, without the deadline), with
:attr:`Context.event` set to the envelope being handled.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Awaitable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from flotilla.calls.typed_client import TypedClient
from flotilla.errors import FailedPrecondition
from flotilla.headers import Headers, Principal

if TYPE_CHECKING:
    from flotilla.events.envelope import Envelope
    from flotilla.service import MethodSpec, Service

__all__ = ["Context", "Emitter", "Invoker", "new_request_id"]

S = TypeVar("S", bound="Service")


class _RequestIds:
    """A random prefix per process and a counter: unique across processes and
    calls, with no system call per id (``os.urandom`` is one)."""

    def __init__(self) -> None:
        self.reset()
        # A forked child must not hand out its parent's ids.
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = os.urandom(6).hex()
        self.counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):x}"


_request_ids = _RequestIds()


def new_request_id() -> str:
    """A new request id, unique across processes."""
    return _request_ids.next()


class Invoker(Protocol):
    """What sends calls for a context (implemented by :class:`flotilla.calls.Caller`)."""

    async def invoke(
        self,
        target: str,
        args: dict[str, Any],
        *,
        context: Context | None,
        result_type: Any = Any,
        spec: MethodSpec | None = None,
    ) -> Any: ...


class Emitter(Protocol):
    """What publishes events for a context (:class:`flotilla.events.emitter.Emitter`)."""

    async def emit(
        self, topic: str, payload: Any, *, key: str | None, headers: Headers, source: str
    ) -> Envelope: ...


class Context:
    """The call being served (or the root of a chain started outside any call).

    Its :attr:`headers` are those the call arrived with; calls made through it
    carry the same request id, deadline, trace context, principal and metadata,
    with this service as their caller.
    """

    __slots__ = ("_emitter", "_headers", "_invoker", "_onward", "event", "service")

    def __init__(
        self,
        invoker: Invoker,
        headers: Headers | None = None,
        *,
        service: str = "",
        emitter: Emitter | None = None,
        event: Envelope | None = None,
    ) -> None:
        self._invoker = invoker
        self._emitter = emitter
        self.event = event
        """The envelope of the event being handled (None outside an event handler)."""
        if headers is None:
            headers = Headers(request_id=new_request_id())
        elif not headers.request_id:
            headers = headers.replace(request_id=new_request_id())
        self._headers = headers
        self.service = service
        """The service serving this call ('' outside any service)."""
        self._onward: Headers | None = None

    @property
    def headers(self) -> Headers:
        """The headers the call arrived with (plus what :meth:`set_meta` added)."""
        return self._headers

    @property
    def request_id(self) -> str:
        """Shared by every call of one chain, and in their log lines."""
        return self.headers.request_id

    @property
    def caller(self) -> str:
        """The service that made this call ('' when it came from outside)."""
        return self.headers.caller

    @property
    def deadline(self) -> float | None:
        """Absolute, on ``time.monotonic()`` (cheaper to read than the loop's clock, and
        the same on every loop); None means no deadline."""
        return self.headers.deadline

    @property
    def meta(self) -> Mapping[str, str]:
        """User metadata (read-only: :meth:`set_meta` adds to it); travels with onward calls."""
        # A read-only view: the headers it belongs to may be shared with other calls.
        return MappingProxyType(self.headers.meta)

    @property
    def principal(self) -> Principal | None:
        """Who the call acts for, when the edge authenticated someone."""
        return self.headers.principal

    def set_meta(self, **items: str) -> None:
        """Add ``items`` to the metadata of the calls made from here on through this context."""
        self._headers = self._headers.with_meta(**items)
        self._onward = None

    def onward_headers(self) -> Headers:
        """The headers of a call made through this context (made once, then reused)."""
        onward = self._onward
        if onward is None:
            headers = self.headers
            onward = (
                headers if headers.caller == self.service else headers.replace(caller=self.service)
            )
            self._onward = onward
        return onward

    def remaining(self) -> float | None:
        """Seconds left before the deadline (negative once passed), or None."""
        return self.headers.remaining()

    def call(self, target: str, /, **args: Any) -> Awaitable[Any]:
        """Call ``"service.method"`` with keyword arguments; await it for the result as builtins."""
        return self._invoker.invoke(target, args, context=self)

    def client(self, service: type[S]) -> TypedClient[S]:
        """A typed client for ``service``: ``await ctx.client(Catalog).get(id=1)``."""
        return TypedClient(self._invoker, service, self)

    async def emit(self, topic: str, payload: Any, /, *, key: str | None = None) -> str:
        """Publish an event now; returns its id once the backend has it.

        ``payload`` is anything msgspec encodes (a ``msgspec.Struct``, say);
        events of one ``key`` are handled in order.  The event carries this
        context's headers (request id, trace, principal, metadata; not the
        deadline).  It is at-least-once from the moment this returns; if it
        raises (the backend is unreachable), the event was not published.  To
        emit together with a database change, use the transaction's
        ``tx.emit`` (the outbox) instead.
        """
        if self._emitter is None:
            raise FailedPrecondition(
                f"cannot emit {topic!r}: this context has no event backend "
                "(emit from a handler, or through node.emit)"
            )
        envelope = await self._emitter.emit(
            topic, payload, key=key, headers=self.onward_headers(), source=self.service
        )
        return envelope.id

    def __repr__(self) -> str:
        return f"Context(service={self.service!r}, request_id={self.request_id!r})"

"""Services as small typed classes: ``Service``, ``@rpc`` and ``@on_event``.

::

    class Catalog(Service, name="catalog"):
        @rpc(idempotent=True)
        async def get(self, id: int) -> Product: ...

        @on_event("orders.created")
        async def reserve(self, order: OrderCreated) -> None: ...

Each ``@rpc`` method's parameters become a msgspec struct that validates the
arguments at the edge of the callee's process; a parameter annotated
:class:`~flotilla.context.Context` receives the call's context instead.  The
specs are read lazily, on first use, so annotations may name types defined
after the class.

What can be checked without resolving annotations is checked when the class
is defined, so a mistake fails at import, not on the first call
(:mod:`flotilla.method_signatures`).  :meth:`Service.method_table` describes
the methods for the registry: name, timeout, idempotence and JSON Schemas of
arguments and result (:mod:`flotilla.method_table`).
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar, overload

import msgspec

from flotilla.context import Context
from flotilla.errors import InvalidArgument
from flotilla.events.envelope import check_topic_and_key
from flotilla.events.policy import DeliveryPolicy
from flotilla.method_signatures import check_handler_signature, check_kind, check_rpc_signature
from flotilla.method_table import method_info
from flotilla.registry.base import MethodInfo

__all__ = ["EventSpec", "MethodSpec", "Service", "on_event", "rpc"]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


class MethodSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What the runtime knows of one ``@rpc`` method."""

    name: str
    attribute: str
    """The Python attribute on the class (the wire name may differ)."""
    args_type: type[msgspec.Struct]
    """A struct with one field per parameter; decoding into it validates the call."""
    result_type: Any
    context_param: str | None
    idempotent: bool
    timeout: float | None


class EventSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What the runtime knows of one ``@on_event`` handler (delivered by the events layer)."""

    topic: str
    attribute: str
    group: str | None
    """None: the service's name."""
    broadcast: bool = False
    """Every instance gets every event (rather than one instance of the group)."""
    payload_param: str = ""
    payload_type: Any = Any
    """What the payload is decoded into; a payload that does not fit is dead-lettered."""
    context_param: str | None = None
    delivery: DeliveryPolicy | None = None
    """This handler's own redelivery policy; None: the node's (``NodeConfig.delivery``)."""


class _EventMark(msgspec.Struct, frozen=True):
    topic: str
    group: str | None
    broadcast: bool
    delivery: DeliveryPolicy | None


class _RpcMark(msgspec.Struct, frozen=True):
    name: str | None
    idempotent: bool
    timeout: float | None


@overload
def rpc(fn: F, /) -> F: ...


@overload
def rpc(
    *, name: str | None = None, idempotent: bool = False, timeout: float | None = None
) -> Callable[[F], F]: ...


def rpc(
    fn: F | None = None,
    /,
    *,
    name: str | None = None,
    idempotent: bool = False,
    timeout: float | None = None,
) -> F | Callable[[F], F]:
    """Expose an ``async`` method as a remote procedure: ``@rpc`` or ``@rpc(timeout=2)``.

    ``idempotent`` tells the retry layer that a second attempt is harmless;
    ``timeout`` caps how long a caller waits by default.  The method keeps its
    type, so type checkers see its real signature.
    """

    def mark(method: F) -> F:
        _require_async(method, "@rpc method")
        method.__flotilla_rpc__ = _RpcMark(name, idempotent, timeout)  # type: ignore[attr-defined]
        return method

    return mark(fn) if fn is not None else mark


def on_event(
    topic: str,
    *,
    group: str | None = None,
    broadcast: bool = False,
    delivery: DeliveryPolicy | None = None,
) -> Callable[[F], F]:
    """Handle the events of ``topic``: ``async def on_order(self, order: OrderCreated)``.

    The one parameter besides ``self`` (and an optional ``ctx: Context``,
    whose ``ctx.event`` is the envelope) receives the payload, decoded into its
    annotation.  Each event goes to one instance of ``group`` (default: the
    service's name); with ``broadcast=True`` every instance gets every event.
    ``delivery`` replaces the node's :class:`DeliveryPolicy` for this handler
    (more attempts for a handler that calls a flaky service, say).
    """
    try:
        check_topic_and_key(topic, None)  # a topic nobody could emit to would never fire
    except InvalidArgument as exc:
        raise ValueError(f"@on_event needs a topic name: {exc.message}") from None

    def mark(method: F) -> F:
        _require_async(method, "@on_event handler")
        method.__flotilla_event__ = _EventMark(topic, group, broadcast, delivery)  # type: ignore[attr-defined]
        return method

    return mark


class Service:
    """Base class of a service: ``class Catalog(Service, name="catalog", version="1.2")``.

    Override :meth:`on_start` / :meth:`on_stop` for set-up and tear-down, and
    :meth:`health` to report readiness; the runtime calls all three.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "0"

    def __init_subclass__(cls, *, name: str | None = None, version: str | None = None) -> None:
        super().__init_subclass__()
        if name is not None:
            if not _NAME.match(name):
                raise ValueError(f"service name {name!r} must match {_NAME.pattern}")
            cls.name = name
        elif "name" not in cls.__dict__:
            cls.name = _snake(cls.__name__)
        if version is not None:
            cls.version = version
        for member in cls.__dict__.values():
            if isinstance(getattr(member, "__flotilla_rpc__", None), _RpcMark):
                check_rpc_signature(member)
            if isinstance(getattr(member, "__flotilla_event__", None), _EventMark):
                check_handler_signature(member)

    async def on_start(self) -> None:
        """Called once before the service is registered."""

    async def on_stop(self) -> None:
        """Called once after the service stopped serving."""

    async def health(self) -> bool:
        """``False`` marks the instance unhealthy: callers stop picking it."""
        return True

    @classmethod
    def methods(cls) -> dict[str, MethodSpec]:
        """The ``@rpc`` methods by wire name (read once per class, then cached)."""
        cached: dict[str, MethodSpec] | None = cls.__dict__.get("_flotilla_methods")
        if cached is None:
            cached = {}
            for attribute, member in inspect.getmembers(cls):
                mark = getattr(member, "__flotilla_rpc__", None)
                if isinstance(mark, _RpcMark):
                    spec = _method_spec(cls, attribute, member, mark)
                    cached[spec.name] = spec
            setattr(cls, "_flotilla_methods", cached)  # noqa: B010 - per class, not inherited
        return cached

    @classmethod
    def method_table(cls) -> tuple[MethodInfo, ...]:
        """The ``@rpc`` methods as the registry publishes them, sorted by name (cached per class).

        ``params`` is an object schema with one property per parameter (the
        Context parameter excluded); ``result`` is the schema of the result.
        """
        cached: tuple[MethodInfo, ...] | None = cls.__dict__.get("_flotilla_method_table")
        if cached is None:
            infos = (method_info(cls, spec) for spec in cls.methods().values())
            cached = tuple(sorted(infos, key=lambda info: info.name))
            setattr(cls, "_flotilla_method_table", cached)  # noqa: B010 - per class, not inherited
        return cached

    @classmethod
    def event_handlers(cls) -> list[EventSpec]:
        """The ``@on_event`` handlers of the class (read once per class, then cached)."""
        cached: list[EventSpec] | None = cls.__dict__.get("_flotilla_event_handlers")
        if cached is None:
            cached = []
            for attribute, member in inspect.getmembers(cls):
                mark = getattr(member, "__flotilla_event__", None)
                if isinstance(mark, _EventMark):
                    cached.append(_event_spec(attribute, member, mark))
            setattr(cls, "_flotilla_event_handlers", cached)  # noqa: B010 - per class
        return list(cached)


def _event_spec(attribute: str, fn: Any, mark: _EventMark) -> EventSpec:
    # include_extras: Annotated[int, msgspec.Meta(ge=1)] keeps its constraints.
    hints = typing.get_type_hints(fn, include_extras=True)
    payload_param, context_param = "", None
    for param in list(inspect.signature(fn).parameters.values())[1:]:
        if hints.get(param.name) is Context:
            context_param = param.name
        else:
            payload_param = param.name
    return EventSpec(
        topic=mark.topic,
        attribute=attribute,
        group=mark.group,
        broadcast=mark.broadcast,
        payload_param=payload_param,
        payload_type=hints[payload_param],
        context_param=context_param,
        delivery=mark.delivery,
    )


def _method_spec(cls: type, attribute: str, fn: Any, mark: _RpcMark) -> MethodSpec:
    # include_extras: Annotated[int, msgspec.Meta(ge=1)] keeps its constraints.
    hints = typing.get_type_hints(fn, include_extras=True)
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    context_param = None
    for param in list(inspect.signature(fn).parameters.values())[1:]:
        check_kind(fn, param)
        annotation = hints.get(param.name, Any)
        if annotation is Context:
            context_param = param.name
        elif param.default is param.empty:
            fields.append((param.name, annotation))
        else:
            fields.append((param.name, annotation, param.default))
    args_type = msgspec.defstruct(
        f"{cls.__name__}.{attribute}.args", fields, kw_only=True, forbid_unknown_fields=True
    )
    return MethodSpec(
        name=mark.name or attribute,
        attribute=attribute,
        args_type=args_type,
        result_type=hints.get("return", Any),
        context_param=context_param,
        idempotent=mark.idempotent,
        timeout=mark.timeout,
    )


def _require_async(method: Callable[..., Any], what: str) -> None:
    if not inspect.iscoroutinefunction(method):
        raise TypeError(f"{what} {method.__qualname__} must be `async def`")


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()

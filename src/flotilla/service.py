"""Services as small typed classes: ``Service``, ``@rpc`` and ``@on_event``.

::

    class Catalog(Service, name="catalog"):
        @rpc(idempotent=True)
        async def get(self, id: int) -> Product: ...

        @on_event("orders.created")
        async def reserve(self, event: OrderCreated) -> None: ...

Each ``@rpc`` method's parameters become a msgspec struct that validates the
arguments at the edge of the callee's process; a parameter annotated
:class:`~flotilla.context.Context` receives the call's context instead.  The
specs are read lazily, on first use, so annotations may name types defined
after the class.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

import msgspec

from flotilla.context import Context

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


class _RpcMark(msgspec.Struct, frozen=True):
    name: str | None
    idempotent: bool
    timeout: float | None


def rpc(
    fn: F | None = None,
    *,
    name: str | None = None,
    idempotent: bool = False,
    timeout: float | None = None,
) -> Any:
    """Expose an ``async`` method as a remote procedure.

    ``idempotent`` tells the retry layer that a second attempt is harmless;
    ``timeout`` caps how long a caller waits by default.
    """

    def mark(method: F) -> F:
        _require_async(method, "@rpc method")
        method.__flotilla_rpc__ = _RpcMark(name, idempotent, timeout)  # type: ignore[attr-defined]
        return method

    return mark(fn) if fn is not None else mark


def on_event(topic: str, *, group: str | None = None) -> Callable[[F], F]:
    """Subscribe an ``async`` method to ``topic``; ``group`` defaults to the service name."""

    def mark(method: F) -> F:
        _require_async(method, "@on_event handler")
        method.__flotilla_event__ = EventSpec(  # type: ignore[attr-defined]
            topic=topic, attribute=method.__name__, group=group
        )
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
    def event_handlers(cls) -> list[EventSpec]:
        """The ``@on_event`` handlers of the class."""
        return [
            member.__flotilla_event__
            for _, member in inspect.getmembers(cls)
            if isinstance(getattr(member, "__flotilla_event__", None), EventSpec)
        ]


def _method_spec(cls: type, attribute: str, fn: Any, mark: _RpcMark) -> MethodSpec:
    hints = typing.get_type_hints(fn)
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    context_param = None
    for param in list(inspect.signature(fn).parameters.values())[1:]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise TypeError(
                f"@rpc method {fn.__qualname__} cannot take *args, **kwargs or "
                "positional-only parameters: arguments travel by name"
            )
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

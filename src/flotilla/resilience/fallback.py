"""Fallbacks: what a caller answers itself when a call it makes fails for good.

A service declares, on its own class, what to do when a call it makes fails::

    class Front(Service, name="front"):
        @fallback("catalog.get")
        async def cached_item(self, error: FlotillaError, id: int) -> Item:
            return self.cache[id]

The method receives the error and the call's arguments (by name), and its
result is the call's result.  By default it runs on ``unavailable`` (every
replica down, every breaker open, none took it); ``on=`` names other errors
(``on=(Unavailable, DeadlineExceeded)``).  A call from outside any service
(``node.call``) may have fallbacks too: ``Fallbacks({"catalog.get": fn})``.

:class:`Fallbacks` is the ``fallback`` layer of the request tier
(:data:`~flotilla.pipeline.REQUEST_LAYERS`): it stands above retries, so
it sees only the final outcome, after every retry and requeue.  A fallback
that raises fails the call with an error of the original's class whose
message names both failures, and whose ``__cause__`` is an
``ExceptionGroup`` holding both.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, NamedTuple, TypeVar

import msgspec

from flotilla import codec
from flotilla.errors import ConfigError, FlotillaError, Unavailable
from flotilla.pipeline import Handler
from flotilla.request import Request
from flotilla.resilience.signals import SignalKind, Signals

__all__ = ["Fallbacks", "fallback"]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
FallbackFunction = Callable[..., Awaitable[Any]]
"""``async (error, **args) -> result``."""
Errors = type[FlotillaError] | tuple[type[FlotillaError], ...]


class _Mark(NamedTuple):
    target: str
    on: tuple[type[FlotillaError], ...]


class _Declared(NamedTuple):
    function: FallbackFunction
    name: str
    on: tuple[type[FlotillaError], ...]


def fallback(target: str, *, on: Errors = Unavailable) -> Callable[[F], F]:
    """Declare the decorated ``async def`` method as the fallback of the calls its service makes to
    ``target`` (``"service.method"``), run when such a call fails with one of ``on``."""
    _split(target)
    errors = _errors(on, target)

    def mark(method: F) -> F:
        _require_async(method)
        method.__flotilla_fallback__ = _Mark(target, errors)  # type: ignore[attr-defined]
        return method

    return mark


class Fallbacks:
    """The ``fallback`` middleware: runs the fallback declared for a failed call, if any.

    ``handlers`` (by target) apply to calls from any caller on the node;
    :meth:`of_services` adds those a service declares for its own calls.
    """

    def __init__(
        self,
        handlers: Mapping[str, FallbackFunction] | None = None,
        *,
        on: Errors = Unavailable,
        signals: Signals | None = None,
    ) -> None:
        self._signals = signals
        # Keyed by (service, method) and (caller, service, method): tuples, as a
        # call carries them, rather than a "service.method" string made per call.
        self._any: dict[tuple[str, str], _Declared] = {}
        self._by_caller: dict[tuple[str, str, str], _Declared] = {}
        for target, function in (handlers or {}).items():
            name = getattr(function, "__qualname__", repr(function))
            self._any[_split(target)] = _Declared(function, name, _errors(on, target))

    @classmethod
    def of_services(cls, services: Iterable[Any], *, signals: Signals | None = None) -> Fallbacks:
        """The fallbacks that ``services`` (instances) declare with :func:`fallback`."""
        layer = cls(signals=signals)
        for service in services:
            for attribute, member in inspect.getmembers(type(service)):
                mark = getattr(member, "__flotilla_fallback__", None)
                if isinstance(mark, _Mark):
                    layer._add(service.name, mark, getattr(service, attribute))
        return layer

    def __len__(self) -> int:
        return len(self._any) + len(self._by_caller)

    # A plain function: a call with no fallback costs a dict lookup, no coroutine frame.
    def __call__(self, request: Request, call_next: Handler[Request]) -> Awaitable[Any]:
        declared = self._by_caller.get((request.headers.caller, request.service, request.method))
        if declared is None:
            declared = self._any.get((request.service, request.method))
            if declared is None:
                return call_next(request)
        return self._guarded(request, call_next, declared)

    def _add(self, caller: str, mark: _Mark, function: FallbackFunction) -> None:
        key = (caller, *_split(mark.target))
        name = function.__qualname__
        if key in self._by_caller:
            other = self._by_caller[key].name
            raise ConfigError(
                f"{caller!r} declares two fallbacks for {mark.target}: {other}, {name}"
            )
        self._by_caller[key] = _Declared(function, name, mark.on)

    async def _guarded(
        self, request: Request, call_next: Handler[Request], declared: _Declared
    ) -> msgspec.Raw:
        try:
            payload: msgspec.Raw = await call_next(request)
        except FlotillaError as error:
            if not isinstance(error, declared.on):
                raise
            return await self._run(request, declared, error)
        return payload

    async def _run(
        self, request: Request, declared: _Declared, error: FlotillaError
    ) -> msgspec.Raw:
        verb = "raised"
        try:
            value = await declared.function(error, **request.args)
            verb = "returned a value that cannot be encoded,"
            payload = msgspec.Raw(codec.encode(value))
        except Exception as failure:  # CancelledError is no Exception: it passes
            self._signal(request, error, "raised")
            combined = _both_failed(request, declared, error, failure, verb)
            raise combined from combined.__cause__
        self._signal(request, error, "answered")
        return payload

    def _signal(self, request: Request, error: FlotillaError, outcome: str) -> None:
        if self._signals is not None:
            detail = {"caller": request.headers.caller, "error": error.code, "outcome": outcome}
            self._signals.emit(
                SignalKind.FALLBACK, request.service, method=request.method, detail=detail
            )


def _both_failed(
    request: Request, declared: _Declared, error: FlotillaError, failure: Exception, verb: str
) -> FlotillaError:
    """The call's error when its fallback failed too: the original's class, naming both, with
    both as its cause (an ``ExceptionGroup``)."""
    message = (
        f"{request.target} failed ({error.code}: {error.message}) "
        f"and its fallback {declared.name} {verb} {type(failure).__name__}: {failure}"
    )
    details = {**error.details, "fallback": declared.name, "fallback_error": repr(failure)}
    combined = type(error)(message, details=details, never_sent=False)
    combined.__cause__ = ExceptionGroup(
        f"{request.target} and its fallback failed", [error, failure]
    )
    return combined


def _errors(on: Errors, target: str) -> tuple[type[FlotillaError], ...]:
    errors = on if isinstance(on, tuple) else (on,)
    for error in errors:
        if not (isinstance(error, type) and issubclass(error, FlotillaError)):
            raise ConfigError(
                f"fallback for {target}: on= takes Flotilla error classes, not {error!r}"
            )
    return errors


def _require_async(method: Callable[..., Any]) -> None:
    if not inspect.iscoroutinefunction(method):
        raise ConfigError(f"fallback {method.__qualname__} must be `async def`")


def _split(target: str) -> tuple[str, str]:
    service, dot, method = target.partition(".")
    if not (service and dot and method):
        raise ConfigError(f"fallback target {target!r} is not 'service.method'")
    return service, method

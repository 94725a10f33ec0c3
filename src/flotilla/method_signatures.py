"""The signatures ``@rpc`` methods and ``@on_event`` handlers may have, checked at class definition.

What can be checked without resolving annotations is checked when the class
is defined (:class:`~flotilla.service.Service` calls these), so a mistake
fails at import, not on the first call: ``*args``, ``**kwargs`` and
positional-only parameters (arguments travel by name), and a parameter named
``ctx`` or ``context`` that is not annotated ``Context`` (it would otherwise be
read as an argument the caller must send).  Annotations may be strings
(``from __future__ import annotations``): the check reads their text
(``"Context"``, ``"flotilla.Context"``) or looks a plain name up in the module,
and never evaluates anything else.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

from flotilla.context import Context

__all__ = ["check_handler_signature", "check_kind", "check_rpc_signature", "names_context"]

# Parameter names that read as "the call's context": one of them without the
# Context annotation is almost surely a forgotten annotation, not an argument.
_CONTEXT_NAMES = frozenset({"ctx", "context"})
# How a string annotation may spell Context without being looked up.
_CONTEXT_TEXTS = frozenset({"Context", "flotilla.Context", "flotilla.context.Context"})
_DOTTED_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def check_rpc_signature(fn: Callable[..., Any]) -> None:
    """Refuse, at class definition, a signature no call could ever match."""
    for param in list(inspect.signature(fn).parameters.values())[1:]:
        check_kind(fn, param)
        if param.name in _CONTEXT_NAMES and not names_context(fn, param.annotation):
            raise TypeError(
                f"@rpc method {fn.__qualname__}: parameter {param.name!r} is not annotated "
                f"`Context`; annotate it `{param.name}: Context` to receive the call's "
                "context, or rename it"
            )


def check_handler_signature(fn: Callable[..., Any]) -> None:
    """Refuse, at class definition, an ``@on_event`` handler with no single payload parameter."""
    where = f"@on_event handler {fn.__qualname__}"
    payload = []
    for param in list(inspect.signature(fn).parameters.values())[1:]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"{where} cannot take *args or **kwargs")
        if names_context(fn, param.annotation):
            continue
        if param.name in _CONTEXT_NAMES:
            raise TypeError(
                f"{where}: parameter {param.name!r} is not annotated `Context`; annotate it "
                f"`{param.name}: Context` to receive the event's context, or rename it"
            )
        payload.append(param)
    if len(payload) != 1:
        raise TypeError(
            f"{where} must take exactly one payload parameter (plus an optional "
            f"`ctx: Context`), got {[p.name for p in payload]}"
        )
    if payload[0].annotation is inspect.Parameter.empty:
        raise TypeError(
            f"{where}: annotate the payload parameter {payload[0].name!r} with its type "
            "(a msgspec.Struct, say): events are validated against it"
        )


def check_kind(fn: Callable[..., Any], param: inspect.Parameter) -> None:
    """Refuse a parameter no caller could pass by name."""
    if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
        raise TypeError(
            f"@rpc method {fn.__qualname__} cannot take *args, **kwargs or "
            "positional-only parameters: arguments travel by name"
        )


def names_context(fn: Callable[..., Any], annotation: Any) -> bool:
    """Whether an annotation, possibly a string not yet resolvable, means Context."""
    if not isinstance(annotation, str):
        return annotation is Context
    # Quotes inside a postponed annotation (``ctx: "Context"`` under the
    # __future__ import) are legal and resolve the same.
    text = annotation.strip().strip("'\"")
    if text in _CONTEXT_TEXTS:
        return True
    # An alias (``from flotilla import Context as Ctx``) is already bound in the
    # module; only a plain dotted name is looked up, nothing is evaluated.
    if not _DOTTED_NAME.match(text):
        return False
    head, *rest = text.split(".")
    value = getattr(fn, "__globals__", {}).get(head)
    for part in rest:
        value = getattr(value, part, None)
    return value is Context

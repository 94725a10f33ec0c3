"""A mypy plugin that types ``ctx.client(Service)``: each ``@rpc`` method as the caller sees it.

Enable it in the project's mypy configuration::

    [tool.mypy]
    plugins = ["flotilla.mypy_plugin"]

Then ``await ctx.client(Inventory).stock(sku=5)`` is an ``int`` when ``stock``
is ``async def stock(self, ctx: Context, sku: int) -> int``; ``stock(sku="x")``
and a misspelt method are errors.

Why a plugin: a :class:`~flotilla.calls.typed_client.TypedClient` answers any
attribute through ``__getattr__``, and no annotation maps the methods of one
class to a transformed set on another (here: ``self`` and the ``Context``
parameter dropped).  Typing the client as the service class itself would be a
lie (the runtime object has no ``on_start``, no state, and its methods take no
context), so the plugin computes the honest type instead:

* while mypy analyses a subclass of ``Service``, it notes the names of the
  methods decorated with ``@rpc`` in the class's metadata (decorators are not
  kept in mypy's incremental cache; metadata is, so a cached service module
  still types its callers correctly);
* for an attribute of ``TypedClient[S]`` it finds the ``@rpc`` method along
  ``S``'s MRO and returns its signature without ``self`` and without the
  parameter annotated ``Context``; the result stays the coroutine an
  ``async def`` returns, which is what the client's attribute gives back;
* any other attribute is reported as an error, as the client would raise
  ``AttributeError`` for it at run time.

Without the plugin, the client's attributes are typed
``Callable[..., Awaitable[Any]]``: nothing is checked, nothing is wrong.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from mypy.errorcodes import ATTR_DEFINED
from mypy.nodes import ARG_STAR, ARG_STAR2, CallExpr, Decorator, Expression, RefExpr, TypeInfo
from mypy.plugin import AttributeContext, ClassDefContext, Plugin
from mypy.types import AnyType, CallableType, Instance, Type, TypeOfAny, get_proper_type

__all__ = ["FlotillaPlugin", "plugin"]

SERVICE = "flotilla.service.Service"
RPC = "flotilla.service.rpc"
CONTEXT = "flotilla.context.Context"
CLIENT = "flotilla.calls.typed_client.TypedClient"
METADATA_KEY = "flotilla"


class FlotillaPlugin(Plugin):
    """Records ``@rpc`` methods on services and types ``TypedClient`` attributes from them."""

    def get_base_class_hook(self, fullname: str) -> Callable[[ClassDefContext], None] | None:
        # Called with each declared base's name: a service may derive from
        # Service through any number of user classes, so every class is
        # offered and the hook keeps only those with Service in their MRO.
        return _record_rpc_methods

    def get_attribute_hook(self, fullname: str) -> Callable[[AttributeContext], Type] | None:
        owner, _, name = fullname.rpartition(".")
        if owner == CLIENT:
            return functools.partial(_client_attribute, name)
        return None


def plugin(version: str) -> type[Plugin]:
    """The entry point mypy calls with its version."""
    return FlotillaPlugin


def _record_rpc_methods(ctx: ClassDefContext) -> None:
    info = ctx.cls.info
    if not info.has_base(SERVICE):
        return
    names = [
        stmt.func.name
        for stmt in ctx.cls.defs.body
        if isinstance(stmt, Decorator) and any(map(_is_rpc, stmt.original_decorators))
    ]
    info.metadata[METADATA_KEY] = {"rpc": sorted(names)}


def _is_rpc(decorator: Expression) -> bool:
    if isinstance(decorator, CallExpr):  # @rpc(timeout=...)
        decorator = decorator.callee
    return isinstance(decorator, RefExpr) and decorator.fullname == RPC


def _client_attribute(name: str, ctx: AttributeContext) -> Type:
    client = ctx.type
    if not isinstance(client, Instance) or not client.args:
        return ctx.default_attr_type
    if client.type.get(name) is not None:
        return ctx.default_attr_type  # the client's own attributes keep their types
    service = get_proper_type(client.args[0])
    if not isinstance(service, Instance) or not service.type.has_base(SERVICE):
        return ctx.default_attr_type  # TypedClient[Any], a type variable: nothing to check
    method = _rpc_method(service.type, name)
    if method is None:
        message = f'"{service.type.name}" has no @rpc method "{name}"'
        ctx.api.fail(message, ctx.context, code=ATTR_DEFINED)
        return AnyType(TypeOfAny.from_error)
    signature = get_proper_type(method.func.type)
    if not isinstance(signature, CallableType):
        # An unannotated method: its parameters are Any, so is the call.
        return ctx.default_attr_type
    return _as_called(signature)


def _rpc_method(service: TypeInfo, name: str) -> Decorator | None:
    """``name`` as an ``@rpc`` method of ``service`` or of a base, nearest first."""
    for info in service.mro:
        node = info.names.get(name)
        if node is None:
            continue
        rpc_names = info.metadata.get(METADATA_KEY, {}).get("rpc", ())
        # The nearest definition wins: an override without @rpc hides the method.
        if isinstance(node.node, Decorator) and name in rpc_names:
            return node.node
        return None
    return None


def _as_called(signature: CallableType) -> CallableType:
    """The method as a client attribute: no ``self``, no Context parameter."""
    keep = [
        i
        for i, (kind, type_) in enumerate(
            zip(signature.arg_kinds, signature.arg_types, strict=True)
        )
        if i > 0 and (kind in (ARG_STAR, ARG_STAR2) or not _is_context(type_))
    ]
    return signature.copy_modified(
        arg_types=[signature.arg_types[i] for i in keep],
        arg_kinds=[signature.arg_kinds[i] for i in keep],
        arg_names=[signature.arg_names[i] for i in keep],
    )


def _is_context(type_: Type) -> bool:
    proper = get_proper_type(type_)
    return isinstance(proper, Instance) and proper.type.fullname == CONTEXT

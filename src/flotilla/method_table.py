"""A service's ``@rpc`` methods as the registry publishes them: name, options, JSON Schemas.

:meth:`Service.method_table <flotilla.service.Service.method_table>` builds
it, so callers by name, the CLI and the gateway know a method without
importing its class.  A type msgspec cannot describe gets the empty schema
(anything) and one logged warning rather than stopping the node: the method
still works, only its description is vague.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import msgspec

from flotilla.registry.base import MethodInfo

if TYPE_CHECKING:
    from flotilla.service import MethodSpec

__all__ = ["json_schema", "method_info"]

# The service module's logger: where a service's author looks for its warnings.
log = logging.getLogger("flotilla.service")


def method_info(cls: type, spec: MethodSpec) -> MethodInfo:
    """``spec`` (a method of ``cls``) as the registry publishes it."""
    where = f"{cls.__qualname__}.{spec.attribute}"
    params = json_schema(spec.args_type, f"the arguments of {where}")
    if "$ref" in params:
        # The arguments struct is the top-level object: inline it, so a reader
        # finds ``properties`` and ``required`` where it looks first.
        defs = params.pop("$defs")
        params = defs.pop(params["$ref"].rpartition("/")[2])
        params.pop("title", None)  # the generated struct's name means nothing to a reader
        if defs:
            params["$defs"] = defs
    return MethodInfo(
        name=spec.name,
        timeout=spec.timeout,
        idempotent=spec.idempotent,
        params=params,
        result=json_schema(spec.result_type, f"the result of {where}"),
    )


def json_schema(type_: Any, what: str) -> dict[str, Any]:
    """The JSON Schema of ``type_`` (``what`` names it in the warning when there is none)."""
    try:
        return msgspec.json.schema(type_)
    except (TypeError, ValueError) as error:
        # A custom type without a schema hook: describe it as "anything"
        # rather than stop the node; the call itself still validates.
        first_line = str(error).strip().splitlines()[-1]
        log.warning("no JSON Schema for %s (%s); publishing it as {}", what, first_line)
        return {}

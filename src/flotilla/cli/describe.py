"""``flotilla describe SERVICE``: a service's methods, read from its live instances.

Each instance publishes its method table in the registry (name, timeout,
idempotent, JSON Schema of the parameters and of the result), so this needs
neither the service's code nor a call.  Types are shown from the schemas:
``integer``, ``list[string]``, ``string | null``, and a ``$ref`` into
``$defs`` by the name of its definition (``Product``).

Instances of one service normally share one table; during a rolling upgrade
they may not.  The table of most instances is shown, and the others are named
on stderr.
"""

from __future__ import annotations

import collections
from typing import Annotated, Any

import msgspec
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from flotilla.cli.common import (
    DataDirOption,
    fail,
    pretty_json,
    read_instances,
)
from flotilla.codec import to_builtins
from flotilla.registry import Instance
from flotilla.registry.base import MethodInfo

__all__ = ["describe_command", "methods_table", "schema_type"]


def describe_command(
    service: Annotated[str, typer.Argument(metavar="SERVICE", help="The service to describe.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the method table as JSON.")
    ] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Show the methods of SERVICE (parameters, result, timeout, idempotent)."""
    _, instances = read_instances(data_dir)
    mine = [instance for instance in instances if instance.service == service]
    if not mine:
        known = ", ".join(sorted({instance.service for instance in instances})) or "none"
        fail(f"no live instance of service {service!r}; known: {known}", 1)
    methods, holders = _common_table(mine)
    others = [instance.id for instance in mine if instance.id not in holders]
    if others:
        typer.echo(f"note: a different method table on {', '.join(others)}", err=True)
    if as_json:
        document = {
            "service": service,
            "instances": holders,
            "methods": [to_builtins(method) for method in methods],
        }
        typer.echo(pretty_json(document))
        return
    count = len(mine)
    typer.echo(f"service {service}: {count} live instance{'s' if count != 1 else ''}")
    if methods:
        Console().print(methods_table(methods))
    else:
        typer.echo("(its instances publish no methods)")


def methods_table(methods: tuple[MethodInfo, ...]) -> Table:
    """One row per method: name, parameters with types, result type, timeout, idempotent."""
    table = Table("METHOD", "PARAMETERS", "RESULT", "TIMEOUT", "IDEMPOTENT", box=None)
    for method in methods:
        timeout = "-" if method.timeout is None else f"{method.timeout:g} s"
        # Text, not markup: "list[string]" would read as a style tag.
        table.add_row(
            Text(method.name),
            Text(_parameters(method.params)),
            Text(schema_type(method.result, method.result.get("$defs", {}))),
            timeout,
            "yes" if method.idempotent else "no",
        )
    return table


def _parameters(params: dict[str, Any]) -> str:
    definitions = params.get("$defs", {})
    properties = params.get("properties", {})
    required = set(params.get("required", []))
    shown = []
    for name, schema in properties.items():
        text = f"{name}: {schema_type(schema, definitions)}"
        if name not in required:
            text += f" = {schema['default']!r}" if "default" in schema else " (optional)"
        shown.append(text)
    return ", ".join(shown) or "-"


def schema_type(schema: Any, definitions: dict[str, Any]) -> str:
    """A short type name for a JSON Schema: ``integer``, ``list[Product]``, ``string | null``."""
    if not isinstance(schema, dict) or not schema:
        return "any"
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return ref.rpartition("/")[2]  # "#/$defs/Product" -> "Product"
    for combinator in ("anyOf", "oneOf"):
        if isinstance(schema.get(combinator), list):
            return " | ".join(schema_type(part, definitions) for part in schema[combinator])
    if "enum" in schema:
        return " | ".join(repr(value) for value in schema["enum"])
    if "const" in schema:
        return repr(schema["const"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(schema_type({**schema, "type": part}, definitions) for part in kind)
    if kind == "array":
        items = schema.get("items") or schema.get("prefixItems")
        if isinstance(items, list):
            return f"tuple[{', '.join(schema_type(item, definitions) for item in items)}]"
        return f"list[{schema_type(items, definitions)}]"
    if kind == "object" and "properties" not in schema:
        values = schema.get("additionalProperties")
        return f"dict[string, {schema_type(values, definitions)}]" if values else "object"
    if isinstance(kind, str):
        fmt = schema.get("format")
        return f"{kind} ({fmt})" if isinstance(fmt, str) else kind
    return schema.get("title", "any") if isinstance(schema.get("title"), str) else "any"


def _common_table(instances: list[Instance]) -> tuple[tuple[MethodInfo, ...], list[str]]:
    """The method table most instances publish, and the ids of those that do."""
    # Keyed by their encoding: a MethodInfo holds dicts, so it is not hashable.
    by_table: dict[bytes, list[Instance]] = collections.defaultdict(list)
    for instance in instances:
        by_table[msgspec.json.encode(instance.methods)].append(instance)
    holders = max(by_table.values(), key=len)
    return holders[0].methods, [instance.id for instance in holders]

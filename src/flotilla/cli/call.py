"""``flotilla call SERVICE.METHOD '{json}'``: call a running system, print the result as JSON."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from flotilla.calls.client import split_target
from flotilla.cli.common import DataDirOption, client_settings, fail, fail_with, pretty_json
from flotilla.codec import decode_json
from flotilla.errors import FlotillaError, InvalidArgument
from flotilla.runtime.node import Node
from flotilla.runtime.serve import run_loop
from flotilla.runtime.settings import Settings

__all__ = ["call_command"]

_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number"}


def call_command(
    target: Annotated[str, typer.Argument(metavar="SERVICE.METHOD", help="What to call.")],
    arguments: Annotated[
        str, typer.Argument(metavar="JSON", help="The arguments, as a JSON object.")
    ] = "{}",
    timeout: Annotated[
        float, typer.Option("--timeout", min=0, help="Seconds to wait for the result.")
    ] = 10.0,
    data_dir: DataDirOption = None,
) -> None:
    """Call SERVICE.METHOD with the JSON object's keys as arguments; print the result as JSON."""
    try:
        split_target(target)
        args = _arguments(arguments)
    except InvalidArgument as exc:
        fail(exc.message)
    settings = client_settings(data_dir)
    try:
        result = run_loop(_call(settings, target, args, timeout))
    except FlotillaError as exc:
        fail_with(exc)
    typer.echo(pretty_json(result))


def _arguments(text: str) -> dict[str, Any]:
    value = decode_json(text)  # raises InvalidArgument("malformed JSON: ...")
    if not isinstance(value, dict):
        kind = "null" if value is None else _JSON_KINDS.get(type(value), type(value).__name__)
        raise InvalidArgument(f"malformed JSON: the arguments must be an object, not {kind}")
    return value


async def _call(settings: Settings, target: str, args: dict[str, Any], timeout: float) -> Any:
    # No services: a pure client, registered nowhere.
    async with Node(registry=settings.registry, secret=settings.secret) as node:
        return await node.context(timeout=timeout).call(target, **args)

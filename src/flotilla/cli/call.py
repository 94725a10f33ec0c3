"""``flotilla call SERVICE.METHOD '{json}'``: call a running system, print the result as JSON.

Arguments are checked before anything is sent: a JSON object, and numbers the
wire can carry (integers of 64 bits: msgpack has no bigger ones).  The
timeout is a finite number of seconds up to a day: a call that may wait
forever is a call nobody can tell from a hung one.
"""

from __future__ import annotations

import math
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
# What msgpack carries: int64 .. uint64.
_INT_RANGE = (-(2**63), 2**64 - 1)
MAX_TIMEOUT = 86400.0
"""The longest ``--timeout``, in seconds."""


def call_command(
    target: Annotated[str, typer.Argument(metavar="SERVICE.METHOD", help="What to call.")],
    arguments: Annotated[
        str, typer.Argument(metavar="JSON", help="The arguments, as a JSON object.")
    ] = "{}",
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for the result (at most 86400).")
    ] = 10.0,
    data_dir: DataDirOption = None,
) -> None:
    """Call SERVICE.METHOD with the JSON object's keys as arguments; print the result as JSON."""
    if not (math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT):
        fail(f"--timeout must be more than 0 and at most {MAX_TIMEOUT:.0f} seconds, not {timeout}")
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
    _check_integers(value, "$")
    return value


def _check_integers(value: Any, path: str) -> None:
    """Refuse an integer the wire cannot carry, naming where it is.

    A loop, not recursion: the JSON may nest deeper than Python's stack.
    """
    low, high = _INT_RANGE
    pending = [(value, path)]
    while pending:
        item, where = pending.pop()
        if isinstance(item, int) and not isinstance(item, bool) and not low <= item <= high:
            raise InvalidArgument(
                f"integer at {where} is out of range: calls carry integers from -2**63 "
                "to 2**64-1 (send a bigger number as a string)"
            )
        if isinstance(item, dict):
            pending.extend((child, f"{where}.{key}") for key, child in item.items())
        elif isinstance(item, list):
            pending.extend((child, f"{where}[{index}]") for index, child in enumerate(item))


async def _call(settings: Settings, target: str, args: dict[str, Any], timeout: float) -> Any:
    # No services: a pure client, registered nowhere.
    async with Node(config=settings.node_config()) as node:
        return await node.context(timeout=timeout).call(target, **args)

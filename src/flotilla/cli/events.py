"""``flotilla events``: watch a topic, list the dead letters, replay them.

::

    flotilla events tail TOPIC [--count N]          events as they are published, one JSON line each
    flotilla events dlq [--topic T] [--json]        dead letters with their last error
    flotilla events replay ID... | --all [--topic T]  deliver dead letters again to their group

The backend is ``--events URL`` if given, else ``FLOTILLA_EVENTS``, else the
embedded log ``events.db`` in the data directory (found as the other client
commands find it: ``--data-dir``, ``FLOTILLA_DATA_DIR``, or a ``.flotilla``
folder here or above).  A URL of an unknown scheme is refused; a topic no
event was ever published to is refused with the list of known ones (a typo is
likelier than a wish to wait for a topic nobody uses).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from flotilla.cli.common import DataDirOption, fail, fail_with, find_data_dir, pretty_json
from flotilla.errors import ConfigError, FlotillaError, NotFound
from flotilla.events import EVENT_BACKENDS, DeadLetter, Envelope, EventBackend
from flotilla.headers import Headers
from flotilla.resolve import default_events_url, expand_shorthand, sqlite_path
from flotilla.runtime.serve import run_loop

__all__ = ["events_app", "open_events"]

T = TypeVar("T")

events_app = typer.Typer(
    help="Durable events: tail a topic, list and replay dead letters.",
    no_args_is_help=True,
)

EventsOption = Annotated[
    str | None,
    typer.Option(
        "--events",
        help="The event backend URL (default: FLOTILLA_EVENTS, else events.db in the data dir).",
        show_default=False,
    ),
]
TopicOption = Annotated[
    str | None, typer.Option("--topic", help="Only this topic.", show_default=False)
]


def open_events(url: str) -> EventBackend:
    """The backend of ``url`` (one place, so tests can hand in their own)."""
    return EVENT_BACKENDS.open(url)


@events_app.command("tail")
def tail_command(
    topic: Annotated[str, typer.Argument(help="The topic to watch.")],
    count: Annotated[
        int | None, typer.Option("--count", help="Stop after this many events.", min=1)
    ] = None,
    events: EventsOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Print the events of TOPIC as they are published, one JSON object per line."""

    async def tail(backend: EventBackend) -> None:
        await _require_topic(backend, topic)
        shown = 0
        async for envelope in backend.tail(topic):
            typer.echo(msgspec.json.encode(_shown_envelope(envelope)).decode())
            shown += 1
            if count is not None and shown >= count:
                break

    _run(events, data_dir, tail)


@events_app.command("dlq")
def dlq_command(
    topic: TopicOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
    limit: Annotated[int, typer.Option("--limit", help="At most this many.", min=1)] = 100,
    events: EventsOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """List the dead letters (oldest first) with the group that gave up and its last error."""

    async def read(backend: EventBackend) -> list[DeadLetter]:
        if topic is not None:
            await _require_topic(backend, topic)
        return await backend.dead_letters(topic=topic, limit=limit)

    letters = _run(events, data_dir, read)
    if as_json:
        typer.echo(pretty_json([_shown_dead_letter(dead) for dead in letters]))
    elif letters:
        Console(width=200).print(_table(letters))
    else:
        typer.echo("no dead letters", err=True)


@events_app.command("replay")
def replay_command(
    ids: Annotated[
        list[str] | None, typer.Argument(metavar="ID...", help="Dead letters to replay.")
    ] = None,
    replay_all: Annotated[
        bool, typer.Option("--all", help="Replay every dead letter (of --topic, if given).")
    ] = False,
    topic: TopicOption = None,
    events: EventsOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Deliver dead letters again, each to the group that gave up on it."""
    if bool(ids) == replay_all:
        fail("name the dead letters to replay (their ids), or pass --all")

    async def replay(backend: EventBackend) -> int:
        if topic is not None:
            await _require_topic(backend, topic)
        if ids:
            await _require_ids(backend, ids, topic)
            return await backend.replay(ids)
        if topic is None:
            return await backend.replay(None)
        letters = await backend.dead_letters(topic=topic, limit=1_000_000)
        return await backend.replay([dead.envelope.id for dead in letters]) if letters else 0

    replayed = _run(events, data_dir, replay)
    typer.echo(f"replayed {replayed} dead letter{'' if replayed == 1 else 's'}")


def _run(
    events: str | None, data_dir: Path | None, action: Callable[[EventBackend], Awaitable[T]]
) -> T:
    """Open the backend, run ``action`` on it, close it; errors become messages and exit codes."""
    url = _events_url(events, data_dir)

    async def main() -> T:
        backend = open_events(url)
        try:
            return await action(backend)
        finally:
            await backend.aclose()

    try:
        return run_loop(main())
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except NotFound as exc:  # a topic or id that is not there: a usage mistake
        fail(exc.message)
    except FlotillaError as exc:
        fail_with(exc)


def _events_url(explicit: str | None, data_dir: Path | None) -> str:
    if explicit:
        url = explicit
    elif os.environ.get("FLOTILLA_EVENTS"):
        url = os.environ["FLOTILLA_EVENTS"]
    else:
        directory, _ = find_data_dir(data_dir, os.environ)
        url = default_events_url(directory)
    try:
        EVENT_BACKENDS.check(url)
    except ConfigError as exc:
        fail(exc.message)
    if expand_shorthand(url).startswith("sqlite://") and not sqlite_path(url).exists():
        # Opening would create an empty log and report nothing: say where we looked.
        fail(f"no event log at {sqlite_path(url)} (pass --events URL or --data-dir)")
    return url


async def _require_topic(backend: EventBackend, topic: str) -> None:
    known = await backend.topics()
    if topic not in known:
        listed = ", ".join(known) if known else "none yet"
        raise NotFound(f"unknown topic {topic!r}; known topics: {listed}")


async def _require_ids(backend: EventBackend, ids: list[str], topic: str | None) -> None:
    letters = await backend.dead_letters(topic=topic, limit=1_000_000)
    present = {dead.envelope.id for dead in letters}
    missing = [id_ for id_ in ids if id_ not in present]
    if missing:
        where = f" of topic {topic!r}" if topic else ""
        raise NotFound(
            f"no dead letter{where} with id {', '.join(missing)} (see `flotilla events dlq`)"
        )


def _payload(envelope: Envelope) -> Any:
    try:
        return msgspec.msgpack.decode(envelope.payload)
    except msgspec.DecodeError:
        return {"undecodable_msgpack_hex": envelope.payload.hex()}


def _shown_envelope(envelope: Envelope) -> dict[str, Any]:
    shown: dict[str, Any] = msgspec.to_builtins(envelope)
    shown["payload"] = _payload(envelope)
    shown["time"] = _when(envelope.time)
    shown["headers"] = _shown_headers(envelope.headers)
    return shown


def _shown_headers(headers: Headers) -> dict[str, Any]:
    """Headers by name (they travel as an array), without the deadline events never carry."""
    shown = msgspec.structs.asdict(headers)
    shown.pop("deadline")
    principal = headers.principal
    shown["principal"] = None if principal is None else msgspec.structs.asdict(principal)
    shown["meta"] = dict(headers.meta)
    return shown


def _shown_dead_letter(dead: DeadLetter) -> dict[str, Any]:
    return {
        "group": dead.group,
        "error": dead.error,
        "time": _when(dead.time),
        "envelope": _shown_envelope(dead.envelope),
    }


def _table(letters: list[DeadLetter]) -> Table:
    table = Table("ID", "TOPIC", "GROUP", "ATTEMPT", "DEAD SINCE", "ERROR", box=None)
    for dead in letters:
        table.add_row(
            Text(dead.envelope.id),
            Text(dead.envelope.topic),
            Text(dead.group),
            Text(str(dead.envelope.attempt)),
            Text(_when(dead.time)),
            Text(dead.error.splitlines()[0] if dead.error else "", style="red"),
        )
    return table


def _when(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="milliseconds")

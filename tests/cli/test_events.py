"""``flotilla events``: tail, dlq and replay, in process against a memory backend handed in."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import msgspec
import pytest
from typer.testing import CliRunner

from flotilla.cli import app
from flotilla.cli import events as events_cli
from flotilla.events import Envelope, EventBackend, Subscription, new_event_id
from flotilla.events.memory import MemoryEvents
from flotilla.headers import Headers, Principal


def envelope(topic: str, n: int) -> Envelope:
    return Envelope(
        id=new_event_id(),
        topic=topic,
        source="orders",
        instance="orders-1",
        time=1_700_000_000.0,
        payload=msgspec.msgpack.encode({"n": n}),
        key=str(n),
        headers=Headers(request_id="r1", caller="front", principal=Principal("ada", ("admin",))),
    )


async def dead_lettered(backend: MemoryEvents, topic: str, group: str, n: int) -> Envelope:
    """Publish an event and have ``group`` give up on it."""
    sub = Subscription(topic=topic, group=group, instance="i")
    await backend.declare(sub)
    sent = envelope(topic, n)
    await backend.publish(sent)
    deliveries = backend.subscribe(sub)
    await (await anext(deliveries)).dead_letter(f"ValueError: bad {n}\nmore lines")
    await deliveries.aclose()
    return sent


class KeptEvents(MemoryEvents):
    """A memory backend that outlives the commands: they close what they open."""

    closed = 0

    async def aclose(self) -> None:
        self.closed += 1


class Store:
    """One memory backend, filled by the test, handed to every command of the test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.backend = KeptEvents()
        monkeypatch.setattr(events_cli, "open_events", self.open)

    def open(self, url: str) -> EventBackend:
        assert url == "memory://"
        return self.backend


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Store:
    return Store(monkeypatch)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["events", *args, "--events", "memory://"])
    return result.exit_code, result.stdout, result.stderr


def test_dlq_lists_dead_letters_with_their_last_error(store: Store) -> None:
    a = asyncio.run(dead_lettered(store.backend, "order.placed", "billing", 1))
    asyncio.run(dead_lettered(store.backend, "order.paid", "shipping", 2))
    code, out, _ = run("dlq")
    assert code == 0
    assert a.id in out
    assert "billing" in out
    assert "ValueError: bad 1" in out
    assert "more lines" not in out  # the table shows the first line
    code, out, _ = run("dlq", "--json", "--topic", "order.placed")
    [shown] = json.loads(out)
    assert shown["group"] == "billing"
    assert shown["error"] == "ValueError: bad 1\nmore lines"
    assert shown["envelope"]["id"] == a.id
    assert shown["envelope"]["payload"] == {"n": 1}
    assert shown["envelope"]["time"] == "2023-11-14T22:13:20.000+00:00"
    assert shown["envelope"]["headers"] == {
        "request_id": "r1",
        "caller": "front",
        "trace": "",
        "principal": {"subject": "ada", "roles": ["admin"]},
        "meta": {},
    }
    assert store.backend.closed == 2


def test_dlq_of_an_unknown_topic_lists_the_known_ones(store: Store) -> None:
    asyncio.run(dead_lettered(store.backend, "order.placed", "billing", 1))
    code, _, err = run("dlq", "--topic", "order.plcaed")
    assert code == 2
    assert err == "error: unknown topic 'order.plcaed'; known topics: order.placed\n"


def test_replay_by_id_and_all(store: Store) -> None:
    a = asyncio.run(dead_lettered(store.backend, "order.placed", "billing", 1))
    asyncio.run(dead_lettered(store.backend, "order.placed", "billing", 2))
    asyncio.run(dead_lettered(store.backend, "order.paid", "billing", 3))
    assert run("replay", a.id) == (0, "replayed 1 dead letter\n", "")
    code, _, err = run("replay", a.id)  # gone from the store now
    assert code == 2
    assert f"no dead letter with id {a.id}" in err
    assert run("replay", "--all", "--topic", "order.placed") == (0, "replayed 1 dead letter\n", "")
    assert run("replay", "--all") == (0, "replayed 1 dead letter\n", "")
    assert run("replay", "--all") == (0, "replayed 0 dead letters\n", "")


def test_replay_needs_ids_or_all_and_a_known_topic(store: Store) -> None:
    code, _, err = run("replay")
    assert (code, err) == (2, "error: name the dead letters to replay (their ids), or pass --all\n")
    code, _, err = run("replay", "x", "--all")
    assert code == 2
    code, _, err = run("replay", "--all", "--topic", "nope")
    assert (code, err) == (2, "error: unknown topic 'nope'; known topics: none yet\n")


def test_tail_prints_events_as_json_lines(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    asyncio.run(store.backend.publish(envelope("order.placed", 0)))  # makes the topic known
    opened = store.open

    def open_and_publish(url: str) -> EventBackend:
        backend = opened(url)

        async def publish() -> None:
            # The tail listens from its first ask on: publish until it has shown two.
            for n in range(1, 1000):
                await backend.publish(envelope("order.placed", n))
                await asyncio.sleep(0.01)

        task = asyncio.get_running_loop().create_task(publish())
        tasks.append(task)
        return backend

    tasks: list[asyncio.Task[None]] = []
    monkeypatch.setattr(events_cli, "open_events", open_and_publish)
    code, out, _ = run("tail", "order.placed", "--count", "2")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 2
    first, second = (line["payload"]["n"] for line in lines)
    assert second == first + 1
    assert lines[0]["topic"] == "order.placed"
    assert lines[0]["key"] == str(first)


def test_tail_of_an_unknown_topic_says_so(store: Store) -> None:
    code, _, err = run("tail", "nothing.here")
    assert (code, err) == (2, "error: unknown topic 'nothing.here'; known topics: none yet\n")


def test_an_unknown_scheme_is_refused() -> None:
    result = CliRunner().invoke(app, ["events", "dlq", "--events", "kafka://x"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: unknown events URL 'kafka://x'; known schemes:")


def test_a_missing_embedded_log_is_named(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["events", "dlq", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert (
        result.stderr
        == f"error: no event log at {tmp_path / 'events.db'} (pass --events URL or --data-dir)\n"
    )

"""``flotilla describe``: a service's method table, from the registry, as a table or JSON."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from flotilla.cli.describe import methods_table, schema_type
from flotilla.codec import to_builtins
from flotilla.registry import Health, Instance, open_registry
from flotilla.registry.base import MethodInfo

if TYPE_CHECKING:  # fixtures' types; tests/cli/conftest.py provides the fixtures
    from conftest import Flotilla, System

PRODUCT_DEFS = {"Product": {"type": "object", "properties": {"id": {"type": "integer"}}}}
METHODS = (
    MethodInfo(
        name="get",
        timeout=2.5,
        idempotent=True,
        params={
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
            },
            "required": ["id", "tags"],
        },
        result={"$ref": "#/$defs/Product", "$defs": PRODUCT_DEFS},
    ),
    MethodInfo(name="ping", params={"type": "object", "properties": {}}, result={"type": "string"}),
)


def test_schema_types_read_like_python() -> None:
    assert schema_type({"type": "integer"}, {}) == "integer"
    assert schema_type({"$ref": "#/$defs/Product"}, PRODUCT_DEFS) == "Product"
    assert schema_type({"type": "array", "items": {"$ref": "#/$defs/P"}}, {}) == "list[P]"
    assert schema_type({"type": ["string", "null"]}, {}) == "string | null"
    assert schema_type({"type": "object", "additionalProperties": {"type": "number"}}, {}) == (
        "dict[string, number]"
    )
    assert schema_type({"enum": ["a", "b"]}, {}) == "'a' | 'b'"
    assert schema_type({"type": "string", "format": "date-time"}, {}) == "string (date-time)"
    assert schema_type({}, {}) == "any"


def test_the_table_shows_parameters_result_timeout_and_idempotence() -> None:
    out = io.StringIO()
    Console(file=out, width=200).print(methods_table(METHODS))
    header, get, ping = out.getvalue().strip().splitlines()
    assert header.split() == ["METHOD", "PARAMETERS", "RESULT", "TIMEOUT", "IDEMPOTENT"]
    assert get.split(maxsplit=1)[1].startswith(
        "id: integer, tags: list[string], note: string | null = None"
    )
    assert get.split()[-4:] == ["Product", "2.5", "s", "yes"]
    assert ping.split() == ["ping", "-", "string", "-", "no"]


async def _register(data_dir: Path, *instances: Instance) -> None:
    registry = open_registry(f"sqlite://{data_dir / 'registry.db'}")
    try:
        lease = await registry.grant(120)
        for instance in instances:
            await registry.register(instance, lease=lease)
    finally:
        await registry.aclose()


def _instance(id: str, service: str, methods: tuple[MethodInfo, ...] = ()) -> Instance:
    return Instance(
        id=id, service=service, address="127.0.0.1:1", health=Health.HEALTHY, methods=methods
    )


def test_describes_a_live_service_from_the_registry(flotilla: Flotilla, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s" * 64)
    asyncio.run(_register(tmp_path, _instance("cat-1", "catalog", METHODS)))
    done = flotilla("describe", "catalog", "--data-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("service catalog: 1 live instance\n")
    listed = flotilla("describe", "catalog", "--json", "--data-dir", str(tmp_path))
    document: dict[str, Any] = json.loads(listed.stdout)
    assert (document["service"], document["instances"]) == ("catalog", ["cat-1"])
    # The registry carries the table exactly as it was published.
    assert [method["name"] for method in document["methods"]] == ["get", "ping"]
    assert document["methods"] == [to_builtins(method) for method in METHODS]


def test_a_service_with_no_live_instance_names_the_known_ones(
    flotilla: Flotilla, tmp_path: Path
) -> None:
    (tmp_path / "secret").write_text("s" * 64)
    asyncio.run(_register(tmp_path, _instance("a-1", "orders"), _instance("b-1", "catalog")))
    done = flotilla("describe", "nobody", "--data-dir", str(tmp_path))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "error: no live instance of service 'nobody'; known: catalog, orders\n"


def test_describes_the_table_a_running_node_publishes(flotilla: Flotilla, system: System) -> None:
    # No hand-made registry rows: what `flotilla serve` publishes for the echo
    # service of tests/cli/conftest.py, method options included.
    done = flotilla("describe", "echo", "--data-dir", str(system.data_dir))
    assert (done.returncode, done.stderr) == (0, "")
    header, columns, *rows = done.stdout.strip().splitlines()
    assert header == "service echo: 2 live instances"
    assert columns.split() == ["METHOD", "PARAMETERS", "RESULT", "TIMEOUT", "IDEMPOTENT"]
    cells = {row.split()[0]: row.split() for row in rows}
    assert sorted(cells) == ["hello", "ping", "slow"]
    assert cells["slow"][1:] == ["seconds:", "number", "null", "1", "s", "no"]
    assert cells["ping"][1:] == ["-", "string", "-", "no"]
    listed = flotilla("describe", "echo", "--json", "--data-dir", str(system.data_dir))
    methods = {method["name"]: method for method in json.loads(listed.stdout)["methods"]}
    assert methods["slow"]["timeout"] == 1.0
    assert methods["hello"]["timeout"] is None

"""A process whose services have no database never imports SQLAlchemy (it is slow to import)."""

from __future__ import annotations

import subprocess
import sys

from flotilla import Service
from flotilla.data.node_hooks import data_parts, databases_of

PROBE = """
import sys
import flotilla, flotilla.runtime.serve, flotilla.runtime.settings, flotilla.runtime.system_file
from flotilla import Node, Service

class Plain(Service, name="plain"):
    pass

Node(Plain())
print(sorted(name for name in sys.modules if name.startswith("sqlalchemy"))[:3])
"""


def test_importing_flotilla_and_making_a_node_import_no_sqlalchemy() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_the_public_names_still_resolve_on_first_use() -> None:
    from flotilla import Database
    from flotilla.data import check_databases

    assert Database.__module__ == "flotilla.data.database"
    assert callable(check_databases)


def test_a_service_without_a_database_gets_no_parts() -> None:
    class Plain(Service, name="plain"):
        pass

    assert databases_of(Plain()) == []
    assert data_parts([Plain()], data_dir=None, database=None, databases={}, events=None) == []

"""``flotilla serve``: services that cannot be served are refused before anything starts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # fixtures' types; tests/cli/conftest.py provides the fixtures
    from conftest import Flotilla

BROKEN = """
from __future__ import annotations

from flotilla import Service, rpc


class Broken(Service, name="broken"):
    @rpc
    async def get(self, id: int) -> Missing:  # noqa: F821 - the mistake under test
        return None
"""


def test_an_annotation_naming_an_undefined_type_exits_2(flotilla: Flotilla, tmp_path: Path) -> None:
    (tmp_path / "broken_service.py").write_text(BROKEN)
    env = {**os.environ, "FLOTILLA_DATA_DIR": str(tmp_path / ".flotilla")}
    done = flotilla("serve", "broken_service:Broken", cwd=tmp_path, env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: service 'broken_service:Broken' cannot be served: "), (
        done.stderr
    )
    assert "Missing" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / ".flotilla").exists()  # refused before anything started

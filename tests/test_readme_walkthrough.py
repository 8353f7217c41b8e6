"""The README's curl walk-through, run verbatim against the real stack."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest

from tests.e2e_stack import ADMIN_PASSWORD, Stack

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "walkthrough.sh"


def test_readme_shows_the_walkthrough_and_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert readme.index("make run") < readme.index("make test")
    curl_lines = [ln for ln in SCRIPT.read_text().splitlines() if ln.startswith(("post ", "CASE="))]
    missing = [ln for ln in curl_lines if ln not in readme]
    assert not missing, f"README.md lacks walk-through lines: {missing[:2]}"


async def test_walkthrough_script_runs(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "data")
    try:
        await stack.start()
        env = dict(os.environ, API=stack.base_url + "/api/v1", ADMIN_PASSWORD=ADMIN_PASSWORD)
        proc = await asyncio.create_subprocess_exec(
            "bash", str(SCRIPT), env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
        assert proc.returncode == 0, err.decode()
        lines = out.decode().splitlines()
        stages = [ln for ln in lines if re.fullmatch(r"[a-z_]+", ln)]
        assert stages == ["coordinator_assigned", "team_formed", "assessment", "planning",
                          "planning", "active", "closed"], lines
        assert any(ln.startswith("escalated as committee item") for ln in lines)
        assert "'first_contact', 'met'" in lines[-1] and "'assessment', 'met'" in lines[-1]
    finally:
        stack.stop()


if not SCRIPT.exists():  # pragma: no cover
    pytest.skip("no walk-through script", allow_module_level=True)

"""Workflow code runs without the SDK's sandbox (worker.py): no module that workflow code
runs may read the clock, draw random numbers or do I/O itself. The replay tests catch what
changes a recorded history; this catches the calls that would make a new one differ."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
WORKFLOWS = ("case", "committee", "report", "sweeper", "family_messages")
OURS = ("activities", "domain", "models", "workflows")


def _imported(path: Path) -> set[Path]:
    """Our modules that `path` imports."""
    out: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            if name.split(".")[0] in OURS:
                candidate = ROOT / (name.replace(".", "/") + ".py")
                if candidate.exists():
                    out.add(candidate)
    return out


def workflow_code() -> list[Path]:
    """What workflow code runs: the workflow modules and, transitively, what they import of
    ours (the client-side codec and sealing are not among them)."""
    seen: set[Path] = set()
    todo = [ROOT / "workflows" / f"{name}.py" for name in WORKFLOWS]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += _imported(path) - seen
    return sorted(seen)


WORKFLOW_CODE = workflow_code()
FORBIDDEN = {
    r"\bdatetime\.now\(|\bdatetime\.utcnow\(|\bdate\.today\(": "reads the clock (use workflow.now())",
    r"\btime\.(time|monotonic|perf_counter|sleep)\(": "reads the clock or sleeps",
    r"^\s*import random|\bfrom random\b|\brandom\.\w+\(": "draws random numbers (use workflow.random())",
    r"\buuid\.uuid[14]\(": "makes a random id (use workflow.uuid4())",
    r"(?<![\w.])open\(|\bos\.(open|remove|listdir)\(|\bPath\([^)]*\)\.(read|write)_": "does file I/O",
    r"^\s*(import|from)\s+(httpx|requests|socket|sqlite3|sqlalchemy|sqlmodel)\b":
        "does network or database I/O",
}


@pytest.mark.parametrize("path", WORKFLOW_CODE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_workflow_code_is_deterministic(path: Path) -> None:
    found = [f"{path.name}:{n}: {why}: {line.strip()}"
             for n, line in enumerate(path.read_text().splitlines(), 1)
             for pattern, why in FORBIDDEN.items()
             if re.search(pattern, line) and not line.lstrip().startswith("#")]
    assert not found, "\n".join(found)


def test_the_check_sees_a_forbidden_call() -> None:
    line = "    due = datetime.now(UTC) + timedelta(days=1)"
    assert any(re.search(pattern, line) for pattern in FORBIDDEN)

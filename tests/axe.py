"""axe-core in the browser tests: every page the workbench tests open is checked, and a
violation of impact serious or critical fails the test (issue 9 §5, WCAG 2.1 AA).

axe-core is the copy bundled in the pinned PyPI package `axe-playwright-python` (its wheel ships
`axe.min.js`, axe-core 4.12.1): nothing is fetched at run time. Our pages' Content-Security-Policy
forbids inline scripts, so axe is not added as a <script>: `page.evaluate` runs it through the
DevTools protocol, which the page's CSP does not govern (the page itself is tested as it is
served, CSP included).

    violations = await audit(page)          # every rule axe runs by default
    table.add("case page: planning", violations)
    table.failures()                         # serious / critical ones, as readable lines
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

IMPACTS = ("critical", "serious", "moderate", "minor")
FAILING = frozenset({"critical", "serious"})
# WCAG 2.0/2.1 A and AA, plus axe's best practices (reported; only serious/critical fail).
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]


@lru_cache(maxsize=1)
def axe_source() -> str:
    from axe_playwright_python.base import AXE_FILE_PATH

    return Path(AXE_FILE_PATH).read_text(encoding="utf-8")


def axe_version() -> str:
    first = axe_source()[:40]
    return first.split("axe v", 1)[-1].split()[0] if "axe v" in first else "?"


async def audit(page) -> list[dict]:
    """axe's violations on the page as it is now: [{id, impact, help, nodes: [{target, html}]}]."""
    if not await page.evaluate("() => typeof window.axe === 'object'"):
        await page.evaluate(axe_source())
    result = await page.evaluate(
        """async (tags) => {
            const r = await axe.run(document, {runOnly: {type: 'tag', values: tags},
                                               resultTypes: ['violations']});
            return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                helpUrl: v.helpUrl,
                nodes: v.nodes.map(n => ({target: n.target.map(String),
                                          html: (n.html || '').slice(0, 200),
                                          summary: (n.failureSummary || '').slice(0, 300)}))}));
        }""", TAGS)
    return result


def serious(violations: list[dict]) -> list[dict]:
    return [v for v in violations if v.get("impact") in FAILING]


def describe(violations: list[dict], limit: int = 5) -> str:
    """One line per violation and node: rule id, impact, target (CSS selector), the element."""
    lines: list[str] = []
    for v in violations:
        lines.append(f"  {v['id']} ({v['impact']}): {v['help']} — {len(v['nodes'])} element(s)")
        for node in v["nodes"][:limit]:
            lines.append(f"      {' '.join(node['target'])}: {node['html']}")
    return "\n".join(lines)


@dataclass
class AxeTable:
    """The pages checked and their violations by impact (the closing note's table)."""

    rows: dict[str, list[dict]] = field(default_factory=dict)

    def add(self, page_name: str, violations: list[dict]) -> None:
        self.rows[page_name] = violations

    def __contains__(self, page_name: str) -> bool:
        return page_name in self.rows

    def failures(self) -> str:
        out = []
        for name, violations in self.rows.items():
            bad = serious(violations)
            if bad:
                out.append(f"{name}:\n{describe(bad)}")
        return "\n".join(out)

    def text(self) -> str:
        width = max([len(n) for n in self.rows] + [len("page")])
        header = f"{'page':<{width}}  " + "  ".join(f"{i:>8}" for i in IMPACTS) + "  rules"
        lines = [f"axe-core {axe_version()} ({', '.join(TAGS)})", header, "-" * len(header)]
        for name, violations in self.rows.items():
            counts = {i: sum(len(v["nodes"]) for v in violations if v.get("impact") == i)
                      for i in IMPACTS}
            rules = ", ".join(f"{v['id']}({v['impact']})" for v in violations) or "—"
            lines.append(f"{name:<{width}}  " + "  ".join(f"{counts[i]:>8}" for i in IMPACTS)
                         + f"  {rules}")
        lines.append("(numbers: elements with a violation of that impact)")
        return "\n".join(lines)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        detail = [self.text(), ""]
        for name, violations in self.rows.items():
            if violations:
                detail.append(f"{name}:\n{describe(violations)}")
        path.write_text("\n".join(detail) + "\n", encoding="utf-8")

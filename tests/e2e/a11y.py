"""axe-core (Deque's accessibility engine), run inside a page Playwright has open.

axe-core is pinned in tests/e2e/node/package.json (package-lock.json alongside) and
installed on first use with ``npm install --prefer-offline``, as tests/interop installs
openid-client; node_modules is ignored by git.

The strict CSP of every page (script-src 'self', no inline scripts) stays on: ``page.evaluate``
hands axe's source to the page over the DevTools protocol (Runtime.evaluate), which CSP does
not govern, whereas a ``<script>`` tag would be refused. A context with ``bypass_csp=True``
would also work, but it would check a different page from the one people get: styles or
scripts that CSP blocks would then apply.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.node_packages import ensure_installed, needs_node  # noqa: F401 (needs_node: for the tests)

NODE_DIR = Path(__file__).parent / "node"
AXE_SCRIPT = NODE_DIR / "node_modules" / "axe-core" / "axe.min.js"
# WCAG 2.0 and 2.1, levels A and AA, and Deque's best practices (landmarks, heading order...).
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
BLOCKING = ("critical", "serious")  # what fails a test; moderate and minor are reported only
IMPACT_ORDER = {"critical": 0, "serious": 1, "moderate": 2, "minor": 3}


_RUN = """async (tags) => {
  const result = await axe.run(document, {runOnly: {type: "tag", values: tags}, resultTypes: ["violations"]});
  return result.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.map(n => ({target: n.target.map(String), html: n.html, summary: n.failureSummary})),
  }));
}"""


@pytest.fixture(scope="session")
def axe_source() -> str:
    """axe.min.js, installed if needed."""
    ensure_installed(NODE_DIR)
    return AXE_SCRIPT.read_text()


def axe_violations(page, source: str) -> list[dict]:
    """The page's axe violations for TAGS, most severe first: each {id, impact, help, nodes},
    a node being {target, html, summary}."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(source)  # a script, run by the DevTools protocol: not subject to the page's CSP
    violations = page.evaluate(_RUN, TAGS)
    return sorted(violations, key=lambda v: (IMPACT_ORDER.get(v["impact"], 9), v["id"]))


def blocking(violations: list[dict]) -> list[dict]:
    return [v for v in violations if v["impact"] in BLOCKING]


def report_rows(page_name: str, variant: str, violations: list[dict]) -> list[tuple[str, ...]]:
    """(page, variant, impact, rule id, count, first target) for each violation."""
    return [(page_name, variant, v["impact"] or "-", v["id"], str(len(v["nodes"])),
             " ".join(v["nodes"][0]["target"]) if v["nodes"] else "-") for v in violations]


HEADER = ("page", "variant", "impact", "rule", "count", "first target")


def format_table(rows: list[tuple[str, ...]]) -> str:
    """A plain-text table, columns padded (the last one, the target, cut at 100 characters)."""
    rows = [HEADER, *[(*row[:-1], row[-1][:100]) for row in rows]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER) - 1)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]
                     for row in rows)


def describe(violations: list[dict]) -> str:
    """Every node of each violation, with axe's summary of what to fix (for an assertion)."""
    lines = []
    for v in violations:
        lines.append(f"[{v['impact']}] {v['id']}: {v['help']}")
        for node in v["nodes"]:
            lines.append(f"    {' '.join(node['target'])}  {node['html'][:160]}")
            lines += [f"      {line}" for line in (node["summary"] or "").splitlines()]
    return "\n".join(lines)

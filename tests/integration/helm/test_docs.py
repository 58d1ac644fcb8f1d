"""The install and operations docs keep up with the code: every condition reason is explained.

Reasons are read from the operator's source (the third argument of every `condition(...)` and
the fourth of every `set_condition(...)` call, and the reason of every `(status, reason,
message)` verdict tuple the lifecycle returns; string literals only), so a new reason without
a row in docs/troubleshooting.md fails here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import ROOT

OPERATOR = ROOT / "operator" / "edgemodel_operator"
TROUBLESHOOTING = ROOT / "docs" / "troubleshooting.md"
# Reasons the SLO loop (metrics, autoscaling, canary analysis) sets, named in the contract.
SLO_REASONS = {"MetricsAvailable", "MetricsUnavailable", "CanaryFailed", "RolledBack", "Promoted"}


def condition_reasons(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Tuple) and len(node.elts) == 3:
            status, reason, _ = node.elts
            if (
                isinstance(status, ast.Constant)
                and isinstance(status.value, bool)
                and isinstance(reason, ast.Constant)
                and isinstance(reason.value, str)
            ):
                found.add(reason.value)
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", getattr(node.func, "attr", ""))
        index = {"condition": 2, "set_condition": 3}.get(name)
        if index is None or len(node.args) <= index:
            continue
        for leaf in ast.walk(node.args[index]):
            if isinstance(leaf, ast.Constant) and isinstance(leaf.value, str):
                found.add(leaf.value)
    return found


def test_every_condition_reason_has_a_row() -> None:
    reasons = set(SLO_REASONS)
    for module in OPERATOR.rglob("*.py"):  # lifecycle/ is a package
        reasons |= condition_reasons(module)
    reasons = {r for r in reasons if r.isidentifier() and r[:1].isupper()}
    assert {"Compressing", "ArtifactsReady", "Unschedulable", "InvalidSpec"} <= reasons
    rows = {
        line.split("|")[1].strip().strip("`")
        for line in TROUBLESHOOTING.read_text().splitlines()
        if line.startswith("| `")
    }
    assert not reasons - rows, f"undocumented reasons: {sorted(reasons - rows)}"


def test_docs_say_helm_keeps_the_crds() -> None:
    for doc in ("docs/install-k3s.md", "README.md", "charts/edgemodel/templates/NOTES.txt"):
        text = (ROOT / doc).read_text()
        assert "kubectl apply --server-side -f charts/edgemodel/crds/" in text, doc
    assert "never deletes" in (ROOT / "docs" / "install-k3s.md").read_text()


CITATION = re.compile(r'docs/architecture\.md[\s,;:(#]*"([^"\n]+)"')


def test_every_cited_architecture_section_exists() -> None:
    # Code comments cite docs/architecture.md by section ("Lifecycle", "A real node"): a
    # citation of a heading that is gone or renamed points a maintainer nowhere.
    headings = {
        line.lstrip("#").strip()
        for line in (ROOT / "docs" / "architecture.md").read_text().splitlines()
        if line.startswith("#")
    }
    cited: dict[str, str] = {}
    for folder in ("operator", "runtime_image", "sandbox", "charts", "bench", "tests"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in {".py", ".sh", ".yaml", ".tpl", ".go"} and path.is_file():
                for section in CITATION.findall(path.read_text(errors="replace")):
                    cited.setdefault(section, str(path.relative_to(ROOT)))
    assert "Lifecycle" in cited
    missing = {section: where for section, where in cited.items() if section not in headings}
    assert not missing, f"sections cited but not in docs/architecture.md: {missing}"

"""What the artifact store's account may do, read from the chart: the sandbox and the e2e tests
grant the operator's own store exactly the chart's rules, never a copy of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgemodel_sandbox.cluster import SandboxError
from edgemodel_sandbox.demo import CHART_RBAC, chart_store_rules, store_rbac


def test_the_store_gets_the_charts_rules_and_no_more() -> None:
    rules = chart_store_rules()
    granted = {(g, r, v) for rule in rules for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}  # fmt: skip
    assert granted == {
        ("authentication.k8s.io", "tokenreviews", "create"),
        ("", "pods", "get"),
        ("batch", "jobs", "get"),
        ("edgemodel.dev", "edgemodels", "list"),
    }
    role, binding = store_rbac("edgemodel-system", "edgemodel-artifacts")
    assert role["kind"] == "ClusterRole" and role["rules"] == rules
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "edgemodel-artifacts", "namespace": "edgemodel-system"}
    ]


def test_a_chart_without_the_store_role_is_an_error(tmp_path: Path) -> None:
    rbac = tmp_path / "rbac.yaml"
    text = CHART_RBAC.read_text()
    rbac.write_text(text.replace("-artifact-store\n", "-something-else\n"))
    with pytest.raises(SandboxError, match="no artifact-store ClusterRole"):
        chart_store_rules(rbac)

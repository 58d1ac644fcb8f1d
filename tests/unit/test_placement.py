"""Placement explanations: when no node can host a target, say exactly what is missing."""

from __future__ import annotations

from typing import Any

import pytest

from edgemodel_operator.placement import Requirements, explain_unplaceable
from edgemodel_operator.quantity import parse_quantity
from edgemodel_sandbox.fleet import fleet

NODES: list[dict[str, Any]] = fleet(6)
GPU_TOL = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


@pytest.mark.parametrize(
    ("req", "expected"),
    [
        (Requirements({"kubernetes.io/arch": "arm64"}, [], {"cpu": "100m"}), None),
        (
            Requirements(
                {"kubernetes.io/arch": "arm64", "nvidia.com/gpu.present": "true"},
                GPU_TOL,
                {"nvidia.com/gpu": "1"},
            ),
            None,
        ),
        (
            Requirements({"kubernetes.io/arch": "riscv64"}, [], {}),
            "no node has labels kubernetes.io/arch=riscv64",
        ),
        (
            Requirements(
                {"kubernetes.io/arch": "arm64", "nvidia.com/gpu.present": "true"},
                [],
                {"nvidia.com/gpu": "1"},
            ),
            "untolerated taints nvidia.com/gpu=present:NoSchedule",
        ),
        (
            Requirements({"kubernetes.io/arch": "arm64"}, [], {"nvidia.com/gpu": "1"}),
            "no node matching the selector has allocatable nvidia.com/gpu >= 1",
        ),
        (
            Requirements({"kubernetes.io/arch": "amd64"}, [], {"memory": "128Gi"}),
            "allocatable memory >= 128Gi",
        ),
    ],
)
def test_explanations(req: Requirements, expected: str | None) -> None:
    reason = explain_unplaceable(req, NODES)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and expected in reason


def test_empty_cluster() -> None:
    assert explain_unplaceable(Requirements({}, [], {}), []) == "no nodes in the cluster"


@pytest.mark.parametrize(
    ("text", "value"), [("500m", 0.5), ("2", 2), ("1Gi", 2**30), ("1k", 1000), ("1.5", 1.5)]
)
def test_quantities(text: str, value: float) -> None:
    assert float(parse_quantity(text)) == value


def test_bad_quantity_names_the_text() -> None:
    with pytest.raises(ValueError, match="lots"):
        parse_quantity("lots")

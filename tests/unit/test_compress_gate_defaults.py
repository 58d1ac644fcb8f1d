"""The gate is never vacuous: evaluation data is always judged, or the run is refused.

Without labels the gate still requires agreement with the original (0.99 by default; with
labels the accuracy drop judges); the task's own metric joins it when the output kind is
known; an output nothing can be judged on is a bad-input error, not a pass. The CRD leaves
accuracyGate.minAgreement unset by default, so the operator never overrides this rule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from edgemodel_operator.api import AccuracyGate
from edgemodel_runtime.compress import CompressError, Request, compress
from edgemodel_runtime.compress.gate import Figures, verdict
from edgemodel_runtime.compress.settings import (
    DEFAULT_MIN_AGREEMENT,
    effective_min_agreement,
    resolve,
)

REPO = Path(__file__).resolve().parents[2]
EVAL = "e" * 64


def settings(**overrides: Any) -> Any:
    base: dict[str, Any] = {
        "mode": None,
        "target": None,
        "calibration_sha256": None,
        "calibration_method": None,
        "evaluation_sha256": EVAL,
        "prune_sparsity": None,
        "max_accuracy_drop": None,
        "min_agreement": None,
        "search_budget_s": None,
    }
    base.update(overrides)
    return resolve(**base)


def test_unlabelled_evaluation_data_gets_the_default_agreement_threshold() -> None:
    assert DEFAULT_MIN_AGREEMENT == 0.99
    assert effective_min_agreement(settings(), has_labels=False) == 0.99
    assert effective_min_agreement(settings(), has_labels=True) is None  # accuracy drop judges
    assert settings().max_accuracy_drop == 1.0
    # The spec says otherwise: its figure, labels or not.
    assert effective_min_agreement(settings(min_agreement=0.95), has_labels=False) == 0.95
    assert effective_min_agreement(settings(min_agreement=0.95), has_labels=True) == 0.95
    no_data = settings(evaluation_sha256=None)
    assert effective_min_agreement(no_data, has_labels=False) is None  # nothing to gate


def test_the_crd_leaves_the_default_to_the_cli_and_names_it() -> None:
    crd = yaml.safe_load((REPO / "crds" / "edgemodel.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    gate = schema["properties"]["spec"]["properties"]["compression"]["properties"]
    field_schema = gate["accuracyGate"]["properties"]["minAgreement"]
    assert "default" not in field_schema  # unset: the operator passes no --min-agreement
    assert str(DEFAULT_MIN_AGREEMENT) in field_schema["description"]
    assert AccuracyGate.__dataclass_fields__["min_agreement"].default is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"output_kind": "boxes"}, "unknown --output-kind"),
        ({"output_kind": "detector", "evaluation_sha256": None}, "needs --eval"),
    ],
)
def test_output_kind_is_validated(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(CompressError, match=message):
        settings(**overrides)


def test_reduced_range_only_where_int8_kernels_can_saturate() -> None:
    assert settings(vnni=False).reduce_range  # amd64-like machine without VNNI
    assert not settings(vnni=True).reduce_range
    assert not settings(vnni=False, target="arm64").reduce_range
    assert not settings(vnni=False, mode="fp16").reduce_range


def test_the_task_metric_floor_is_checked_beside_agreement() -> None:
    figures = Figures("y", 8, 1.0, None, None, None, 1.0, 0.0, 0.0, "detector", 0.9, "mAP@0.5")
    assert verdict(figures, None, 0.99, 0.95) == ["mAP@0.5 0.9000 < required 0.95"]
    assert verdict(figures, None, 0.99, 0.85) == []


def regression_model(path: Path) -> Path:
    """y = x @ w: one float output without a class dimension."""
    w = np.random.default_rng(0).normal(size=(4, 1)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1])],
        [numpy_helper.from_array(w, "w")],
    )
    onnx.save_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_gate_that_can_judge_nothing_is_an_error(tmp_path: Path) -> None:
    model = regression_model(tmp_path / "m.onnx")
    data = tmp_path / "eval.npz"
    np.savez(data, x=np.random.default_rng(1).normal(size=(8, 4)).astype(np.float32) * 5)
    request = Request(source=str(model), output=tmp_path / "out", evaluation=data)
    with pytest.raises(CompressError, match=r"cannot judge output 'y'.*--output-kind") as caught:
        compress(request)
    assert caught.value.exit_code == 2

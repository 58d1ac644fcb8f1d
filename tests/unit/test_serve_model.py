"""The onnxruntime wrapper: provider choice with fallback, tensor specs, batchability."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from edgemodel_runtime.serve.model import (
    CPU,
    CUDA,
    TENSORRT,
    ModelLoadError,
    OnnxModel,
    select_providers,
)
from edgemodel_sandbox.models import digits_classifier


@pytest.mark.parametrize(
    ("requested", "available", "chosen", "warns"),
    [
        ("cpu", [CPU], [CPU], False),
        ("cpu", [TENSORRT, CUDA, CPU], [CPU], False),
        ("cuda", [CUDA, CPU], [CUDA, CPU], False),
        ("cuda", [CPU], [CPU], True),
        ("tensorrt", [TENSORRT, CUDA, CPU], [TENSORRT, CUDA, CPU], False),
        ("tensorrt", [CUDA, CPU], [CUDA, CPU], True),
        ("tensorrt", [CPU], [CPU], True),
    ],
)
def test_select_providers(
    requested: str, available: list[str], chosen: list[str], warns: bool
) -> None:
    got, warning = select_providers(requested, available)
    assert got == chosen
    assert (warning is not None) == warns
    if warning:
        assert "not available" in warning and requested in warning


def test_unknown_provider_choice() -> None:
    with pytest.raises(ValueError, match="unknown providers choice"):
        select_providers("tpu", [CPU])


def test_digits_specs_and_batchable() -> None:
    model = OnnxModel(digits_classifier().model, providers="cuda")  # falls back to CPU here
    assert model.providers[-1] == CPU
    assert [(s.name, s.datatype, s.shape) for s in model.inputs] == [("input", "FP32", (-1, 64))]
    assert [(s.name, s.datatype, s.shape) for s in model.outputs] == [
        ("label", "INT64", (-1,)),
        ("probabilities", "FP32", (-1, 10)),
    ]
    assert model.batchable
    assert model.warm_up(batch=4) > 0


def test_fixed_batch_model_is_not_batchable(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    path = tmp_path / "fixed.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    assert not OnnxModel(path).batchable


def test_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"not protobuf at all")
    with pytest.raises(ModelLoadError, match="cannot load the model"):
        OnnxModel(path)

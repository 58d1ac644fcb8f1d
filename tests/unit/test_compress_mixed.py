"""Mixed precision in int8 artifacts: the nodes kept out of int8 get fp16-stored weights.

`store_kept_weights_fp16` stores each fp32 weight that only kept nodes read (initializer or
Constant node) as fp16 plus a Cast back to fp32: the artifact is smaller, onnxruntime still
computes in fp32, and the outputs stay within fp16's rounding of the original's. Weights
another node reads, small vectors and values past fp16's range are left alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgemodel_runtime.compress import mixed

RNG = np.random.default_rng(5)


def _model(big: float = 1.0) -> onnx.ModelProto:
    """x -> MatMul(W1) -> MatMul(W2 from a Constant) -> Add(b) -> MatMul(shared) twice."""
    w1 = RNG.normal(size=(32, 32)).astype(np.float32) * big
    w2 = RNG.normal(size=(32, 32)).astype(np.float32)
    shared = RNG.normal(size=(32, 32)).astype(np.float32)
    bias = RNG.normal(size=(32,)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["a"], name="mm1"),
        helper.make_node(
            "Constant", [], ["w2"], name="w2_const", value=numpy_helper.from_array(w2, "w2")
        ),
        helper.make_node("MatMul", ["a", "w2"], ["b"], name="mm2"),
        helper.make_node("Add", ["b", "bias"], ["c"], name="add"),
        helper.make_node("MatMul", ["c", "shared"], ["d"], name="mm3"),
        helper.make_node("MatMul", ["d", "shared"], ["y"], name="mm4"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 32])],
        [
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(shared, "shared"),
            numpy_helper.from_array(bias, "bias"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, path: Path) -> np.ndarray:
    onnx.save_model(model, str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.linspace(-1, 1, 4 * 32, dtype=np.float32).reshape(4, 32)
    return np.asarray(session.run(None, {"x": x})[0])


def _types(model: onnx.ModelProto) -> dict[str, int]:
    return {i.name: i.data_type for i in model.graph.initializer}


def test_kept_nodes_weights_are_stored_fp16_and_still_computed_in_fp32(tmp_path: Path) -> None:
    model = _model()
    expected = _run(model, tmp_path / "fp32.onnx")
    keep = frozenset({"mm1", "mm2", "add", "mm3"})
    assert mixed.store_kept_weights_fp16(model, keep) == ["w1", "w2"]
    onnx.checker.check_model(model)
    types = _types(model)
    assert types["w1_fp16"] == types["w2_fp16"] == TensorProto.FLOAT16
    assert types["shared"] == TensorProto.FLOAT  # `mm4` is not kept and reads it too
    assert types["bias"] == TensorProto.FLOAT  # a vector: below FP16_MIN_VALUES
    assert "w2_const" not in {n.name for n in model.graph.node}
    got = _run(model, tmp_path / "mixed.onnx")
    assert not np.array_equal(got, expected)  # the weights did change
    np.testing.assert_allclose(got, expected, rtol=5e-3, atol=5e-3 * np.abs(expected).max())
    assert (tmp_path / "mixed.onnx").stat().st_size < 0.8 * (tmp_path / "fp32.onnx").stat().st_size


def test_nothing_kept_changes_nothing() -> None:
    model = _model()
    before = model.SerializeToString()
    assert mixed.store_kept_weights_fp16(model, frozenset()) == []
    assert mixed.store_kept_weights_fp16(model, frozenset({"mm4"})) == []  # shared: not only kept
    assert model.SerializeToString() == before


def test_a_weight_past_fp16_range_stays_fp32() -> None:
    model = _model(big=1e5)
    assert mixed.store_kept_weights_fp16(model, frozenset({"mm1", "mm2"})) == ["w2"]
    assert _types(model)["w1"] == TensorProto.FLOAT

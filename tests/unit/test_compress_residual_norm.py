"""Residual Add -> LayerNormalization is written as Sum in CPU artifacts, meaning unchanged.

onnxruntime fuses Add + LayerNormalization into SkipLayerNormalization at load time, and that
CPU kernel is several times slower than the unfused pair (graph.residual_sums_before_layernorm).
These tests pin both halves: the rewrite keeps results bit for bit, and it is what stops the
fusion. If a future onnxruntime fuses Sum as well, `test_the_rewrite_stops_the_fusion` fails and
says so, and the rewrite should be revisited.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgemodel_runtime.compress.graph import residual_sums_before_layernorm

HIDDEN = 64


def residual_block(*, extra_consumer: bool = False, add_is_output: bool = False) -> onnx.ModelProto:
    """x + MatMul(x) -> LayerNormalization, shaped like one transformer residual."""
    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(rng.normal(size=(HIDDEN, HIDDEN)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(size=HIDDEN).astype(np.float32), "gamma"),
        numpy_helper.from_array(rng.normal(size=HIDDEN).astype(np.float32), "beta"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="dense"),
        helper.make_node("Add", ["h", "x"], ["residual"], name="residual_add"),
        helper.make_node(
            "LayerNormalization", ["residual", "gamma", "beta"], ["y"], name="norm", epsilon=1e-12
        ),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16, HIDDEN])]
    if extra_consumer:
        nodes.append(helper.make_node("Relu", ["residual"], ["side"], name="side"))
        outputs.append(
            helper.make_tensor_value_info("side", TensorProto.FLOAT, ["batch", 16, HIDDEN])
        )
    if add_is_output:
        outputs.append(
            helper.make_tensor_value_info("residual", TensorProto.FLOAT, ["batch", 16, HIDDEN])
        )
    graph = helper.make_graph(
        nodes,
        "residual",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16, HIDDEN])],
        outputs,
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def optimized_ops(model: onnx.ModelProto, tmp_path: Path) -> list[str]:
    """The op types onnxruntime actually runs after its own (ORT_ENABLE_ALL) fusions."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load_model(options.optimized_model_filepath).graph.node]


def run(model: onnx.ModelProto, x: np.ndarray, *, optimize: bool) -> list[np.ndarray]:
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return [np.asarray(out) for out in session.run(None, {"x": x})]


def test_rewrites_the_residual_add_and_keeps_the_results() -> None:
    original = residual_block()
    rewritten = residual_block()
    assert residual_sums_before_layernorm(rewritten) == 1
    assert [n.op_type for n in rewritten.graph.node] == ["MatMul", "Sum", "LayerNormalization"]
    onnx.checker.check_model(rewritten)
    x = np.random.default_rng(5).normal(size=(3, 16, HIDDEN)).astype(np.float32)
    # The ops as written: Sum is Add, bit for bit.
    for before, after in zip(
        run(original, x, optimize=False), run(rewritten, x, optimize=False), strict=True
    ):
        np.testing.assert_array_equal(before, after)
    # As served: the original runs as the fused kernel, whose float rounding differs slightly.
    for before, after in zip(
        run(original, x, optimize=True), run(rewritten, x, optimize=True), strict=True
    ):
        np.testing.assert_allclose(before, after, rtol=1e-4, atol=1e-5)


def test_the_rewrite_stops_the_fusion(tmp_path: Path) -> None:
    original = residual_block()
    assert "SkipLayerNormalization" in optimized_ops(original, tmp_path)
    rewritten = residual_block()
    residual_sums_before_layernorm(rewritten)
    ops = optimized_ops(rewritten, tmp_path)
    assert "SkipLayerNormalization" not in ops
    assert "LayerNormalization" in ops


def test_leaves_an_add_whose_result_is_used_elsewhere() -> None:
    for model in (residual_block(extra_consumer=True), residual_block(add_is_output=True)):
        assert residual_sums_before_layernorm(model) == 0
        assert "Add" in [n.op_type for n in model.graph.node]


def test_a_graph_without_layer_norm_is_untouched() -> None:
    model = residual_block()
    del model.graph.node[2]
    model.graph.output[0].name = "residual"
    before = model.SerializeToString()
    assert residual_sums_before_layernorm(model) == 0
    assert model.SerializeToString() == before

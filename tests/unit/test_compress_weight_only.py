"""Weight-only int8: weights stored int8 with per-channel scales, computed in fp32.

The rewrite must keep the graph's meaning (outputs within int8 rounding of the original), cost
nothing at run time (onnxruntime folds the Cast/Mul that rebuild each weight when it loads
the model, so the graph it runs is the fp32 graph), reach weights inside subgraphs, and leave
alone what it should: vectors, small tensors, weights of nodes kept in full precision.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgemodel_runtime.compress import graph

RNG = np.random.default_rng(3)


def conv_model() -> onnx.ModelProto:
    weight = RNG.normal(0, 0.1, (16, 8, 3, 3)).astype(np.float32)
    weight[3] *= 40  # one channel far larger: per-tensor scales would crush the others
    bias = RNG.normal(0, 0.1, (16,)).astype(np.float32)
    fc = RNG.normal(0, 0.1, (16, 32)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "fc"], ["y"], name="fc"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
        [
            numpy_helper.from_array(weight, "w"),
            numpy_helper.from_array(bias, "b"),
            numpy_helper.from_array(fc, "fc"),
        ],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


def initializer_types(model: onnx.ModelProto) -> dict[str, int]:
    return {i.name: i.data_type for i in model.graph.initializer}


def test_weights_become_int8_and_outputs_stay_within_rounding() -> None:
    model = conv_model()
    x = RNG.normal(0, 1, (1, 8, 12, 12)).astype(np.float32)
    before = run(model, x)
    converted = graph.store_weights_int8(model)
    onnx.checker.check_model(model)
    assert sorted(converted) == ["fc", "w"]  # the bias is a vector: it stays exact
    types = initializer_types(model)
    assert types["w_w8"] == TensorProto.INT8 and types["fc_w8"] == TensorProto.INT8
    assert types["b"] == TensorProto.FLOAT and "w" not in types
    after = run(model, x)
    assert np.linalg.norm(after - before) / np.linalg.norm(before) < 0.01


def test_onnxruntime_folds_the_rebuild_so_it_runs_the_fp32_graph(tmp_path: Path) -> None:
    model = conv_model()
    graph.store_weights_int8(model)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp_path / "as-run.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load_model(options.optimized_model_filepath).graph.node]
    assert "Cast" not in ops and "Mul" not in ops and "DequantizeLinear" not in ops
    assert ops.count("Conv") == 1 and ops.count("MatMul") == 1


def test_nodes_kept_in_full_precision_keep_fp32_weights() -> None:
    model = conv_model()
    assert graph.store_weights_int8(model, keep=frozenset({"conv"})) == ["fc"]
    assert initializer_types(model)["w"] == TensorProto.FLOAT


def test_constants_inside_subgraphs_are_converted() -> None:
    table = RNG.normal(0, 1, (32, 16)).astype(np.float32)
    branch = helper.make_graph(
        [
            helper.make_node(
                "Constant", [], ["t"], name="table", value=numpy_helper.from_array(table)
            ),
            helper.make_node("MatMul", ["x", "t"], ["y1"], name="mm"),
        ],
        "then",
        [],
        [helper.make_tensor_value_info("y1", TensorProto.FLOAT, [1, 16])],
    )
    other = helper.make_graph(
        [helper.make_node("Constant", [], ["y2"], value_floats=[0.0] * 16, name="zeros")],
        "else",
        [],
        [helper.make_tensor_value_info("y2", TensorProto.FLOAT, [16])],
    )
    g = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], name="if", then_branch=branch, else_branch=other)],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32]),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = RNG.normal(0, 1, (1, 32)).astype(np.float32)
    feed = {"x": x, "c": np.array(True)}
    before = ort.InferenceSession(model.SerializeToString()).run(None, feed)[0]
    assert graph.store_weights_int8(model) == ["t"]
    then = next(a.g for a in model.graph.node[0].attribute if a.name == "then_branch")
    assert {i.data_type for i in then.initializer} >= {TensorProto.INT8}
    after = ort.InferenceSession(model.SerializeToString()).run(None, feed)[0]
    assert np.allclose(after, before, atol=0.05 * float(np.abs(before).max()))


def test_compact_names_keep_the_interface_and_the_outputs() -> None:
    model = conv_model()
    graph.store_weights_int8(model)
    x = RNG.normal(0, 1, (1, 8, 12, 12)).astype(np.float32)
    before = run(model, x)
    saved = graph.compact_names(model)
    onnx.checker.check_model(model)
    assert saved > 0
    assert [i.name for i in model.graph.input] == ["x"]
    assert [o.name for o in model.graph.output] == ["y"]
    assert np.array_equal(run(model, x), before)


def test_used_domains_are_declared() -> None:
    model = conv_model()
    model.graph.node[1].domain = "com.microsoft"  # as a fusion would leave it
    graph.ensure_domains(model)
    assert "com.microsoft" in {o.domain for o in model.opset_import}

"""Node order in graphs with If branches: what the fp16 converter breaks and `repair` mends.

onnxruntime's float16 converter, given a model whose compute sits inside If branches (as
silero-vad's does) and an op it must keep fp32 there, puts the Casts it adds in the main
graph and appends nodes after their readers; onnxruntime refuses the result. `repair` moves
each node into the graph that defines what it reads and sorts every graph, counting what a
branch reads from the outer scope as an input of the If.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgemodel_runtime.compress import subgraphs


def _branch(name: str, weight: np.ndarray) -> onnx.GraphProto:
    """y = sqrt(|x @ W| + 1) * scale, reading x and scale from the outer scope."""
    return helper.make_graph(
        [
            helper.make_node("MatMul", ["x", f"{name}_w"], [f"{name}_m"], name=f"{name}_mm"),
            helper.make_node("Abs", [f"{name}_m"], [f"{name}_a"], name=f"{name}_abs"),
            helper.make_node("Add", [f"{name}_a", "one"], [f"{name}_p"], name=f"{name}_add"),
            helper.make_node("Sqrt", [f"{name}_p"], [f"{name}_s"], name=f"{name}_sqrt"),
            helper.make_node("Mul", [f"{name}_s", "scale"], [f"{name}_y"], name=f"{name}_mul"),
        ],
        name,
        [],
        [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, f"{name}_w")],
    )


def _model() -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    weight = rng.normal(size=(8, 8)).astype(np.float32)
    cond = helper.make_node("Greater", ["flag", "zero"], ["cond"], name="cond")
    branch = helper.make_node(
        "If",
        ["cond"],
        ["y"],
        name="if",
        then_branch=_branch("then", weight),
        else_branch=_branch("else", -weight),
    )
    scale = helper.make_node("Mul", ["x_scale", "two"], ["scale"], name="scale")
    graph = helper.make_graph(
        [cond, branch, scale],  # `scale` comes after the If that reads it
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8]),
            helper.make_tensor_value_info("flag", TensorProto.FLOAT, []),
            helper.make_tensor_value_info("x_scale", TensorProto.FLOAT, [1, 8]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [
            numpy_helper.from_array(np.array(0, np.float32), "zero"),
            numpy_helper.from_array(np.array(1, np.float32), "one"),
            numpy_helper.from_array(np.array(2, np.float32), "two"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, path: Path, flag: float) -> np.ndarray:
    onnx.save_model(model, str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(1, 8)
    feed = {"x": x, "flag": np.array(flag, np.float32), "x_scale": np.full((1, 8), 0.5, np.float32)}
    return np.asarray(session.run(None, feed)[0])


def _fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.transformers import float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = float16.convert_float_to_float16(
            model, keep_io_types=True, op_block_list=["Sqrt"]
        )
    del converted.graph.value_info[:]
    return converted


def test_outer_reads_are_what_a_branch_reads_but_does_not_define() -> None:
    then_branch = _model().graph.node[1].attribute[0].g
    assert subgraphs.outer_reads(then_branch) == {"x", "one", "scale"}


def test_sorting_puts_an_if_after_what_its_branches_read(tmp_path: Path) -> None:
    model = _model()
    with pytest.raises(onnx.checker.ValidationError, match="topologically sorted"):
        onnx.checker.check_model(model)
    subgraphs.sort_all(model)
    onnx.checker.check_model(model)
    assert [n.name for n in model.graph.node] == ["cond", "scale", "if"]
    assert _run(model, tmp_path / "sorted.onnx", 1.0).shape == (1, 8)


def test_repair_mends_the_fp16_converters_misplaced_casts(tmp_path: Path) -> None:
    original = _model()
    subgraphs.sort_all(original)
    expected = {flag: _run(original, tmp_path / "fp32.onnx", flag) for flag in (1.0, -1.0)}
    converted = _fp16(original)
    with pytest.raises(Exception, match="not a graph input"):
        _run(converted, tmp_path / "broken.onnx", 1.0)
    assert subgraphs.repair(converted) > 0
    onnx.checker.check_model(converted)
    for flag, want in expected.items():  # both branches, each in fp16 around its fp32 Sqrt
        np.testing.assert_allclose(_run(converted, tmp_path / "fp16.onnx", flag), want, rtol=2e-2)
    branch = next(n for n in converted.graph.node if n.op_type == "If")
    weights = [i for b in branch.attribute for i in b.g.initializer]
    assert {w.data_type for w in weights} == {TensorProto.FLOAT16}


def test_repair_leaves_a_valid_graph_alone() -> None:
    model = _model()
    subgraphs.sort_all(model)
    before = model.SerializeToString()
    assert subgraphs.repair(model) == 0
    assert model.SerializeToString() == before

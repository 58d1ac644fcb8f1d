"""Magnitude pruning: exact sparsity, smallest weights first, only MatMul/Gemm/Conv weights."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from onnx import TensorProto, helper, numpy_helper

from edgemodel_runtime.compress.pruning import magnitude_prune, prune_model

finite = st.floats(-100, 100, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float32, st.tuples(st.integers(1, 20), st.integers(1, 20)), elements=finite),
    st.floats(0, 0.95),
)
def test_prunes_exactly_the_smallest_magnitudes(weights: np.ndarray, sparsity: float) -> None:
    pruned = magnitude_prune(weights, sparsity)
    count = round(sparsity * weights.size)
    changed = pruned != weights
    assert int(np.count_nonzero(changed)) <= count
    assert np.all(pruned[changed] == 0)
    zeroed = np.abs(weights[(pruned == 0) & (weights != 0)])
    kept = np.abs(weights[pruned != 0])
    if zeroed.size and kept.size:
        assert zeroed.max() <= kept.min()
    # The original is untouched.
    assert pruned is not weights


def test_prune_model_touches_only_2d_weights_of_matmul_like_ops() -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 8)).astype(np.float32)
    emb = rng.standard_normal((10, 8)).astype(np.float32)
    bias = rng.standard_normal(8).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["emb", "ids"], ["e"]),
            helper.make_node("MatMul", ["e", "w"], ["m"]),
            helper.make_node("Add", ["m", "bias"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
        [numpy_helper.from_array(a, n) for a, n in ((w, "w"), (emb, "emb"), (bias, "bias"))],
    )
    model = helper.make_model(graph)
    stats = prune_model(model, 0.5)
    after = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert (stats.tensors, stats.parameters, stats.zeroed) == (1, 64, 32)
    assert np.count_nonzero(after["w"] == 0) == 32
    assert np.array_equal(after["emb"], emb) and np.array_equal(after["bias"], bias)


def test_weights_held_in_constant_nodes_are_pruned_too() -> None:
    """PaddlePaddle exports keep their weights in Constant nodes, not initializers."""
    weights = np.arange(1, 17, dtype=np.float32).reshape(4, 4)
    graph = helper.make_graph(
        [
            helper.make_node(
                "Constant", [], ["w"], name="w", value=numpy_helper.from_array(weights)
            ),
            helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph)
    stats = prune_model(model, 0.5)
    assert (stats.tensors, stats.parameters, stats.zeroed) == (1, 16, 8)
    pruned = numpy_helper.to_array(model.graph.node[0].attribute[0].t)
    assert np.count_nonzero(pruned) == 8 and pruned.max() == 16

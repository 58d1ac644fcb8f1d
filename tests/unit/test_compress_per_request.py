"""Per-request evaluation rows: models whose batch is not axis 0 of every input.

A recurrent model takes its state as [layers, batch, hidden] and a scalar sample rate; its data
file stacks whole requests, each array one rank more than the input, and every row runs alone.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edgemodel_runtime.compress.errors import CompressError
from edgemodel_runtime.compress.inputs import check_arrays, input_specs, per_request
from edgemodel_runtime.compress.runner import run_all, sample_feed


def stateful_model() -> onnx.ModelProto:
    """y = sum(x) + sum(state) * rate; state' = state + 1."""
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["sx"], keepdims=0, name="sx"),
        helper.make_node("ReduceSum", ["state"], ["ss"], keepdims=0, name="ss"),
        helper.make_node("Cast", ["rate"], ["rf"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Mul", ["ss", "rf"], ["m"], name="mul"),
        helper.make_node("Add", ["sx", "m"], ["y"], name="add"),
        helper.make_node("Add", ["state", "one"], ["state_out"], name="next"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, 1, 3]),
            helper.make_tensor_value_info("rate", TensorProto.INT64, []),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, []),
            helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [2, 1, 3]),
        ],
        [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def requests(rows: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x": rng.normal(size=(rows, 1, 4)).astype(np.float32),
        "state": rng.normal(size=(rows, 2, 1, 3)).astype(np.float32),
        "rate": np.full(rows, 2, np.int64),
    }


def test_stacked_requests_are_accepted_and_each_row_runs_alone() -> None:
    model = stateful_model()
    specs = input_specs(model)
    data = requests(5)
    assert per_request(data, specs)
    assert check_arrays(data, specs, "--eval", allow_labels=False) == 5
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = run_all(session, data, specs)
    assert outputs["y"].shape == (5,) and outputs["state_out"].shape == (5, 2, 1, 3)
    expected = data["x"].sum(axis=(1, 2)) + data["state"].sum(axis=(1, 2, 3)) * 2
    assert np.allclose(outputs["y"], expected, rtol=1e-5)
    feed = sample_feed(data, specs)
    assert feed["state"].shape == (2, 1, 3) and feed["rate"].shape == ()


def test_mixing_stacked_and_batched_arrays_is_refused_naming_the_array() -> None:
    specs = input_specs(stateful_model())
    data = requests(5)
    data["x"] = data["x"][:, 0, :]  # batched along axis 0, unlike the others
    with pytest.raises(CompressError, match="'state' has shape"):
        check_arrays(data, specs, "--eval", allow_labels=False)


def test_a_stacked_request_with_the_wrong_shape_is_refused() -> None:
    specs = input_specs(stateful_model())
    data = requests(5)
    data["state"] = np.zeros((5, 2, 1, 4), np.float32)
    with pytest.raises(CompressError, match=r"'state' has requests of shape \[2, 1, 4\]"):
        check_arrays(data, specs, "--eval", allow_labels=False)

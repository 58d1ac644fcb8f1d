"""Bias correction of int8-stored convolution weights: the mean output shift goes into the bias."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgemodel_runtime.compress import graph
from edgemodel_runtime.compress.biascorrect import (
    biased_convs,
    conv_bias_delta,
    conv_weights,
    correct_conv_biases,
)


def test_the_delta_is_the_weight_change_applied_to_the_mean_input() -> None:
    rng = np.random.default_rng(0)
    delta_weight = rng.normal(0, 1, (4, 3, 3, 3)).astype(np.float32)
    mean = np.array([1.0, -2.0, 0.5], np.float32)
    # A constant input equal to the mean: the conv's output shift is exactly the delta.
    image = np.broadcast_to(mean[:, None, None], (3, 3, 3))
    expected = np.einsum("oikl,ikl->o", delta_weight, image)
    assert np.allclose(conv_bias_delta(delta_weight, mean, group=1), expected, atol=1e-5)


def test_depthwise_and_grouped_convolutions_read_their_own_channels() -> None:
    delta_weight = np.ones((4, 1, 3, 3), np.float32)  # depthwise: 4 channels, group 4
    mean = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    assert np.allclose(conv_bias_delta(delta_weight, mean, group=4), 9 * mean)
    grouped = np.ones((4, 2, 1, 1), np.float32)  # group 2: outputs 0-1 read inputs 0-1
    assert np.allclose(conv_bias_delta(grouped, mean, group=2), [3, 3, 7, 7])
    with pytest.raises(ValueError, match="does not read 4 input channels"):
        conv_bias_delta(np.ones((4, 3, 1, 1), np.float32), mean, group=1)


def conv_model(weight: np.ndarray) -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")]
    inits = [
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(np.zeros(weight.shape[0], np.float32), "b"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, weight.shape[1], 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits))


def test_the_correction_removes_the_mean_shift_of_the_stored_int8_weights() -> None:
    rng = np.random.default_rng(1)
    weight = rng.normal(0, 1, (8, 16, 1, 1)).astype(np.float32)
    model = conv_model(weight)
    assert [n.name for n in biased_convs(model)] == ["conv"]
    originals = conv_weights(model)
    assert set(originals) == {"w"}
    graph.store_weights_int8(model, min_values=16)
    mean = rng.uniform(0.5, 2.0, 16).astype(np.float32)
    assert correct_conv_biases(model, originals, {"x": mean}) == ["conv"]
    tensors = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    rebuilt = tensors["w_w8"].astype(np.float32) * tensors["w_w8_scale"].astype(np.float32)
    # With the corrected bias, the int8 conv's output at the mean input is the fp32 one's.
    fp32 = weight[:, :, 0, 0] @ mean
    corrected = rebuilt[:, :, 0, 0] @ mean + tensors["b"]
    assert np.allclose(corrected, fp32, atol=1e-5)
    assert not np.allclose(rebuilt[:, :, 0, 0] @ mean, fp32, atol=1e-5)  # it needed one


def test_convs_without_int8_weights_or_means_are_left_alone() -> None:
    model = conv_model(np.ones((2, 2, 1, 1), np.float32))  # 4 values: under the int8 floor
    originals = conv_weights(model)
    graph.store_weights_int8(model)
    assert correct_conv_biases(model, originals, {"x": np.ones(2, np.float32)}) == []
    assert correct_conv_biases(model, originals, {}) == []

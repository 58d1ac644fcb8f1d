"""Owns unstructured magnitude pruning of weight initializers (applied before quantization).

Only 2-D+ weights of MatMul/Gemm/Conv are pruned, whether stored as initializers or in
Constant nodes (PaddlePaddle exports): biases, norms and embeddings are small or sensitive.
Zeros do not shrink a dense ONNX file, but they do shrink the artifact on the wire (zstd),
which is what the report's on-the-wire size shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

PRUNABLE = {"MatMul": 1, "Gemm": 1, "Conv": 1}


@dataclass(frozen=True)
class PruneStats:
    """What pruning did, for the report."""

    tensors: int
    parameters: int
    zeroed: int


def magnitude_prune(weights: np.ndarray, sparsity: float) -> np.ndarray:
    """Zero exactly round(sparsity * size) entries of smallest magnitude (pure; returns a copy)."""
    out = np.array(weights, copy=True)
    count = round(sparsity * out.size)
    if count <= 0:
        return out
    flat = out.reshape(-1)
    # argpartition gives an exact count even when many magnitudes tie (a threshold would not).
    smallest = np.argpartition(np.abs(flat), count - 1)[:count]
    flat[smallest] = 0
    return out


def prunable_initializers(model: onnx.ModelProto) -> list[str]:
    by_name = {init.name: init for init in model.graph.initializer}
    names: list[str] = []
    for node in model.graph.node:
        position = PRUNABLE.get(node.op_type)
        if position is None or len(node.input) <= position:
            continue
        init = by_name.get(node.input[position])
        floating = init is not None and init.data_type in (
            onnx.TensorProto.FLOAT,
            onnx.TensorProto.FLOAT16,
            onnx.TensorProto.DOUBLE,
        )
        if init is not None and floating and len(init.dims) >= 2 and init.name not in names:
            names.append(init.name)
    return names


def _constant_weights(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """Weights held in Constant nodes (PaddlePaddle exports), by output name."""
    weight_inputs = {
        node.input[position]
        for node in model.graph.node
        if (position := PRUNABLE.get(node.op_type)) is not None and len(node.input) > position
    }
    found: dict[str, onnx.TensorProto] = {}
    for node in model.graph.node:
        if node.op_type != "Constant" or node.output[0] not in weight_inputs:
            continue
        for attribute in node.attribute:
            tensor = attribute.t
            if (
                attribute.name == "value"
                and len(tensor.dims) >= 2
                and tensor.data_type
                in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
            ):
                found[node.output[0]] = tensor
    return found


def prune_model(model: onnx.ModelProto, sparsity: float) -> PruneStats:
    """Prune the model's weights in place (initializers and Constant-node weights)."""
    targets = set(prunable_initializers(model))
    tensors = parameters = zeroed = 0
    stored = [init for init in model.graph.initializer if init.name in targets]
    for name, tensor in _constant_weights(model).items():
        tensor.name = tensor.name or name
        stored.append(tensor)
    for tensor in stored:
        weights = numpy_helper.to_array(tensor)
        pruned = magnitude_prune(weights, sparsity)
        tensor.CopyFrom(numpy_helper.from_array(pruned, tensor.name))
        tensors += 1
        parameters += int(weights.size)
        zeroed += int(np.count_nonzero(pruned == 0))
    return PruneStats(tensors, parameters, zeroed)

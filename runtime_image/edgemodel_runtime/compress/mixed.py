"""Owns mixed precision in int8 artifacts: the weights of the nodes kept in float go fp16.

The accuracy search keeps its most sensitive nodes out of int8 (see search). Their weights
need not stay fp32 for that: fp16 holds a trained weight to about 3 significant digits, far
inside what int8 costs, at half the bytes. `store_kept_weights_fp16` stores each fp32 weight
read by a kept node as fp16 plus a Cast back to fp32; onnxruntime folds the Cast of a
constant when it loads the model, so the kept node still computes in fp32 with fp32 kernels.
Measured on the PP-OCRv4 recognizer (docs/architecture.md, "Compression on real models"):
its pointwise convolutions are the sensitive nodes, and fp16 weights for all of them give
the original's text on every evaluation line where int8 weights changed 4 of 64.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

# Below this many values a weight is not worth a Cast node (biases, norm scales stay fp32).
FP16_MIN_VALUES = 256
FP16_LIMIT = 65504.0


def _fits_fp16(values: np.ndarray) -> bool:
    """fp16 holds the tensor: no value past fp16's range (pure)."""
    return bool(values.size == 0 or float(np.max(np.abs(values))) <= FP16_LIMIT)


def _read_by_kept(graph_proto: onnx.GraphProto, keep: frozenset[str]) -> set[str]:
    return {name for node in graph_proto.node if node.name in keep for name in node.input}


def _eligible(name: str, values: np.ndarray, readers: set[str], others: set[str]) -> bool:
    return (
        name in readers
        and name not in others
        and values.dtype == np.float32
        and values.size >= FP16_MIN_VALUES
        and _fits_fp16(values)
    )


def _cast(stored: str, name: str) -> onnx.NodeProto:
    return helper.make_node(
        "Cast", [stored], [name], name=f"{name}_fp16_cast", to=onnx.TensorProto.FLOAT
    )


def store_kept_weights_fp16(model: onnx.ModelProto, keep: frozenset[str]) -> list[str]:
    """Store the fp32 weights that only kept nodes read as fp16 + Cast; returns their names.

    Weights are initializers or Constant nodes. A weight also read by a node that is not
    kept (or a graph output) is left alone: that reader may be int8 already, or must not
    change. Only the main graph is visited: the accuracy search keeps main-graph nodes.
    """
    if not keep:
        return []
    graph_proto = model.graph
    readers = _read_by_kept(graph_proto, keep)
    others = {n for node in graph_proto.node if node.name not in keep for n in node.input}
    others |= {o.name for o in graph_proto.output}
    converted: list[str] = []
    casts: list[onnx.NodeProto] = []
    tensors: list[onnx.TensorProto] = []
    for init in graph_proto.initializer:
        values = numpy_helper.to_array(init)
        if _eligible(init.name, values, readers, others):
            tensors.append(numpy_helper.from_array(values.astype(np.float16), f"{init.name}_fp16"))
            casts.append(_cast(f"{init.name}_fp16", init.name))
            converted.append(init.name)
        else:
            tensors.append(init)
    body: list[onnx.NodeProto] = []
    for node in graph_proto.node:
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and value is not None:
            values = numpy_helper.to_array(value)
            if _eligible(node.output[0], values, readers, others):
                stored = f"{node.output[0]}_fp16"
                tensors.append(numpy_helper.from_array(values.astype(np.float16), stored))
                casts.append(_cast(stored, node.output[0]))
                converted.append(node.output[0])
                continue
        body.append(node)
    if converted:
        del graph_proto.initializer[:]
        graph_proto.initializer.extend(tensors)
        del graph_proto.node[:]
        graph_proto.node.extend([*casts, *body])
    return converted

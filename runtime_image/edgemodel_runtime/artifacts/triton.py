"""Owns Triton's `config.pbtxt` for an ONNX model served by the onnxruntime backend.

Pure: an `onnx.ModelProto` in, protobuf text out (it parses as `inference.ModelConfig`).
Rules:
- Inputs are the graph inputs that are not initializers; outputs are the graph outputs, with
  Triton data types mapped from the ONNX element types and dims from the declared shapes
  (-1 for a dynamic dim). Missing output shapes are filled by ONNX shape inference first.
- Batching: when every input and every output has a dynamic first dim and the requested (or
  default, `DEFAULT_MAX_BATCH_SIZE`) max_batch_size is > 0, `max_batch_size` is set and the
  first dim is dropped from every tensor. Otherwise max_batch_size is 0 and dims are full.
  An output with a dynamic first dim on a fixed-batch model would break Triton's batcher,
  which is why outputs count too.
- A tensor left with no dims (a [batch] tensor once batch is dropped, or a scalar) is written
  `dims: [ 1 ] reshape: { shape: [ ] }`, the form Triton requires for rank-0 tensors.
- `instance_group` on GPU or CPU; `dynamic_batching` when batching; on GPU with fp16, the
  TensorRT execution accelerator at FP16 precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import onnx
from onnx import TensorProto

from edgemodel_runtime.errors import EdgeModelRuntimeError, FailureKind

DEFAULT_MAX_BATCH_SIZE = 64

# ONNX element type -> Triton data type (model_config.proto's DataType).
DATA_TYPES: dict[int, str] = {
    TensorProto.BOOL: "TYPE_BOOL",
    TensorProto.UINT8: "TYPE_UINT8",
    TensorProto.UINT16: "TYPE_UINT16",
    TensorProto.UINT32: "TYPE_UINT32",
    TensorProto.UINT64: "TYPE_UINT64",
    TensorProto.INT8: "TYPE_INT8",
    TensorProto.INT16: "TYPE_INT16",
    TensorProto.INT32: "TYPE_INT32",
    TensorProto.INT64: "TYPE_INT64",
    TensorProto.FLOAT16: "TYPE_FP16",
    TensorProto.FLOAT: "TYPE_FP32",
    TensorProto.DOUBLE: "TYPE_FP64",
    TensorProto.STRING: "TYPE_STRING",
    TensorProto.BFLOAT16: "TYPE_BF16",
}


class TritonConfigError(EdgeModelRuntimeError, ValueError):
    """The model cannot be described to Triton (unsupported type, unknown rank, bad name)."""

    failure = FailureKind.INVALID_INPUT


@dataclass(frozen=True)
class Tensor:
    """A graph input or output as Triton needs it: name, Triton type, full dims (-1 dynamic)."""

    name: str
    data_type: str
    dims: tuple[int, ...]


def _tensor(value: onnx.ValueInfoProto, role: str) -> Tensor:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        raise TritonConfigError(
            f"{role} {value.name!r} is a {kind or 'untyped value'}, not a tensor"
        )
    tensor_type = value.type.tensor_type
    data_type = DATA_TYPES.get(tensor_type.elem_type)
    if data_type is None:
        type_name = TensorProto.DataType.Name(tensor_type.elem_type)
        raise TritonConfigError(
            f"{role} {value.name!r}: element type {type_name} has no Triton type"
        )
    if not tensor_type.HasField("shape"):
        raise TritonConfigError(f"{role} {value.name!r}: unknown rank; Triton needs its dims")
    dims = tuple(
        dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else -1
        for dim in tensor_type.shape.dim
    )
    return Tensor(value.name, data_type, dims)


def _with_inferred_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fill in output shapes the exporter left out; the caller's model is not modified."""
    outputs = model.graph.output
    if all(o.type.tensor_type.HasField("shape") for o in outputs):
        return model
    try:
        return onnx.shape_inference.infer_shapes(model)
    except (onnx.shape_inference.InferenceError, ValueError, RuntimeError):
        return model  # _tensor then names the output whose rank stays unknown


def graph_tensors(model: onnx.ModelProto) -> tuple[list[Tensor], list[Tensor]]:
    """(inputs, outputs) of the main graph, initializers excluded from the inputs."""
    model = _with_inferred_outputs(model)
    initializers = {init.name for init in model.graph.initializer}
    inputs = [_tensor(v, "input") for v in model.graph.input if v.name not in initializers]
    outputs = [_tensor(v, "output") for v in model.graph.output]
    if not outputs:
        raise TritonConfigError("the model has no outputs")
    return inputs, outputs


def batchable(tensors: Sequence[Tensor]) -> bool:
    """Every tensor has a dynamic first dim, so Triton may stack requests along it."""
    return bool(tensors) and all(t.dims and t.dims[0] == -1 for t in tensors)


def _quote(value: str) -> str:
    """A protobuf text-format string literal; non-printable and non-ASCII bytes as octal."""
    out = []
    for byte in value.encode("utf-8"):
        char = chr(byte)
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _tensor_block(field: str, tensor: Tensor, batched: bool) -> list[str]:
    dims = tensor.dims[1:] if batched else tensor.dims
    lines = [
        f"{field} {{",
        f"  name: {_quote(tensor.name)}",
        f"  data_type: {tensor.data_type}",
    ]
    if dims:
        lines.append(f"  dims: [ {', '.join(str(d) for d in dims)} ]")
    else:
        lines.append("  dims: [ 1 ]")
        lines.append("  reshape: { shape: [ ] }")
    lines.append("}")
    return lines


def triton_config(
    model: onnx.ModelProto,
    name: str,
    *,
    max_batch_size: int | None,
    gpu: bool,
    fp16: bool,
    instance_count: int,
    dynamic_batching: bool = True,
    max_queue_delay_us: int = 100,
) -> str:
    """config.pbtxt text for `model` served as `name` (see the module docstring for the rules).

    `max_batch_size=None` means `DEFAULT_MAX_BATCH_SIZE` when the model can batch.
    """
    if not name:
        raise TritonConfigError("the model name must not be empty")
    if instance_count < 1:
        raise TritonConfigError(f"instance count {instance_count} must be at least 1")
    if max_batch_size is not None and max_batch_size < 0:
        raise TritonConfigError(f"max batch size {max_batch_size} must not be negative")
    if max_queue_delay_us < 0:
        raise TritonConfigError(f"max queue delay {max_queue_delay_us} us must not be negative")
    inputs, outputs = graph_tensors(model)
    requested = DEFAULT_MAX_BATCH_SIZE if max_batch_size is None else max_batch_size
    batched = requested > 0 and batchable(inputs) and batchable(outputs)
    lines = [
        f"name: {_quote(name)}",
        'platform: "onnxruntime_onnx"',
        'backend: "onnxruntime"',
        f"max_batch_size: {requested if batched else 0}",
    ]
    for tensor in inputs:
        lines += _tensor_block("input", tensor, batched)
    for tensor in outputs:
        lines += _tensor_block("output", tensor, batched)
    kind = "KIND_GPU" if gpu else "KIND_CPU"
    lines.append(f"instance_group [ {{ kind: {kind} count: {instance_count} }} ]")
    if batched and dynamic_batching:
        lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {max_queue_delay_us} }}")
    if gpu and fp16:
        lines += [
            "optimization { execution_accelerators {",
            "  gpu_execution_accelerator: [ {",
            '    name: "tensorrt"',
            '    parameters { key: "precision_mode" value: "FP16" }',
            "  } ]",
            "} }",
        ]
    return "\n".join(lines) + "\n"

"""Owns block-wise weight-only quantization: the `int4-weight` and `int8-weight` modes.

MatMul weights (constant B inputs) become onnxruntime's MatMulNBits through its own quantizer
(`onnxruntime.quantization.matmul_nbits_quantizer`, which needs `onnx_ir`): each run of
`block_size` values along the reduction axis gets its own fp32 scale (and, asymmetric, a zero
point), the kernel dequantizes on the fly. CPU artifacts set accuracy_level 4: the kernel
quantizes each block of activations to int8 and uses int8 dot products (without it the 8-bit
kernel was 4.3x slower than fp32 per decode step on the bench decoder, with it 0.49x; same
agreement). Rounding is to nearest by default. With calibration data the MatMuls are also
rounded by GPTQ (compress.gptq, numpy: onnxruntime 1.32's GPTQ and HQQ need PyTorch, which the
runtime image does not carry) onto the same grid, written as the same MatMulNBits nodes
(`gptq_matmuls`); the pipeline gates both and keeps the better.

Embedding Gathers (token ids into a float table) are block-quantized here to
GatherBlockQuantized with uint8-packed storage, so the graph keeps its opset (onnxruntime's
quantizer would force opset 21 for Gather, which breaks older graphs' ReduceMean). Their blocks
run along the hidden (last) axis. GatherBlockQuantized is a CPU kernel, so GPU targets only get
MatMulNBits.

Below 8 bits, the two ends of a language model keep 8 bits: the embedding tables and the output
projection (a MatMul whose result is a graph output: the LM head), as llama.cpp's Q4_K_M keeps
its output tensor at 6 bits and AWQ / GPTQ exports keep the head in fp16. Their error lands on
the logits directly, with no layer after them to average it out: on the 136 M bench decoder
int4 everywhere agreed with fp32 on 80.4 % of next tokens, int4 with 8-bit ends on 95.8 %, for
0.161x vs 0.162x of the fp32 size. GPU targets keep the head in float (their embeddings are
not block-quantized either). See docs/architecture.md, "Weight-only quantization".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgemodel_runtime.compress import gptq
from edgemodel_runtime.compress.errors import CompressError

BITS_OF_MODE = {"int4-weight": 4, "int8-weight": 8}
MS_DOMAIN = "com.microsoft"
CPU_ACCURACY_LEVEL = 4  # MatMulNBits: int8 activations and int8 dot products on CPUs
MIN_WEIGHT_ELEMENTS = 256  # smaller tables are not worth a block op
EDGE_BITS = 8  # embeddings and the LM head of a sub-8-bit plan (see the module docstring)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightOnlyPlan:
    """How one weight-only conversion quantizes: bits, blocks, symmetry, which ops."""

    bits: int
    block_size: int
    symmetric: bool
    embeddings: bool  # quantize embedding Gathers too (CPU targets)
    # MatMulNBits accuracy_level: 4 (CPU targets) quantizes activation blocks to int8 on the fly
    # and uses int8 dot products; None leaves the kernel's fp32 default (GPU targets).
    accuracy_level: int | None = None


@dataclass(frozen=True)
class WeightOnlyStats:
    """What a weight-only conversion touched (for the report)."""

    matmuls: int
    embeddings: int


def quantize_weight_only(
    src: Path,
    out: Path,
    plan: WeightOnlyPlan,
    exclude: tuple[str, ...] = (),
    hessians: dict[str, np.ndarray] | None = None,
) -> WeightOnlyStats:
    """Write `src` with its MatMul (and embedding Gather) weights block-quantized to `out`.

    With `hessians` (activation name -> H = 2 XᵀX from calibration data, see gptq) the MatMuls
    reading those activations are rounded by GPTQ instead of to nearest, on the same grid."""
    model = onnx.load_model(str(src))
    heads = output_projections(model) if plan.bits < EDGE_BITS else ()
    matmuls = 0
    if hessians:
        # GPU targets keep the head in float (see the module docstring)
        skip = (*exclude, *heads) if plan.accuracy_level is None else exclude
        matmuls += gptq_matmuls(model, plan, hessians, skip, heads)
    matmuls += _quantize_matmuls(model, plan, (*exclude, *heads))
    if heads and plan.accuracy_level is not None:  # CPU: the head at 8 bits; GPU: in float
        others = tuple(n.name for n in model.graph.node if n.name not in heads)
        matmuls += _quantize_matmuls(model, replace(plan, bits=EDGE_BITS), (*exclude, *others))
    embeddings = []
    if plan.embeddings:
        bits = max(plan.bits, EDGE_BITS)
        embeddings = block_quantize_gathers(model, bits, plan.block_size, plan.symmetric, exclude)
    if not any(op.domain == MS_DOMAIN for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    onnx.save_model(model, str(out))
    return WeightOnlyStats(matmuls=matmuls, embeddings=len(embeddings))


def output_projections(model: onnx.ModelProto) -> tuple[str, ...]:
    """Names of the MatMuls whose output is a graph output: a language model's head (pure)."""
    outputs = {value.name for value in model.graph.output}
    return tuple(
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul" and node.output and node.output[0] in outputs
    )


def block_bits(model: onnx.ModelProto) -> dict[str, list[str]]:
    """The block-quantized nodes of a converted model by their bit width (pure): what the
    report shows, e.g. {"4": [...], "8": ["MatMul_381", "Gather_36"]}."""
    found: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.domain == MS_DOMAIN and node.op_type in ("MatMulNBits", "GatherBlockQuantized"):
            bits = next((a.i for a in node.attribute if a.name == "bits"), 4)
            found.setdefault(str(bits), []).append(node.name)
    return found


def weight_matmuls(
    model: onnx.ModelProto, exclude: tuple[str, ...] = ()
) -> list[tuple[onnx.NodeProto, onnx.TensorProto]]:
    """The MatMuls whose B is a 2-D float initializer (not a graph input), with it (pure)."""
    graph_inputs = {value.name for value in model.graph.input}
    initializers = {
        init.name: init
        for init in model.graph.initializer
        if init.data_type == onnx.TensorProto.FLOAT
        and len(init.dims) == 2
        and init.name not in graph_inputs
    }
    return [
        (node, initializers[node.input[1]])
        for node in model.graph.node
        if node.op_type == "MatMul"
        and len(node.input) == 2
        and node.input[1] in initializers
        and node.name not in exclude
    ]


def gptq_matmuls(
    model: onnx.ModelProto,
    plan: WeightOnlyPlan,
    hessians: dict[str, np.ndarray],
    exclude: tuple[str, ...],
    heads: tuple[str, ...],
) -> int:
    """MatMulNBits rounded by GPTQ for each weight MatMul whose activation has a Hessian (the
    `heads` at EDGE_BITS); named, laid out and attributed as onnxruntime's quantizer writes
    its own. Returns how many."""
    converted: dict[str, onnx.NodeProto] = {}
    added: list[onnx.TensorProto] = []
    factors: dict[str, gptq.Factor] = {}  # q/k/v (gate/up) read one activation: factor it once
    for node, weight in weight_matmuls(model, exclude):
        hessian = hessians.get(node.input[0])
        if hessian is None:
            continue
        if node.input[0] not in factors:
            factors[node.input[0]] = gptq.factorize(hessian, plan.block_size)
        bits = EDGE_BITS if node.name in heads else plan.bits
        blocks = gptq.gptq(
            numpy_helper.to_array(weight),
            hessian,
            bits=bits,
            block_size=plan.block_size,
            symmetric=plan.symmetric,
            factor=factors[node.input[0]],
        )
        replacement, tensors = _nbits_node(node, weight, blocks, plan.accuracy_level)
        converted[node.output[0]] = replacement
        added.extend(tensors)
    nodes = [
        converted.get(n.output[0], n) if n.op_type == "MatMul" else n for n in model.graph.node
    ]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    read = {name for n in model.graph.node for name in n.input}
    kept = [init for init in model.graph.initializer if init.name in read]
    del model.graph.initializer[:]
    model.graph.initializer.extend([*kept, *added])
    return len(converted)


def _nbits_node(
    node: onnx.NodeProto,
    weight: onnx.TensorProto,
    blocks: gptq.Blocks,
    accuracy_level: int | None,
) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    packed, scales, zeros = gptq.pack_blocks(blocks)
    bits = blocks.bits
    tensors = [
        numpy_helper.from_array(packed, f"{weight.name}_Q{bits}"),
        numpy_helper.from_array(scales, f"{weight.name}_scales"),
    ]
    if zeros is not None:
        tensors.append(numpy_helper.from_array(zeros, f"{weight.name}_zero_points"))
    attributes: dict[str, Any] = {
        "K": int(weight.dims[0]),
        "N": int(weight.dims[1]),
        "bits": bits,
        "block_size": blocks.block_size,
    }
    if accuracy_level:
        attributes["accuracy_level"] = accuracy_level
    replacement = helper.make_node(
        "MatMulNBits",
        [node.input[0], *(t.name for t in tensors)],
        list(node.output),
        name=f"{node.name}_Q{bits}" if node.name else "",
        domain=MS_DOMAIN,
        **attributes,
    )
    return replacement, tensors


def _quantize_matmuls(
    model: onnx.ModelProto, plan: WeightOnlyPlan, exclude: tuple[str, ...]
) -> int:
    """MatMulNBits for every MatMul whose B is a 2-D float initializer; returns how many."""
    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    before = sum(n.op_type == "MatMul" for n in model.graph.node)
    config = nbits.DefaultWeightOnlyQuantConfig(
        block_size=plan.block_size,
        is_symmetric=plan.symmetric,
        bits=plan.bits,
        accuracy_level=plan.accuracy_level,
        op_types_to_quantize=("MatMul",),
        quant_axes=(("MatMul", 0),),
    )
    quantizer = nbits.MatMulNBitsQuantizer(
        model,
        bits=plan.bits,
        block_size=plan.block_size,
        is_symmetric=plan.symmetric,
        accuracy_level=plan.accuracy_level,
        nodes_to_exclude=list(exclude),
        algo_config=config,
    )
    quiet = logging.getLogger(nbits.__name__)
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # it logs every node it skips at INFO
    try:
        quantizer.process()
    finally:
        quiet.setLevel(level)
    result = quantizer.model.model
    if result is not model:
        model.CopyFrom(result)
    after = sum(n.op_type == "MatMul" for n in model.graph.node)
    return before - after


def quantize_blocks(
    values: np.ndarray, bits: int, block_size: int, symmetric: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Block-quantize a [rows, cols] table along its last axis (pure).

    Returns (levels uint8 [rows, cols] in 0..2**bits-1, scales float32 [rows, blocks], zero
    points uint8 [rows, blocks] or None when symmetric: the zero point is then 2**(bits-1)).
    `cols` must be a multiple of `block_size`.
    """
    rows, cols = values.shape
    if cols % block_size:
        raise ValueError(f"{cols} columns are not a multiple of block size {block_size}")
    top = (1 << bits) - 1
    blocks = values.astype(np.float32).reshape(rows, cols // block_size, block_size)
    if symmetric:
        middle = 1 << (bits - 1)
        scales = np.abs(blocks).max(axis=2) / (middle - 1 if bits > 1 else 1)
        scales[scales == 0] = 1.0
        levels = np.clip(np.round(blocks / scales[..., None]) + middle, 0, top)
        return levels.reshape(rows, cols).astype(np.uint8), scales.astype(np.float32), None
    low = np.minimum(blocks.min(axis=2), 0.0)
    high = np.maximum(blocks.max(axis=2), 0.0)
    scales = (high - low) / top
    scales[scales == 0] = 1.0
    zeros = np.clip(np.round(-low / scales), 0, top)
    levels = np.clip(np.round(blocks / scales[..., None]) + zeros[..., None], 0, top)
    return (
        levels.reshape(rows, cols).astype(np.uint8),
        scales.astype(np.float32),
        zeros.astype(np.uint8),
    )


def pack(levels: np.ndarray, bits: int) -> np.ndarray:
    """Pack uint8 levels two per byte (4 bits, low nibble first) along the last axis (pure)."""
    if bits == 8:
        return levels.astype(np.uint8)
    if levels.shape[-1] % 2:
        levels = np.concatenate([levels, np.zeros((*levels.shape[:-1], 1), np.uint8)], axis=-1)
    packed: np.ndarray = (levels[..., 0::2] | (levels[..., 1::2] << 4)).astype(np.uint8)
    return packed


def block_quantize_gathers(
    model: onnx.ModelProto, bits: int, block_size: int, symmetric: bool, exclude: tuple[str, ...]
) -> list[str]:
    """Embedding Gathers -> GatherBlockQuantized.

    An embedding Gather reads a 2-D float initializer (read by nothing else) at indices that
    are a graph input (token ids); tables looked up by computed indices (rotary cos/sin
    tables at positions) keep full precision. A table whose hidden size is not a multiple of
    `block_size` is left as it is. Returns the nodes converted.
    """
    if bits not in (4, 8):
        raise CompressError(f"embedding tables take 4 or 8 bits, not {bits}")
    initializers = {init.name: init for init in model.graph.initializer}
    graph_inputs = {value.name for value in model.graph.input}
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    converted: list[str] = []
    dropped: set[str] = set()
    added: list[onnx.TensorProto] = []
    for index, node in enumerate(model.graph.node):
        table = initializers.get(node.input[0]) if node.op_type == "Gather" else None
        if (
            table is None
            or node.name in exclude
            or node.input[1] not in graph_inputs
            or readers.get(table.name, 0) != 1
            or table.data_type != onnx.TensorProto.FLOAT
            or len(table.dims) != 2
            or table.dims[1] % block_size
            or table.dims[0] * table.dims[1] < MIN_WEIGHT_ELEMENTS
            or any(a.name == "axis" and a.i != 0 for a in node.attribute)
        ):
            continue
        replacement, tensors = _gather_node(node, table, bits, block_size, symmetric)
        model.graph.node[index].CopyFrom(replacement)
        added.extend(tensors)
        dropped.add(table.name)
        converted.append(node.name)
    kept = [init for init in model.graph.initializer if init.name not in dropped]
    del model.graph.initializer[:]
    model.graph.initializer.extend([*kept, *added])
    return converted


def _gather_node(
    node: onnx.NodeProto,
    table: onnx.TensorProto,
    bits: int,
    block_size: int,
    symmetric: bool,
) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    levels, scales, zeros = quantize_blocks(
        numpy_helper.to_array(table), bits, block_size, symmetric
    )
    base = f"{table.name}_q{bits}"
    tensors = [
        numpy_helper.from_array(pack(levels, bits), base),
        numpy_helper.from_array(scales, f"{base}_scale"),
    ]
    inputs = [base, node.input[1], f"{base}_scale"]
    if zeros is not None:
        tensors.append(numpy_helper.from_array(pack(zeros, bits), f"{base}_zero_point"))
        inputs.append(f"{base}_zero_point")
    replacement = helper.make_node(
        "GatherBlockQuantized",
        inputs,
        list(node.output),
        name=node.name,
        domain=MS_DOMAIN,
        gather_axis=0,
        quantize_axis=1,
        block_size=block_size,
        bits=bits,
    )
    return replacement, tensors

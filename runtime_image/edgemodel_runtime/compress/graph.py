"""Owns graph-level rewrites that are not quantization: opset upgrade, portable optimisation,
node naming, and which nodes a quantizer may touch.

Only onnxruntime's BASIC optimisation level is ever saved to disk: it is limited to
semantics-preserving rewrites (constant folding, redundant node removal) that every execution
provider understands. EXTENDED/ALL graphs can contain layout-specific ops (NCHWc) chosen for the
machine that ran the optimiser, and must never be shipped to another machine.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx
from onnx import version_converter

from edgemodel_runtime.compress.errors import CompressError, one_line
from edgemodel_runtime.compress.inputs import default_opset

TARGET_OPSET = 17
# Per-channel QDQ needs the `axis` attribute of (De)QuantizeLinear, added in opset 13.
MIN_QUANT_OPSET = 13
# Where the weight sits for each op kind the quantizer handles.
WEIGHT_INPUT = {"MatMul": 1, "Gemm": 1, "Conv": 1, "Gather": 0, "Attention": 1}
# Fused ops worth reporting; all are onnxruntime contrib ops with CPU kernels on every
# architecture (and CUDA), unlike the layout-specific ops of ORT_ENABLE_ALL.
FUSED_OPS = ("Attention", "Gelu", "LayerNormalization", "EmbedLayerNormalization")


def upgrade_opset(model: onnx.ModelProto, label: str) -> tuple[onnx.ModelProto, int | None]:
    """Convert models older than MIN_QUANT_OPSET to TARGET_OPSET; returns (model, old opset)."""
    opset = default_opset(model)
    if opset >= MIN_QUANT_OPSET:
        return model, None
    try:
        converted = version_converter.convert_version(model, TARGET_OPSET)
        onnx.checker.check_model(converted)
    except Exception as exc:
        raise CompressError(
            f"{label}: cannot upgrade opset {opset} to {TARGET_OPSET}: {one_line(str(exc), 200)}"
        ) from None
    return converted, opset


def ensure_node_names(model: onnx.ModelProto) -> None:
    """Give every node a unique name: exclusion lists and the report refer to nodes by name."""
    seen: Counter[str] = Counter()
    for index, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{index}"
        if seen[name]:
            name = f"{name}_{index}"
        seen[name] += 1
        node.name = name


def quantizable_nodes(model: onnx.ModelProto, op_types: tuple[str, ...]) -> list[tuple[str, str]]:
    """(name, op_type) of nodes whose weight is an initializer: the ones a quantizer converts."""
    initializers = {init.name for init in model.graph.initializer}
    found: list[tuple[str, str]] = []
    for node in model.graph.node:
        position = WEIGHT_INPUT.get(node.op_type)
        if node.op_type not in op_types or position is None or len(node.input) <= position:
            continue
        if node.input[position] in initializers:
            found.append((node.name, node.op_type))
    return found


def optimize_basic(src: Path, dst: Path) -> None:
    """Save onnxruntime's BASIC-level optimisation of `src` (portable; see module docstring)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(dst)
    try:
        ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise CompressError(f"optimisation failed: {one_line(str(exc), 200)}", 1) from None


def fuse_transformer(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Fuse BERT-style attention (and Gelu, decomposed LayerNorm) before dynamic int8.

    Why: the dynamic quantizer turns a fused Attention into QAttention (one int8 kernel for
    Q, K and V, softmax and transposes inside) instead of three separately quantized MatMuls
    plus float glue. SkipLayerNormalization and BiasGelu are deliberately *not* fused: on
    onnxruntime 1.32's CPU kernels they are slower than what they replace (see
    `residual_sums_before_layernorm`; BiasGelu loses to a MatMul with the bias folded in plus
    Gelu). Only the pattern-based Python fusions run (opt_level=0): no onnxruntime graph
    optimisation is saved. Graphs without these patterns come back unchanged; any failure
    keeps the original.
    """
    try:
        from onnxruntime.transformers.fusion_options import FusionOptions
        from onnxruntime.transformers.optimizer import optimize_model

        options = FusionOptions("bert")
        options.enable_skip_layer_norm = False
        options.enable_bias_skip_layer_norm = False
        options.enable_bias_gelu = False
        optimized = optimize_model(
            copy_model(model), model_type="bert", opt_level=0, optimization_options=options
        )
        stats = optimized.get_fused_operator_statistics()
    except Exception:  # best effort: an unfusable graph is still quantizable as it is
        return model, []
    fused = [f"{op} x{stats[op]}" for op in FUSED_OPS if stats.get(op)]
    if not fused:
        return model, []
    result: onnx.ModelProto = optimized.model
    return result, fused


def readers(model: onnx.ModelProto) -> Counter[str]:
    """How many node inputs read each tensor name (a node reading it twice counts twice)."""
    return Counter(name for node in model.graph.node for name in node.input)


def residual_sums_before_layernorm(model: onnx.ModelProto) -> int:
    """Write each residual `Add` that feeds a LayerNormalization as the equivalent `Sum`.

    onnxruntime fuses Add + LayerNormalization into SkipLayerNormalization when it loads a
    model (SkipLayerNormFusion matches `Add` only). On its CPU kernels the fused op is the
    slower one: at BERT-base's 128 x 768 it takes 488 us on one thread against 67 us for Sum
    plus LayerNormalization (249 vs ~80 us on two); across BERT-base's 25 norms the int8 model
    runs 36.4 instead of 41.4 ms. `Sum` of two tensors is `Add` (same broadcasting, same
    result, bit for bit), so nothing about the model's meaning changes; only the CPU artifacts
    get this (the CUDA SkipLayerNorm kernel is the fast path there). Returns how many were
    rewritten.
    """
    outputs = {o.name for o in model.graph.output}
    producer = {name: node for node in model.graph.node for name in node.output}
    uses = readers(model)
    rewritten = 0
    for node in model.graph.node:
        if node.op_type != "LayerNormalization" or node.domain not in ("", "ai.onnx"):
            continue
        add = producer.get(node.input[0])
        if (
            add is None
            or add.op_type != "Add"
            or add.domain not in ("", "ai.onnx")
            or uses[add.output[0]] != 1
            or add.output[0] in outputs
        ):
            continue
        add.op_type = "Sum"
        rewritten += 1
    return rewritten


EMBEDDING_BLOCK = 32
MS_DOMAIN = "com.microsoft"


def embedding_tables(model: onnx.ModelProto) -> list[str]:
    """Gather nodes over a large 2-D float table that nothing else reads: embedding lookups.

    A table that another node also reads (a language-model head tied to its embeddings) is
    left alone: it would have to be stored twice. The columns must split into whole blocks.
    """
    import numpy as np

    tables = {
        init.name: init
        for init in model.graph.initializer
        if init.data_type == onnx.TensorProto.FLOAT
        and len(init.dims) == 2
        and init.dims[1] % EMBEDDING_BLOCK == 0
        and int(np.prod(init.dims)) >= LARGE_CONSTANT
    }
    uses = readers(model)
    found: list[str] = []
    for node in model.graph.node:
        if node.op_type != "Gather" or node.domain not in ("", "ai.onnx"):
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if axis == 0 and node.input[0] in tables and uses[node.input[0]] == 1:
            found.append(node.name)
    return found


def block_quantize_embeddings(model: onnx.ModelProto, names: list[str]) -> list[str]:
    """Store the tables of the Gather nodes `names` as 4-bit blocks (GatherBlockQuantized).

    Each run of EMBEDDING_BLOCK values in a row gets its own fp32 scale (absmax / 7) and the
    values are rounded to -8..7, stored with onnxruntime's default zero point 8, two per byte:
    5 bits per value with the scales instead of int8's 8, so BERT-base's 30522 x 768 word table
    takes 14.7 MB instead of 23.4 MB. The lookup dequantizes only the rows it gathers. Returns
    the nodes converted (a node whose table is no longer a float initializer is skipped).
    """
    import numpy as np
    from onnx import helper, numpy_helper

    wanted = set(names)
    initializers = {init.name: init for init in model.graph.initializer}
    dropped: set[str] = set()
    added: list[onnx.TensorProto] = []
    converted: list[str] = []
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        table = initializers.get(node.input[0]) if node.name in wanted else None
        if table is None or node.op_type != "Gather" or table.data_type != onnx.TensorProto.FLOAT:
            nodes.append(node)
            continue
        values = numpy_helper.to_array(table).astype(np.float32)
        rows, cols = values.shape
        blocks = values.reshape(rows, cols // EMBEDDING_BLOCK, EMBEDDING_BLOCK)
        scales = np.abs(blocks).max(axis=2) / 7.0
        scales[scales == 0] = 1.0
        levels = np.clip(np.round(blocks / scales[..., None]), -8, 7).astype(np.int16) + 8
        levels = levels.reshape(rows, cols).astype(np.uint8)
        packed = (levels[:, 0::2] | (levels[:, 1::2] << 4)).astype(np.uint8)
        base = f"{table.name}_4bit"
        added.append(numpy_helper.from_array(packed, base))
        added.append(numpy_helper.from_array(scales.astype(np.float32), f"{base}_scale"))
        dropped.add(table.name)
        nodes.append(
            helper.make_node(
                "GatherBlockQuantized",
                [base, node.input[1], f"{base}_scale"],
                list(node.output),
                name=node.name,
                domain=MS_DOMAIN,
                gather_axis=0,
                quantize_axis=1,
                block_size=EMBEDDING_BLOCK,
                bits=4,
            )
        )
        converted.append(node.name)
    if not converted:
        return []
    kept = [init for init in model.graph.initializer if init.name not in dropped]
    del model.graph.initializer[:]
    model.graph.initializer.extend([*kept, *added])
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if not any(op.domain == MS_DOMAIN for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return converted


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    clone = onnx.ModelProto()
    clone.CopyFrom(model)
    return clone


def topological_sort(model: onnx.ModelProto) -> None:
    """Reorder nodes so every input is produced before use (onnx.checker requires it).

    The fp16 converter appends the Cast nodes it inserts at the end of the node list;
    onnxruntime tolerates that, other consumers of the artifact do not.
    """
    graph = model.graph
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        progressed = False
        remaining: list[onnx.NodeProto] = []
        for node in pending:
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
                progressed = True
            else:
                remaining.append(node)
        if not progressed:  # a cycle or an undefined input: leave it for the checker to name
            ordered.extend(remaining)
            break
        pending = remaining
    del graph.node[:]
    graph.node.extend(ordered)


ELEMENTWISE = frozenset({"Add", "Sub", "Mul"})
LARGE_CONSTANT = 1 << 16


def compress_large_constants(model: onnx.ModelProto) -> list[str]:
    """Store large fp32 constants that feed only elementwise ops as int8 + DequantizeLinear.

    Constant folding turns a Gather over a constant index (BERT's position embeddings) into a
    plain fp32 tensor added to the activations, which no quantizer touches: 4x the bytes the
    Gather table it came from would take once quantized. Symmetric per-tensor int8 gives the
    same precision as the quantized Gather tables; onnxruntime folds the DequantizeLinear back
    at load time, so it costs nothing per request. Returns the names converted.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    consumers: dict[str, set[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.op_type)
    outputs = {o.name for o in model.graph.output}
    converted: list[str] = []
    kept: list[onnx.TensorProto] = []
    dequantize: list[onnx.NodeProto] = []
    for init in model.graph.initializer:
        ops = consumers.get(init.name, set())
        if (
            init.data_type != onnx.TensorProto.FLOAT
            or int(np.prod(init.dims)) < LARGE_CONSTANT
            or not ops
            or not ops <= ELEMENTWISE
            or init.name in outputs
        ):
            kept.append(init)
            continue
        values = numpy_helper.to_array(init).astype(np.float32)
        peak = float(np.max(np.abs(values)))
        scale = np.float32(peak / 127.0 if peak > 0 else 1.0)
        quantized = np.clip(np.round(values / scale), -127, 127).astype(np.int8)
        base = f"{init.name}_int8"
        kept.append(numpy_helper.from_array(quantized, base))
        kept.append(numpy_helper.from_array(np.array(scale, np.float32), f"{base}_scale"))
        kept.append(numpy_helper.from_array(np.array(0, np.int8), f"{base}_zero_point"))
        dequantize.append(
            helper.make_node(
                "DequantizeLinear",
                [base, f"{base}_scale", f"{base}_zero_point"],
                [init.name],
                name=f"{init.name}_dequantize",
            )
        )
        converted.append(init.name)
    if converted:
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)
        nodes = [*dequantize, *model.graph.node]
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return converted

"""Owns graph-level rewrites that are not quantization: opset upgrade, portable optimisation,
node naming, and which nodes a quantizer may touch.

Only onnxruntime's BASIC optimisation level is ever saved to disk: it is limited to
semantics-preserving rewrites (constant folding, redundant node removal) that every execution
provider understands. EXTENDED/ALL graphs can contain layout-specific ops (NCHWc) chosen for the
machine that ran the optimiser, and must never be shipped to another machine.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
from onnx import version_converter

from edgemodel_runtime.compress.errors import CompressError, FailureKind, one_line
from edgemodel_runtime.compress.inputs import default_opset

TARGET_OPSET = 17
# Per-channel QDQ needs the `axis` attribute of (De)QuantizeLinear, added in opset 13.
MIN_QUANT_OPSET = 13
# Where the weight sits for each op kind the quantizer handles.
WEIGHT_INPUT = {
    "MatMul": 1,
    "Gemm": 1,
    "Conv": 1,
    "ConvTranspose": 1,
    "Gather": 0,
    "Attention": 1,
    "LSTM": 1,
}
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


def weight_readers(model: onnx.ModelProto, op_types: tuple[str, ...]) -> list[tuple[str, str]]:
    """Like quantizable_nodes, also counting weights held in Constant nodes (Paddle exports)."""
    constants = {init.name for init in model.graph.initializer} | {
        node.output[0] for node in model.graph.node if node.op_type == "Constant"
    }
    found: list[tuple[str, str]] = []
    for node in model.graph.node:
        position = WEIGHT_INPUT.get(node.op_type)
        if node.op_type not in op_types or position is None or len(node.input) <= position:
            continue
        if node.input[position] in constants:
            found.append((node.name, node.op_type))
    return found


INT8_COMPUTE_OPS = frozenset(
    {
        "MatMulInteger",
        "ConvInteger",
        "QLinearConv",
        "QLinearMatMul",
        "QuantizeLinear",
        "DynamicQuantizeLinear",
        "DynamicQuantizeMatMul",
        "DynamicQuantizeLSTM",
        "QAttention",
        "QGemm",
    }
)


def int8_compute_ops(model: onnx.ModelProto) -> int:
    """How many nodes compute on int8 activations (0: the graph computes in float).

    Subgraphs count: silero-vad's DynamicQuantizeLSTM cells sit inside If branches.
    """

    def count(graph_proto: onnx.GraphProto) -> int:
        total = 0
        for node in graph_proto.node:
            total += node.op_type in INT8_COMPUTE_OPS
            for attribute in node.attribute:
                subgraphs = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else []
                total += sum(count(sub) for sub in [*subgraphs, *attribute.graphs])
        return total

    return count(model.graph)


def optimize_basic(src: Path, dst: Path) -> None:
    """Save onnxruntime's BASIC-level optimisation of `src` (portable; see module docstring)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(dst)
    try:
        ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise CompressError(
            f"optimisation failed: {one_line(str(exc), 200)}", FailureKind.INTERNAL
        ) from None


def fuse_transformer(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Fuse BERT-style attention (and Gelu, decomposed LayerNorm) before dynamic int8.

    Why: the dynamic quantizer turns a fused Attention into QAttention (one int8 kernel for
    Q, K and V, softmax and transposes inside) instead of three separately quantized MatMuls
    plus float glue. SkipLayerNormalization and BiasGelu are deliberately *not* fused: on
    onnxruntime 1.32's CPU kernels they are slower than what they replace (see
    `residual_sums_before_layernorm`; BiasGelu loses to a MatMul with the bias folded in plus
    Gelu). Only the pattern-based Python fusions run (opt_level=0): no onnxruntime graph
    optimisation is saved. Graphs without these patterns come back unchanged; any failure
    keeps the original. Only transformer-shaped graphs are tried (MatMuls and a Softmax, more
    MatMuls than convolutions): the fusion pass runs symbolic shape inference, which took 59 s
    on a YOLOv8n detector and found nothing to fuse.
    """
    ops = Counter(node.op_type for node in model.graph.node)
    if not ops["Softmax"] or ops["MatMul"] < 2 or ops["MatMul"] <= ops["Conv"]:
        return model, []
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


# Weights below this many values stay fp32: scales and graph overhead would eat the saving.
WEIGHT_ONLY_MIN = 256
FP16_NORMAL_MIN = 6.2e-5
FP16_MAX = 6.5e4
# Which axis holds the output channels of each op's weight (per-channel scales go there).
WEIGHT_CHANNEL_AXIS = {"Conv": 0, "ConvTranspose": 1, "MatMul": -1, "LSTM": 1, "GRU": 1, "RNN": 1}


def _channel_axis(consumers: list[onnx.NodeProto], name: str, rank: int) -> int | None:
    """Output-channel axis of a weight from the ops reading it.

    Unknown readers (a subgraph, an elementwise op) get per-row scales on axis 0: any axis
    is at least as precise as one scale for the whole tensor. Vectors get one scale.
    """
    if rank < 2:
        return None
    fallback = 0
    axes: set[int] = set()
    for node in consumers:
        if node.op_type == "Gemm":
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            if len(node.input) > 1 and node.input[1] == name:
                axes.add(0 if trans_b else 1)
                continue
            return fallback
        axis = WEIGHT_CHANNEL_AXIS.get(node.op_type)
        if axis is None:
            return fallback
        axes.add(axis % rank)
    return axes.pop() if len(axes) == 1 else fallback


def _int8_storage(
    values: Any, axis: int | None, base: str
) -> tuple[list[onnx.TensorProto], list[onnx.NodeProto], str]:
    """int8 values + fp32 scales and the Cast/Mul that rebuild `values` (symmetric)."""
    import numpy as np
    from onnx import helper, numpy_helper

    if axis is None:
        peak = np.abs(values).max(keepdims=True).reshape([1] * values.ndim)
    else:
        others = tuple(i for i in range(values.ndim) if i != axis)
        peak = np.abs(values).max(axis=others, keepdims=True)
    scale = (peak / 127.0).astype(np.float32)
    scale[scale == 0] = 1.0
    # Scales are stored in fp16 where fp16 holds them at full precision (a depthwise 3x3
    # kernel has 9 values per channel: fp32 scales would add 44% to it), and the rounding
    # uses the scale exactly as stored.
    if float(scale.min()) >= FP16_NORMAL_MIN and float(scale.max()) <= FP16_MAX:
        scale = scale.astype(np.float16)
    quantized = np.clip(np.round(values / scale.astype(np.float32)), -127, 127).astype(np.int8)
    q_name, s_name = f"{base}_w8", f"{base}_w8_scale"
    tensors = [numpy_helper.from_array(quantized, q_name), numpy_helper.from_array(scale, s_name)]
    nodes = [
        helper.make_node(
            "Cast", [q_name], [f"{q_name}_f"], name=f"{base}_w8_cast", to=onnx.TensorProto.FLOAT
        ),
    ]
    if scale.dtype == np.float16:
        nodes.append(
            helper.make_node(
                "Cast",
                [s_name],
                [f"{s_name}_f"],
                name=f"{base}_w8_scast",
                to=onnx.TensorProto.FLOAT,
            )
        )
        s_name = f"{s_name}_f"
    nodes.append(helper.make_node("Mul", [f"{q_name}_f", s_name], [base], name=f"{base}_w8_mul"))
    return tensors, nodes, q_name


def store_weights_int8(
    model: onnx.ModelProto, keep: frozenset[str] = frozenset(), min_values: int = WEIGHT_ONLY_MIN
) -> list[str]:
    """Store the remaining large fp32 weights as int8 with per-channel scales (weight-only).

    Each fp32 initializer or Constant (in the graph and in every subgraph: If branches, Loop
    bodies) with at least `min_values` values becomes an int8 tensor plus a Cast and a Mul by
    its per-output-channel scale. Everything reading it still sees fp32 and computes in fp32:
    onnxruntime folds Cast and Mul of constants when it loads the model (constant folding;
    it would not fold a DequantizeLinear, which it keeps for QDQ fusion), so the artifact is
    int8 on disk and on the wire and exactly as fast as the fp32 graph it rebuilds. This is
    how weights the int8 kernels would slow down (convolutions under dynamic int8,
    depthwise convolutions, recurrent cells, tables the quantizer cannot see) still shrink.
    Weights named in `keep` (nodes kept in full precision) are left alone. Returns the names.
    """
    weight_only = _WeightOnly(keep, min_values)
    weight_only.visit(model.graph, set())
    return weight_only.converted


class _WeightOnly:
    """One weight-only int8 pass over a model (see `store_weights_int8`): graph by graph,
    subgraphs first, recording the names it converts in order."""

    def __init__(self, keep: frozenset[str], min_values: int) -> None:
        self.keep = keep
        self.min_values = min_values
        self.converted: list[str] = []

    def visit(self, graph_proto: onnx.GraphProto, protected: set[str]) -> set[str]:
        """Convert this graph's weights; returns every name read in it (subgraphs included)."""
        consumers = self._consumers(graph_proto, protected)
        eligible = self._eligibility(graph_proto, consumers, protected)
        new_nodes: list[onnx.NodeProto] = []
        new_inits: list[onnx.TensorProto] = []
        replaced: set[str] = set()
        for init in graph_proto.initializer:
            if eligible(init.name, init):
                tensors, nodes = self._store(init, init.name, consumers)
                new_inits.extend(tensors)
                new_nodes.extend(nodes)
                replaced.add(init.name)
        body: list[onnx.NodeProto] = []
        for node in graph_proto.node:
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if node.op_type == "Constant" and value is not None and eligible(node.output[0], value):
                tensors, nodes = self._store(value, node.output[0], consumers)
                new_inits.extend(tensors)
                body.extend(nodes)
                continue
            body.append(node)
        if replaced or len(body) != len(graph_proto.node):
            kept = [i for i in graph_proto.initializer if i.name not in replaced]
            del graph_proto.initializer[:]
            graph_proto.initializer.extend([*kept, *new_inits])
            del graph_proto.node[:]
            graph_proto.node.extend([*new_nodes, *body])
        return set(consumers)

    def _consumers(
        self, graph_proto: onnx.GraphProto, protected: set[str]
    ) -> dict[str, list[onnx.NodeProto]]:
        """The nodes reading each name; a node holding a subgraph reads what the subgraph reads
        from the outer scope (converting the subgraph on the way)."""
        consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph_proto.node:
            for name in node.input:
                consumers.setdefault(name, []).append(node)
            for attribute in node.attribute:
                subgraphs = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else []
                for sub in [*subgraphs, *attribute.graphs]:
                    for name in self.visit(sub, protected):  # read from the outer scope
                        consumers.setdefault(name, []).append(node)
        return consumers

    def _eligibility(
        self,
        graph_proto: onnx.GraphProto,
        consumers: dict[str, list[onnx.NodeProto]],
        protected: set[str],
    ) -> Callable[[str, onnx.TensorProto], bool]:
        import numpy as np

        outputs = {o.name for o in graph_proto.output}
        keep = self.keep
        kept_readers = {n for node in graph_proto.node if node.name in keep for n in node.input}

        def eligible(name: str, tensor: onnx.TensorProto) -> bool:
            return (
                tensor.data_type == onnx.TensorProto.FLOAT
                and len(tensor.dims) >= 2  # vectors (biases, norm scales) stay exact
                and int(np.prod(tensor.dims)) >= self.min_values
                and name not in outputs
                and name not in kept_readers
                and name not in protected
                and bool(consumers.get(name))
            )

        return eligible

    def _store(
        self, tensor: onnx.TensorProto, name: str, consumers: dict[str, list[onnx.NodeProto]]
    ) -> tuple[list[onnx.TensorProto], list[onnx.NodeProto]]:
        import numpy as np
        from onnx import numpy_helper

        values = numpy_helper.to_array(tensor).astype(np.float32)
        axis = _channel_axis(consumers[name], name, values.ndim)
        tensors, nodes, _ = _int8_storage(values, axis, name)
        self.converted.append(name)
        return tensors, nodes


def ensure_domains(model: onnx.ModelProto) -> None:
    """Declare every operator domain the graph uses (fusions can leave one undeclared)."""
    from onnx import helper

    used: set[str] = set()

    def visit(graph_proto: onnx.GraphProto) -> None:
        for node in graph_proto.node:
            used.add(node.domain or "")
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    visit(attribute.g)
                for sub in attribute.graphs:
                    visit(sub)

    visit(model.graph)
    declared = {entry.domain or "" for entry in model.opset_import}
    for domain in sorted(used - declared - {"ai.onnx"}):
        model.opset_import.append(helper.make_opsetid(domain, 1))


def compact_names(model: onnx.ModelProto) -> int:
    """Short internal tensor and node names, no doc strings or annotations; returns bytes saved.

    Exporters name every tensor after its module path (`If_0_else_branch__Inline_0__/decoder/
    rnn/Constant_9_output_0`): in a 2 MB recurrent model the names take more space than the
    int8 weights' savings leave. Renaming is a pure relabelling: the model's inputs and outputs
    keep their names, and every graph (subgraphs included) is renamed with one mapping, so
    references from a subgraph to an outer-scope tensor stay consistent.
    """
    before = model.ByteSize()
    keep = {v.name for v in model.graph.input} | {v.name for v in model.graph.output} | {""}
    mapping: dict[str, str] = {}

    def short(name: str) -> str:
        if name in keep:
            return name
        if name not in mapping:
            mapping[name] = f"t{len(mapping):x}"
        return mapping[name]

    counter = iter(range(1 << 40))

    def visit(graph_proto: onnx.GraphProto, top: bool) -> None:
        graph_proto.doc_string = ""
        for init in graph_proto.initializer:
            init.name = short(init.name)
            init.doc_string = ""
        if not top:
            for value in [*graph_proto.input, *graph_proto.output]:
                value.name = short(value.name)
        # Intermediate shape annotations: onnxruntime infers them again at load time.
        del graph_proto.value_info[:]
        for node in graph_proto.node:
            node.name = f"n{next(counter):x}"
            node.doc_string = ""
            node.input[:] = [short(n) for n in node.input]
            node.output[:] = [short(n) for n in node.output]
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    visit(attribute.g, False)
                for sub in attribute.graphs:
                    visit(sub, False)

    visit(model.graph, True)
    model.doc_string = ""
    return before - model.ByteSize()


def as_run(path: Path, workdir: Path) -> tuple[Counter[str], int]:
    """(op counts, weight values) of the graph onnxruntime runs for `path` on this machine.

    Written to `workdir` only to be read back here: graphs optimised at this level are
    machine-specific and never shipped (see the module docstring).
    """
    import numpy as np
    import onnxruntime as ort

    out = workdir / f".as-run-{path.stem}.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(out)
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    model = onnx.load_model(str(out))
    out.unlink(missing_ok=True)
    ops = Counter(node.op_type for node in model.graph.node)
    values = sum(int(np.prod(init.dims)) for init in model.graph.initializer)
    return ops, values


def runs_as_original(original: Path, candidate: Path, workdir: Path) -> bool:
    """True when onnxruntime runs the same kernels on the same number of weights for both.

    Weight-only int8 rebuilds fp32 weights with a Cast and a Mul that onnxruntime folds at
    load time, so the graph it runs is the original's: its latency is the original's by
    construction, whatever a noisy measurement on a shared CPU says (two runs of the same
    fp32 graph measured 0.81x-1.25x of each other here under a load average of 14).
    """
    try:
        (ops_a, values_a), (ops_b, values_b) = as_run(original, workdir), as_run(candidate, workdir)
    except Exception:  # an unloadable graph is judged by measurement alone
        return False
    # The same kernels; the weight count may differ by a folded shape constant or two.
    return ops_a == ops_b and abs(values_a - values_b) <= max(16, values_a // 1000)

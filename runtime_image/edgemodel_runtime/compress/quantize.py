"""Owns the four compression modes: dynamic-int8, static-int8 (QDQ), fp16 and none.

`prepare` does the work shared by every attempt of a run (opset upgrade, pruning,
onnxruntime's quantization pre-processing) once; `convert` then produces one candidate from the
prepared graph for a `Variant` (calibration method, nodes kept in float, or only one node
quantized when the search measures sensitivity).

Mode notes. dynamic-int8: MatMul/Gemm, embedding Gather and (after transformer fusion, CPU
targets only) Attention become int8 with U8 activations computed at run time. In both int8
modes `--embedding-bits 4` leaves embedding Gathers to the post-pass, which stores their tables
as 4-bit blocks from the original fp32 values; CPU artifacts also get their residual norms
written so onnxruntime's slow SkipLayerNormalization is not used (see graph). static-int8: QDQ
with per-channel weights and ranges from the calibration set (MinMax, Entropy or Percentile).
fp16: weights and most ops in fp16, inputs/outputs kept fp32 (keep_io_types) and numerically
sensitive ops blocked in fp32. The converter is onnxruntime.transformers.float16, the maintained
fork of onnxconverter-common's: onnxconverter-common 1.16 emitted an invalid graph for a BERT
attention-mask path (a Cast left fp32 feeding an fp16 Sub) and hung when Cast was blocked.
none: onnxruntime BASIC optimisation only (see graph).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from edgemodel_runtime.compress import (
    biascorrect,
    gptq,
    graph,
    lm_gate,
    mixed,
    subgraphs,
    weightonly,
)
from edgemodel_runtime.compress.calibration import PER_TENSOR, per_tensor_cache
from edgemodel_runtime.compress.errors import CompressError, FailureKind, one_line
from edgemodel_runtime.compress.inputs import InputSpec
from edgemodel_runtime.compress.pruning import PruneStats, prune_model
from edgemodel_runtime.compress.settings import WEIGHT_ONLY_MODES, Settings

# Embedding tables (Gather) dominate small-vocabulary-heavy models such as BERT (30522 x 768):
# onnxruntime's defaults used to leave them in fp32 (0.48x instead of 0.25x of fp32).
# LSTM: onnxruntime's DynamicQuantizeLSTM (int8 weights, dynamic U8 activations). Recurrent
# cells often sit inside If branches (silero-vad), which the quantizer only enters with
# EnableSubgraph; silero-vad 6: frame decisions 1.0, latency 0.91x fp32, 0.75x size from the
# cells alone before the weight-only pass. onnxruntime has no int8 GRU kernel: GRU weights go
# weight-only int8.
DYNAMIC_OP_TYPES = ("MatMul", "Gemm", "Gather", "Attention", "LSTM")
# Dynamic ConvInteger is slower than fp32 Conv on CPUs; only static QDQ quantizes Conv.
STATIC_OP_TYPES = ("MatMul", "Gemm", "Conv", "ConvTranspose", "Gather")
# Nodes whose weight the accuracy search may keep fp32 under weight-only int8.
WEIGHT_ONLY_OP_TYPES = ("MatMul", "Gemm", "Conv", "ConvTranspose", "Gather", "LSTM")
# Ops whose fp16 results drift (exponentials, reductions, normalisation): they stay fp32.
FP16_BLOCKED_OPS = (
    "Softmax",
    "LogSoftmax",
    "LayerNormalization",
    "SkipLayerNormalization",
    "ReduceMean",
    "ReduceSum",
    "ReduceL2",
    "Pow",
    "Sqrt",
    "Reciprocal",
    "Exp",
    "Log",
    "Erf",
    "Div",
    "Range",
    "CumSum",
    "TopK",
    "NonMaxSuppression",
)
PREPROCESS_STEPS = ("full", "skip-symbolic-shape", "none")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    """One way to convert the prepared model: the knobs the accuracy search turns."""

    calibration_method: str | None = None
    nodes_to_exclude: tuple[str, ...] = ()
    only_node: str | None = None  # sensitivity probe: quantize this node alone
    # int8 modes: no activation quantization at all, every large weight stored int8 and
    # computed in fp32 (graph.store_weights_int8): the candidate when int8 kernels lose
    # accuracy or run slower than fp32 on this CPU.
    weight_only: bool = False
    # static int8: QOperator (QLinearConv, QLinearMatMul ...) instead of QDQ, the candidate
    # for a target arch where onnxruntime runs it faster (see search.wants_qoperator).
    qoperator: bool = False
    # int4-weight / int8-weight: "rtn" (round to nearest) or "gptq" (from calibration data)
    weight_method: str = "rtn"

    @property
    def recipe(self) -> str:
        if self.weight_only:
            return "weight-only int8"
        return "int8 kernels (QOperator)" if self.qoperator else "int8 kernels"


@dataclass
class Prepared:
    """The prepared model plus what preparing it did (for the report)."""

    path: Path
    opset_upgraded_from: int | None
    pruning: PruneStats | None
    preprocessing: str
    candidates: list[tuple[str, str]] = field(default_factory=list)
    # int8 modes: the graph before onnxruntime's pre-processing, which weight-only int8 starts
    # from (pre-processing folds constants into new, larger tensors: silero-vad's prepared
    # graph holds 1.5x the original's weights), and its nodes that read a weight.
    unprocessed: Path | None = None
    weight_candidates: list[tuple[str, str]] = field(default_factory=list)
    embeddings: list[str] = field(default_factory=list)  # Gathers whose tables go 4-bit
    # int8 modes: rows whose fp32 activations give the Conv input means for bias correction
    # of int8-stored weights (see biascorrect; the caller sets them), and the means per source
    # graph, computed once a run.
    statistics: dict[str, np.ndarray] | None = None
    conv_means: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def op_types(settings: Settings) -> tuple[str, ...]:
    if settings.mode == "dynamic-int8":
        return DYNAMIC_OP_TYPES
    if settings.mode == "static-int8":
        return STATIC_OP_TYPES
    if settings.mode == "fp16":
        return ("MatMul", "Gemm", "Conv", "Gather")
    if settings.mode in WEIGHT_ONLY_MODES:
        return ("MatMul", "Gather")
    return ()


def preprocess(src: Path, dst: Path) -> str:
    """onnxruntime's quant_pre_process, falling back when symbolic shape inference fails.

    Transformer exports regularly trip symbolic shape inference (e.g. an assertion in
    _infer_Reshape); skipping it still gives the optimisation and ONNX shape inference the
    quantizer needs. If even that fails the model is quantized as it is.

    It runs in `dst`'s directory: when symbolic shape inference gives up, onnxruntime saves
    the half-inferred model to `sym_shape_infer_temp.onnx` plus a `<uuid>.data` file in the
    current directory (12 MB files left in the checkout by zoo bench runs).
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = src.resolve(), dst.resolve()
    for step in PREPROCESS_STEPS:
        if step == "none":
            break
        try:
            with contextlib.chdir(dst.parent):
                quant_pre_process(str(src), str(dst), skip_symbolic_shape=step != "full")
            return "quant_pre_process" + ("" if step == "full" else "(skip_symbolic_shape)")
        except Exception as exc:  # the pre-processor raises anything from asserts to ImportError
            log.info("quant_pre_process failed (%s): %s", step, one_line(str(exc), 200))
    dst.write_bytes(src.read_bytes())
    return "none"


def _smaller_base(staged: Path, dest: Path) -> bool:
    """The smaller of `staged` and its onnxruntime BASIC optimisation, moved to `dest`.

    BASIC folds BatchNormalization into convolutions and constants into initializers (the
    PP-OCR classifier: 0.91x of its size), but can also unfold shared constants into bigger
    ones (silero-vad: 1.42x); weight-only int8 and fp16 start from whichever is smaller.
    Returns whether the optimised graph was kept.
    """
    basic = dest.with_name(f"basic-{dest.name}")
    try:
        graph.optimize_basic(staged, basic)
    except CompressError:
        basic.unlink(missing_ok=True)
    if basic.exists() and basic.stat().st_size < staged.stat().st_size:
        basic.rename(dest)
        return True
    basic.unlink(missing_ok=True)
    dest.write_bytes(staged.read_bytes())
    return False


def prepare(model: onnx.ModelProto, settings: Settings, workdir: Path, label: str) -> Prepared:
    upgraded_from: int | None = None
    before_upgrade: onnx.ModelProto | None = None
    if settings.mode in ("dynamic-int8", "static-int8"):
        before_upgrade = model
        model, upgraded_from = graph.upgrade_opset(model, label)
        if upgraded_from is None:
            before_upgrade = None
    stats = prune_model(model, settings.prune_sparsity) if settings.prune_sparsity > 0 else None
    fused: list[str] = []
    if settings.mode == "dynamic-int8" and settings.target != "gpu":
        model, fused = graph.fuse_transformer(model)
    graph.ensure_node_names(model)
    staged = workdir / "staged.onnx"
    onnx.save_model(model, str(staged))
    prepared = workdir / "prepared.onnx"
    unprocessed: Path | None = None
    if settings.mode in ("dynamic-int8", "static-int8"):
        how = preprocess(staged, prepared)
        unprocessed = workdir / "unprocessed.onnx"
        _save_weight_only_base(staged, before_upgrade, settings, unprocessed)
    elif settings.mode == "none":
        graph.optimize_basic(staged, prepared)
        how = "onnxruntime basic optimisation"
    else:
        optimised = _smaller_base(staged, prepared)
        how = "onnxruntime basic optimisation" if optimised else "none"
    staged.unlink(missing_ok=True)
    if fused:
        how = f"transformer fusion ({', '.join(fused)}); {how}"
    result = Prepared(prepared, upgraded_from, stats, how, unprocessed=unprocessed)
    _find_candidates(result, settings)
    return result


def _save_weight_only_base(
    staged: Path, before_upgrade: onnx.ModelProto | None, settings: Settings, unprocessed: Path
) -> None:
    """Write the graph weight-only int8 starts from (`Prepared.unprocessed`)."""
    if before_upgrade is None:
        _smaller_base(staged, unprocessed)
        return
    # Weight-only int8 needs no opset upgrade (Cast and Mul exist in every opset), and
    # the version converter adds Reshape/Shape/Flatten nodes the original never ran.
    if settings.prune_sparsity > 0:
        prune_model(before_upgrade, settings.prune_sparsity)
    graph.ensure_node_names(before_upgrade)
    original = staged.with_name("before-upgrade.onnx")
    onnx.save_model(before_upgrade, str(original))
    _smaller_base(original, unprocessed)
    original.unlink()


def _find_candidates(result: Prepared, settings: Settings) -> None:
    """Name every node of the prepared graphs and record which ones a conversion may touch."""
    if result.unprocessed is not None:
        base_model = onnx.load_model(str(result.unprocessed))
        graph.ensure_node_names(base_model)
        onnx.save_model(base_model, str(result.unprocessed))
        result.weight_candidates = graph.weight_readers(base_model, WEIGHT_ONLY_OP_TYPES)
    if settings.mode != "none":
        loaded = onnx.load_model(str(result.path))
        graph.ensure_node_names(loaded)  # the optimiser may add unnamed nodes
        onnx.save_model(loaded, str(result.path))
        if settings.embedding_bits == 4:
            result.embeddings = graph.embedding_tables(loaded)
        # 4-bit tables are not the accuracy search's to keep in float (or to probe).
        result.candidates = [
            candidate
            for candidate in graph.quantizable_nodes(loaded, op_types(settings))
            if candidate[0] not in result.embeddings
        ]


class _Reader:
    """onnxruntime CalibrationDataReader over the calibration arrays, one batch at a time."""

    def __init__(
        self, arrays: dict[str, np.ndarray], specs: list[InputSpec], *, uniform: bool
    ) -> None:
        from edgemodel_runtime.compress.inputs import per_request
        from edgemodel_runtime.compress.runner import batch_size, batches

        self._feeds: Iterator[dict[str, np.ndarray]]
        if per_request(arrays, specs):
            rows = int(arrays[specs[0].name].shape[0])
            self._feeds = iter(
                {s.name: np.asarray(arrays[s.name][i]) for s in specs} for i in range(rows)
            )
            return
        fixed = any(s.shape and s.shape[0] for s in specs)
        # The histogram calibrators (entropy, percentile) stack every batch's outputs and fail
        # on a ragged last batch; one row at a time keeps every batch the same shape.
        size = batch_size(specs) if fixed or not uniform else 1
        self._feeds = batches(arrays, [s.name for s in specs], size)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # only called by calibrators that make several passes
        raise NotImplementedError


def convert(
    prepared: Prepared,
    out: Path,
    *,
    settings: Settings,
    variant: Variant,
    calibration: dict[str, np.ndarray] | None,
    specs: list[InputSpec],
    workdir: Path,
) -> None:
    """Write one candidate artifact for `variant` to `out`."""
    try:
        selection = _selection(variant, prepared.embeddings)
        source = prepared.path
        if variant.weight_only and settings.mode in ("dynamic-int8", "static-int8"):
            source = prepared.unprocessed or prepared.path
            out.write_bytes(source.read_bytes())
        elif settings.mode == "dynamic-int8":
            _dynamic(prepared.path, out, settings, selection)
        elif settings.mode == "static-int8":
            assert calibration is not None  # settings.resolve guarantees it
            _static(
                prepared.path,
                out,
                settings=settings,
                variant=variant,
                selection=selection,
                calibration=calibration,
                specs=specs,
                workdir=workdir,
            )
        elif settings.mode in WEIGHT_ONLY_MODES:
            hessians = _hessians(prepared, variant, calibration, specs)
            _weight_only(prepared, out, settings, variant, hessians)
        elif settings.mode == "fp16":
            _fp16(prepared.path, out, variant)
        else:
            out.write_bytes(prepared.path.read_bytes())
        if settings.mode in ("dynamic-int8", "static-int8"):
            _finish_int8(
                out,
                cpu=settings.target != "gpu",
                embeddings=prepared.embeddings,
                keep=frozenset(variant.nodes_to_exclude),
                weights=variant.only_node is None,
                means=_conv_means(prepared, source, specs) if variant.only_node is None else None,
            )
        elif settings.mode == "fp16":
            _compact(out)
    except CompressError:
        raise
    except Exception as exc:  # a quantizer crash on a model that passed validation
        raise CompressError(
            f"{settings.mode} conversion failed: {type(exc).__name__}: {one_line(str(exc), 240)}",
            FailureKind.INTERNAL,
        ) from None


# Rows whose activations give the Conv input means (see biascorrect).
BIAS_ROWS = 16


def _conv_means(
    prepared: Prepared, source: Path, specs: list[InputSpec]
) -> dict[str, np.ndarray] | None:
    """Mean input per channel of `source`'s biased Convs, once per source graph and run."""
    if prepared.statistics is None:
        return None
    key = str(source)
    if key not in prepared.conv_means:
        model = onnx.load_model(str(source), load_external_data=False)
        names = sorted({n.input[0] for n in biascorrect.biased_convs(model)})
        means: dict[str, np.ndarray] = {}
        if names:
            reader = _Reader(prepared.statistics, specs, uniform=False)
            feeds: list[dict[str, np.ndarray]] = []
            rows = 0
            while rows < BIAS_ROWS and (feed := reader.get_next()) is not None:
                feeds.append(feed)
                rows += int(next(iter(feed.values())).shape[0]) if feed else 1
            means = biascorrect.input_means(source, names, feeds)
        prepared.conv_means[key] = means
    return prepared.conv_means[key]


def _finish_int8(
    path: Path,
    *,
    cpu: bool,
    embeddings: list[str],
    keep: frozenset[str],
    weights: bool,
    means: dict[str, np.ndarray] | None = None,
) -> None:
    model = onnx.load_model(str(path))
    # The quantizer left these Gathers float (see _selection): their tables go 4-bit from the
    # original fp32 values, not from an int8 copy, so the rounding happens once.
    graph.block_quantize_embeddings(model, embeddings)
    graph.compress_large_constants(model)
    if cpu:
        graph.residual_sums_before_layernorm(model)
    if weights:  # not for a sensitivity probe: it measures one node's int8 kernel alone
        # Weights the int8 kernels did not take (convolutions under dynamic int8, recurrent
        # cells, subgraph constants) are stored int8 and computed in fp32; the nodes the
        # accuracy search keeps in float get fp16-stored weights, still computed in fp32
        # (mixed precision, see mixed).
        originals = biascorrect.conv_weights(model) if means else {}
        graph.store_weights_int8(model, keep=keep)
        if means:  # the mean shift int8 rounding gives each Conv's output, out of its bias
            biascorrect.correct_conv_biases(model, originals, means)
        mixed.store_kept_weights_fp16(model, keep)
    graph.ensure_domains(model)
    graph.compact_names(model)
    onnx.save_model(model, str(path))


def _compact(path: Path) -> None:
    model = onnx.load_model(str(path))
    graph.compact_names(model)
    onnx.save_model(model, str(path))


def _selection(variant: Variant, embeddings: list[str]) -> dict[str, list[str] | None]:
    """The quantizer's node lists; 4-bit embedding Gathers are never the quantizer's."""
    if variant.only_node is not None:
        return {"nodes_to_quantize": [variant.only_node], "nodes_to_exclude": None}
    excluded = [*variant.nodes_to_exclude, *embeddings]
    return {"nodes_to_quantize": None, "nodes_to_exclude": excluded or None}


def _qtype(name: str | None) -> object:
    from onnxruntime.quantization import QuantType

    return QuantType.QUInt8 if name == "uint8" else QuantType.QInt8


def _extra_options() -> dict[str, object]:
    return {
        # Attention's activation x activation MatMuls stay float: cheap, and the
        # most accuracy-sensitive products in a transformer.
        "MatMulConstBOnly": True,
        # Pre-optimised graphs can hide a tensor's type from the quantizer; it is float.
        "DefaultTensorType": onnx.TensorProto.FLOAT,
    }


def _dynamic(
    src: Path, out: Path, settings: Settings, selection: dict[str, list[str] | None]
) -> None:
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(
        str(src),
        str(out),
        op_types_to_quantize=list(DYNAMIC_OP_TYPES),
        per_channel=settings.per_channel,
        reduce_range=settings.reduce_range,
        weight_type=_qtype(settings.weight_type),
        extra_options={**_extra_options(), "EnableSubgraph": True},
        **selection,
    )


def _static(
    src: Path,
    out: Path,
    *,
    settings: Settings,
    variant: Variant,
    selection: dict[str, list[str] | None],
    calibration: dict[str, np.ndarray],
    specs: list[InputSpec],
    workdir: Path,
) -> None:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        quantize_static,
    )

    method = variant.calibration_method or settings.calibration_method or "minmax"
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    # Ranges depend only on the prepared graph, the data and the method: calibrate once per
    # method and let every search attempt reuse them.
    cache = workdir / f"calibration-{method}.json"
    if method == PER_TENSOR:
        _per_tensor_cache(src, cache, settings, calibration_arrays=calibration, specs=specs)
        method = "minmax"  # the merged cache is a MinMax one (see calibration)
    quantize_static(
        str(src),
        str(out),
        _Reader(calibration, specs, uniform=method != "minmax"),
        quant_format=QuantFormat.QOperator if variant.qoperator else QuantFormat.QDQ,
        op_types_to_quantize=list(STATIC_OP_TYPES),
        per_channel=settings.per_channel,
        reduce_range=settings.reduce_range,
        activation_type=_qtype(settings.activation_type),
        weight_type=_qtype(settings.weight_type),
        calibrate_method=methods[method],
        # onnxruntime 1.32's int32-bias weight-scale adjustment crashes on per-channel Gemm
        # ("truth value of an array is ambiguous"); biases stay representable without it.
        extra_options={**_extra_options(), "QDQDisableWeightAdjustForInt32Bias": True},
        calibration_cache_path=str(cache),
        **selection,
    )


# Calibration rows whose activations are sampled to choose each tensor's method.
PER_TENSOR_ROWS = 4


def _per_tensor_cache(
    src: Path,
    cache: Path,
    settings: Settings,
    *,
    calibration_arrays: dict[str, np.ndarray],
    specs: list[InputSpec],
) -> None:
    """Write the per-tensor calibration cache (see calibration) from the three methods'."""
    if cache.exists():
        return
    caches: dict[str, Path] = {}
    for method in ("minmax", "entropy", "percentile"):
        caches[method] = cache.with_name(f"calibration-{method}.json")
        if not caches[method].exists():  # calibrate it: the quantized model is thrown away
            scratch = cache.with_name(f"scratch-{method}.onnx")
            _static(
                src,
                scratch,
                settings=settings,
                variant=Variant(calibration_method=method),
                selection={"nodes_to_quantize": None, "nodes_to_exclude": None},
                calibration=calibration_arrays,
                specs=specs,
                workdir=cache.parent,
            )
            scratch.unlink(missing_ok=True)
    reader = _Reader(calibration_arrays, specs, uniform=False)
    feeds: list[dict[str, np.ndarray]] = []
    while len(feeds) < PER_TENSOR_ROWS and (feed := reader.get_next()) is not None:
        feeds.append(feed)
    choices = per_tensor_cache(src, caches, feeds, cache)
    chosen = [c.method for c in choices.values()]
    log.info("per-tensor calibration: %s", {m: chosen.count(m) for m in caches})


def _hessians(
    prepared: Prepared,
    variant: Variant,
    calibration: dict[str, np.ndarray] | None,
    specs: list[InputSpec],
) -> dict[str, np.ndarray] | None:
    """GPTQ's Hessians of the prepared graph's weight MatMul inputs over the calibration data
    (a run converts one GPTQ candidate); None for round to nearest."""
    if variant.weight_method != "gptq":
        return None
    if calibration is None:
        raise CompressError("the GPTQ weight method needs --calibration data")
    model = onnx.load_model(str(prepared.path))
    names = [node.input[0] for node, _ in weightonly.weight_matmuls(model)]
    return gptq.collect_hessians(model, names, _calibration_feeds(model, calibration, specs))


def _calibration_feeds(
    model: onnx.ModelProto, calibration: dict[str, np.ndarray], specs: list[InputSpec]
) -> Iterator[dict[str, np.ndarray]]:
    """Feeds over the calibration rows: a language model's token windows as prompts with an
    empty KV cache (lm_gate), any other model's rows as static int8 reads them."""
    decoder = lm_gate.decoder_interface(model) if set(calibration) == {lm_gate.IDS} else None
    if decoder is not None:
        ids = calibration[lm_gate.IDS]
        for start in range(0, len(ids), lm_gate.BATCH):
            yield lm_gate.feeds(decoder, ids[start : start + lm_gate.BATCH])
        return
    reader = _Reader(calibration, specs, uniform=False)
    yield from iter(reader.get_next, None)


def _weight_only(
    prepared: Prepared,
    out: Path,
    settings: Settings,
    variant: Variant,
    hessians: dict[str, np.ndarray] | None = None,
) -> None:
    """int4-weight / int8-weight: block-wise MatMulNBits and GatherBlockQuantized (weightonly),
    rounded by GPTQ where `hessians` are given."""
    exclude = variant.nodes_to_exclude
    if variant.only_node is not None:
        exclude = tuple(name for name, _ in prepared.candidates if name != variant.only_node)
    assert settings.block_size is not None  # settings.resolve guarantees it
    plan = weightonly.WeightOnlyPlan(
        bits=weightonly.BITS_OF_MODE[settings.mode],
        block_size=settings.block_size,
        symmetric=bool(settings.symmetric),
        embeddings=settings.target != "gpu",
        accuracy_level=None if settings.target == "gpu" else weightonly.CPU_ACCURACY_LEVEL,
    )
    weightonly.quantize_weight_only(prepared.path, out, plan, exclude=exclude, hessians=hessians)


def _fp16(src: Path, out: Path, variant: Variant) -> None:
    from onnxruntime.transformers import float16

    model = onnx.load_model(str(src))
    if variant.weight_only:
        # fp16 storage, fp32 compute: every weight of the main graph as fp16 + Cast, which
        # onnxruntime folds back to fp32 at load (see mixed): half the bytes, fp32's numerics
        # but for each weight's rounding to fp16. The fallback when full fp16 fails the gate.
        mixed.store_kept_weights_fp16(model, frozenset(n.name for n in model.graph.node))
        onnx.save_model(model, str(out))
        return
    if variant.only_node is not None:
        blocked_nodes = [n.name for n in model.graph.node if n.name != variant.only_node]
    else:
        blocked_nodes = list(variant.nodes_to_exclude)
    # Stale shape annotations (from exporters or pre-processing) keep their fp32 types after
    # conversion and make onnxruntime reject the graph; the converter re-infers what it needs.
    del model.graph.value_info[:]
    with warnings.catch_warnings():  # one warning per clamped constant: noise, not news
        warnings.simplefilter("ignore")
        converted = float16.convert_float_to_float16(
            model,
            keep_io_types=True,  # clients keep sending and receiving fp32
            op_block_list=sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(FP16_BLOCKED_OPS)),
            node_block_list=blocked_nodes or None,
        )
    # The converter leaves some fp32 annotations on tensors it made fp16 (e.g. a Cast's output);
    # onnxruntime re-infers every type, so dropping the annotations is safe and fixes that.
    del converted.graph.value_info[:]
    # Casts around blocked ops inside If branches land in the wrong graph (silero-vad): moved
    # back and every graph sorted (see subgraphs).
    subgraphs.repair(converted)
    onnx.save_model(converted, str(out))

"""Owns what a compression run is asked to do: mode/target defaults and the artifact key.

Everything here is pure. The key is the sha256 of the input digest, the canonical JSON of the
resolved settings (which carry the calibration/evaluation digests, never their paths) and the
tool version, so the same request always lands on the same `DIR/<key>` and anything that could
change the artifact or the verdict changes the key.

Target defaults (when --mode is not given): `gpu` -> fp16 (tensor cores, no calibration);
`amd64`, `arm64` and no target -> dynamic-int8. Integer types: dynamic int8 always uses U8
activations (onnxruntime's MatMulInteger/DynamicQuantizeLinear path) with S8 weights. Static
int8 uses U8 activations / S8 weights on amd64 (VNNI's u8*s8 dot product) and S8/S8 on arm64
(the SDOT/SMMLA path onnxruntime recommends there) and on gpu (TensorRT only takes symmetric
int8). Weights are per-channel for static QDQ, per-tensor for dynamic (per-channel dynamic
MatMulInteger is slower in onnxruntime and the gate catches the accuracy cases). Embedding
tables are int8 too unless `--embedding-bits 4` asks for 4-bit blocks (CPU targets only: the
GatherBlockQuantized kernel is onnxruntime's CPU contrib op). Without VNNI (detected on the
machine that compresses, see `cpu`) amd64 int8 uses 7-bit weights (`reduce_range`).

Weight-only modes (`int4-weight`, `int8-weight`): MatMul weights and embedding tables stored
in blocks of `block_size` (32, 64 or 128; default 32) values with their own scale, symmetric or
asymmetric (default: asymmetric), computed in fp32 (see weightonly); with calibration data the
run also builds a GPTQ candidate (see gptq), so its digest is in the key. The same artifact serves
amd64 and arm64; for `gpu` only MatMul weights are block-quantized (MatMulNBits has a CUDA
kernel, GatherBlockQuantized does not).

The gate is never vacuous: evaluation data without labels must reach DEFAULT_MIN_AGREEMENT
agreement with the original unless the request sets another figure (see effective_min_agreement).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from edgemodel_runtime.compress.errors import CompressError
from edgemodel_runtime.compress.lm_gate import DEFAULT_MIN_AGREEMENT as LM_MIN_AGREEMENT
from edgemodel_runtime.compress.tasks import OUTPUT_KINDS

MODES = ("dynamic-int8", "static-int8", "fp16", "none", "int4-weight", "int8-weight")
WEIGHT_ONLY_MODES = ("int4-weight", "int8-weight")  # block-wise, see compress.weightonly
BLOCK_SIZES = (32, 64, 128)
DEFAULT_BLOCK_SIZE = BLOCK_SIZES[0]
TARGETS = ("amd64", "arm64", "gpu")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
DEFAULT_CALIBRATION_METHOD = CALIBRATION_METHODS[0]
EMBEDDING_BITS = (8, 4)  # the default first
DEFAULT_EMBEDDING_BITS = EMBEDDING_BITS[0]
MAX_SPARSITY = 0.95
DEFAULT_MAX_ACCURACY_DROP = 1.0  # points of top-1 accuracy; only checked when labels exist
# Agreement with the original required when the evaluation data has no labels (labelled data
# is judged by the accuracy drop): applied by the pipeline, which sees the data. The CRD leaves
# accuracyGate.minAgreement unset by default so this rule is the only default.
DEFAULT_MIN_AGREEMENT = 0.99
DEFAULT_SEARCH_BUDGET_S = 120.0


@dataclass(frozen=True)
class Settings:
    """The resolved request; every field is part of the artifact key."""

    mode: str
    target: str | None
    activation_type: str | None  # "uint8" | "int8" for the int8 modes
    weight_type: str | None
    per_channel: bool
    calibration_method: str | None
    calibration_sha256: str | None
    evaluation_sha256: str | None
    prune_sparsity: float
    max_accuracy_drop: float | None
    min_agreement: float | None
    search_budget_s: float
    embedding_bits: int | None = None  # int8 modes: 8, or 4 for block-quantized tables
    output_kind: str | None = None  # what the primary output means (compress.tasks); None: infer
    # amd64 without VNNI: 7-bit weights, so u8*s8 pairs cannot saturate int16 (see cpu).
    reduce_range: bool = False
    # weight-only modes: values per quantization block and symmetric (no zero points) or not
    block_size: int | None = None
    symmetric: bool | None = None

    def canonical(self) -> dict[str, Any]:
        return asdict(self)


def default_mode(target: str | None) -> str:
    return "fp16" if target == "gpu" else "dynamic-int8"


def resolve(
    *,
    mode: str | None,
    target: str | None,
    calibration_sha256: str | None,
    calibration_method: str | None,
    evaluation_sha256: str | None,
    prune_sparsity: float | None,
    max_accuracy_drop: float | None,
    min_agreement: float | None,
    search_budget_s: float | None,
    embedding_bits: int | None = None,
    output_kind: str | None = None,
    vnni: bool = True,
    block_size: int | None = None,
    symmetric: bool | None = None,
) -> Settings:
    """Validate the request and fill in defaults; raises CompressError (bad input) on conflicts."""
    if target is not None and target not in TARGETS:
        raise CompressError(f"unknown --target {target!r} (choose from {', '.join(TARGETS)})")
    mode = mode or default_mode(target)
    if mode not in MODES:
        raise CompressError(f"unknown --mode {mode!r} (choose from {', '.join(MODES)})")
    sparsity = _sparsity(prune_sparsity)
    _check_gate_figures(max_accuracy_drop, min_agreement, output_kind)
    budget = DEFAULT_SEARCH_BUDGET_S if search_budget_s is None else float(search_budget_s)
    if not budget >= 0.0:
        raise CompressError(f"--search-budget-seconds {budget} must be >= 0")
    if evaluation_sha256 is None:
        if max_accuracy_drop is not None or min_agreement is not None:
            raise CompressError("--max-accuracy-drop/--min-agreement need --eval data to measure")
        if output_kind is not None:
            raise CompressError("--output-kind needs --eval data to judge")
        budget = 0.0  # nothing to search against
    elif max_accuracy_drop is None:
        max_accuracy_drop = DEFAULT_MAX_ACCURACY_DROP
    if mode == "none":
        budget = 0.0  # nothing was converted, so there is nothing to keep in float
    calibration_sha256, method = _calibration(mode, calibration_sha256, calibration_method)
    activation, weight = _integer_types(mode, target)
    block_size, symmetric = _blocks(mode, block_size, symmetric)
    int8 = mode in ("dynamic-int8", "static-int8")
    return Settings(
        mode=mode,
        target=target,
        activation_type=activation,
        weight_type=weight,
        per_channel=mode == "static-int8",
        calibration_method=method,
        calibration_sha256=calibration_sha256,
        evaluation_sha256=evaluation_sha256,
        prune_sparsity=sparsity,
        max_accuracy_drop=max_accuracy_drop,
        min_agreement=min_agreement,
        search_budget_s=budget,
        embedding_bits=_embedding_bits(mode, target, embedding_bits),
        output_kind=output_kind,
        # Only amd64 kernels (and an unknown target, which is this machine) saturate without VNNI.
        reduce_range=int8 and target not in ("arm64", "gpu") and not vnni,
        block_size=block_size,
        symmetric=symmetric,
    )


def _sparsity(prune_sparsity: float | None) -> float:
    sparsity = 0.0 if prune_sparsity is None else float(prune_sparsity)
    if not 0.0 <= sparsity <= MAX_SPARSITY:  # also rejects NaN
        raise CompressError(f"--prune-sparsity {sparsity} is outside 0..{MAX_SPARSITY}")
    return sparsity


def _check_gate_figures(
    max_accuracy_drop: float | None, min_agreement: float | None, output_kind: str | None
) -> None:
    if max_accuracy_drop is not None and not 0.0 <= max_accuracy_drop <= 100.0:
        raise CompressError(f"--max-accuracy-drop {max_accuracy_drop} is outside 0..100 points")
    if min_agreement is not None and not 0.0 <= min_agreement <= 1.0:
        raise CompressError(f"--min-agreement {min_agreement} is outside 0..1")
    if output_kind is not None and output_kind not in OUTPUT_KINDS:
        raise CompressError(
            f"unknown --output-kind {output_kind!r} (choose from {', '.join(OUTPUT_KINDS)})"
        )


def _calibration(
    mode: str, calibration_sha256: str | None, calibration_method: str | None
) -> tuple[str | None, str | None]:
    """The calibration digest and method static int8 uses; the weight-only modes keep the
    digest when given (it adds the GPTQ candidate, see weightonly) and take no method;
    nothing for the other modes, so an unused calibration file stays out of the key."""
    if mode in WEIGHT_ONLY_MODES:
        if calibration_method is not None:
            raise CompressError(f"--calibration-method applies to static-int8, not --mode {mode}")
        return calibration_sha256, None
    if mode != "static-int8":
        return None, None
    if calibration_sha256 is None:
        raise CompressError("--mode static-int8 needs --calibration F.npz")
    method = calibration_method or DEFAULT_CALIBRATION_METHOD
    if method not in CALIBRATION_METHODS:
        raise CompressError(
            f"unknown --calibration-method {method!r} "
            f"(choose from {', '.join(CALIBRATION_METHODS)})"
        )
    return calibration_sha256, method


def _integer_types(mode: str, target: str | None) -> tuple[str | None, str | None]:
    """(activation, weight) integer types of the int8 modes (see the module docstring)."""
    if mode == "dynamic-int8":
        return "uint8", "int8"
    if mode == "static-int8":
        return ("int8" if target in ("arm64", "gpu") else "uint8"), "int8"
    return None, None


def _blocks(
    mode: str, block_size: int | None, symmetric: bool | None
) -> tuple[int | None, bool | None]:
    """Block size and symmetry of the weight-only modes (default: 32, asymmetric)."""
    if mode not in WEIGHT_ONLY_MODES:
        if block_size is not None or symmetric is not None:
            raise CompressError(
                f"--block-size/--symmetric apply to {', '.join(WEIGHT_ONLY_MODES)}, "
                f"not --mode {mode}"
            )
        return None, None
    size = DEFAULT_BLOCK_SIZE if block_size is None else block_size
    if size not in BLOCK_SIZES:
        raise CompressError(
            f"--block-size {size} is not supported (choose from {', '.join(map(str, BLOCK_SIZES))})"
        )
    return size, bool(symmetric)


def _embedding_bits(mode: str, target: str | None, embedding_bits: int | None) -> int | None:
    if mode not in ("dynamic-int8", "static-int8"):
        if embedding_bits is not None:
            raise CompressError(f"--embedding-bits applies to the int8 modes, not --mode {mode}")
        return None
    bits = DEFAULT_EMBEDDING_BITS if embedding_bits is None else embedding_bits
    if bits not in EMBEDDING_BITS:
        raise CompressError(
            f"--embedding-bits {bits} is not supported (choose from "
            f"{', '.join(map(str, EMBEDDING_BITS))})"
        )
    if bits == 4 and target == "gpu":
        raise CompressError(
            "--embedding-bits 4 is for CPU targets (amd64, arm64), not --target gpu"
        )
    return bits


def effective_min_agreement(
    settings: Settings, has_labels: bool, language_model: bool = False
) -> float | None:
    """The agreement the gate requires: the request's, else the default for unlabelled data
    (a language model's next tokens are not labels: it gets lm_gate's next-token default)."""
    if settings.min_agreement is not None or settings.evaluation_sha256 is None:
        return settings.min_agreement
    if language_model:
        return LM_MIN_AGREEMENT
    return None if has_labels else DEFAULT_MIN_AGREEMENT


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


# Bumped whenever the same settings start producing a different artifact (a new graph
# rewrite, a changed fusion), so a store never hands back what an older recipe made.
RECIPE = 4  # 4: the ends of a 4-bit model keep 8 bits (weightonly)


def artifact_key(input_sha256: str, settings: Settings, tool_version: str) -> str:
    payload = canonical_json(
        {
            "input": input_sha256,
            "settings": settings.canonical(),
            "tool": tool_version,
            "recipe": RECIPE,
        }
    )
    return hashlib.sha256(payload.encode()).hexdigest()

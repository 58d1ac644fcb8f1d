"""Owns the accuracy gate for language models (output kind `language-model`).

A decoder-only model with a KV cache (inputs `input_ids`, optionally `attention_mask` and
`position_ids`, `past_key_values.*`; first output `logits` [batch, seq, vocab]; the layout
Optimum and onnxruntime-genai export) is judged on evaluation token sequences: a `.npz` whose
`input_ids` is int64 [N, L]. Each row is fed as one prompt of L - 1 tokens with an empty cache,
and at every position the model predicts the token that follows. Two figures:

- next-token top-1 agreement: the share of positions where the compressed model's argmax is
  the fp32 model's (the gate's `agreement`);
- perplexity of each model on the actual next tokens; the gate's task metric is the ratio
  fp32 perplexity / compressed perplexity (1.0: no loss; 1 / 1.10: 10 % higher perplexity).

The thresholds (DEFAULT_MIN_AGREEMENT, MAX_PERPLEXITY_INCREASE) are what the generated
byte-level fixture's 4-bit artifact meets and a 2-bit one does not; see docs/architecture.md,
"Language models". Figures are pure numpy; `run_logits` is the one side effect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from edgemodel_runtime.compress.errors import CompressError

KIND = "language-model"
IDS = "input_ids"
MASK = "attention_mask"
POSITIONS = "position_ids"
PAST_PREFIX = "past_key_values."
# Top-1 agreement over every position, near-ties included: a small byte-level model has many
# positions where two next bytes are almost equally likely, and any rounding flips them. The
# fixture decoders' int4 artifacts (8-bit ends, see weightonly) agree on 0.90-0.96 of positions
# at block sizes 32-128; a decoder with outlier channels drops to 0.55-0.73.
DEFAULT_MIN_AGREEMENT = 0.85
MAX_PERPLEXITY_INCREASE = 0.10  # the compressed model's perplexity may be at most 10 % higher
MIN_PERPLEXITY_RATIO = 1.0 / (1.0 + MAX_PERPLEXITY_INCREASE)
BATCH = 8


@dataclass(frozen=True)
class PastInput:
    """One KV-cache input: its name, element type and the fixed dims ([batch, heads, 0, d])."""

    name: str
    dtype: Any
    heads: int
    head_dim: int


@dataclass(frozen=True)
class DecoderInterface:
    """The inputs and output a decoder is fed through."""

    mask: bool
    positions: bool
    past: tuple[PastInput, ...]
    logits: str


def _dims(value: onnx.ValueInfoProto) -> list[int | None]:
    shape = value.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]


def decoder_interface(model: onnx.ModelProto) -> DecoderInterface | None:
    """The decoder interface of `model`, or None when it is not a token-ids language model."""
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    names = [value.name for value in graph.input if value.name not in initializers]
    if IDS not in names or not graph.output:
        return None
    past: list[PastInput] = []
    for value in graph.input:
        if not value.name.startswith(PAST_PREFIX):
            continue
        dims = _dims(value)
        if len(dims) != 4 or dims[1] is None or dims[3] is None:
            raise CompressError(
                f"{value.name}: a KV-cache input must be [batch, heads, past, head_dim] with "
                f"fixed heads and head_dim, got {dims}"
            )
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        past.append(PastInput(value.name, dtype, dims[1], dims[3]))
    known = {IDS, MASK, POSITIONS, *(p.name for p in past)}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise CompressError(f"language model input(s) {unknown} are not ones the gate can feed")
    return DecoderInterface(MASK in names, POSITIONS in names, tuple(past), graph.output[0].name)


def feeds(interface: DecoderInterface, ids: np.ndarray) -> dict[str, np.ndarray]:
    """The feed for a batch of prompts `ids` [batch, seq] with an empty KV cache (pure)."""
    batch, seq = ids.shape
    feed: dict[str, np.ndarray] = {IDS: ids.astype(np.int64)}
    if interface.mask:
        feed[MASK] = np.ones((batch, seq), np.int64)
    if interface.positions:
        feed[POSITIONS] = np.broadcast_to(np.arange(seq, dtype=np.int64), (batch, seq)).copy()
    for past in interface.past:
        feed[past.name] = np.zeros((batch, past.heads, 0, past.head_dim), past.dtype)
    return feed


def split_sequences(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(prompts [N, L-1], next tokens [N, L-1]) from evaluation `input_ids` [N, L] (pure)."""
    if IDS not in arrays:
        raise CompressError(f"--eval: a language model's evaluation data needs {IDS!r} [N, L]")
    ids = np.asarray(arrays[IDS])
    if ids.ndim != 2 or ids.shape[1] < 2 or not np.issubdtype(ids.dtype, np.integer):
        raise CompressError(
            f"--eval: {IDS!r} must be integer token ids [N, L] with L >= 2, got "
            f"{ids.dtype} {list(ids.shape)}"
        )
    extra = sorted(set(arrays) - {IDS})
    if extra:
        raise CompressError(f"--eval: a language model takes only {IDS!r}, not {extra}")
    return ids[:, :-1].astype(np.int64), ids[:, 1:].astype(np.int64)


def run_logits(session: Any, interface: DecoderInterface, prompts: np.ndarray) -> np.ndarray:
    """Logits [N, L-1, vocab] of every prompt, BATCH rows at a time."""
    chunks = [
        np.asarray(
            session.run([interface.logits], feeds(interface, prompts[i : i + BATCH]))[0],
            np.float32,
        )
        for i in range(0, len(prompts), BATCH)
    ]
    return np.concatenate(chunks)


def perplexity(logits: np.ndarray, targets: np.ndarray) -> float:
    """exp(mean negative log-likelihood of `targets` [N, L]) under `logits` [N, L, V] (pure)."""
    values = logits.astype(np.float64)
    shifted = values - values.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=-1))
    picked = np.take_along_axis(shifted, targets[..., None], axis=-1)[..., 0]
    nll = float(np.mean(log_norm - picked))
    return math.exp(nll) if math.isfinite(nll) else math.inf


@dataclass(frozen=True)
class LanguageModelFigures:
    """Next-token agreement with the fp32 model and both perplexities."""

    agreement: float
    perplexity_original: float
    perplexity_compressed: float
    positions: int

    @property
    def perplexity_ratio(self) -> float:
        """fp32 perplexity / compressed perplexity: 1.0 is lossless, lower is worse."""
        if not math.isfinite(self.perplexity_compressed) or self.perplexity_compressed <= 0:
            return 0.0
        return self.perplexity_original / self.perplexity_compressed


def figures(
    reference: np.ndarray, candidate: np.ndarray, targets: np.ndarray
) -> LanguageModelFigures:
    """Compare compressed `candidate` logits with fp32 `reference` ones on `targets` (pure)."""
    if reference.shape != candidate.shape or reference.shape[:-1] != targets.shape:
        raise ValueError(
            f"logits {list(reference.shape)} / {list(candidate.shape)} do not match next tokens "
            f"{list(targets.shape)}"
        )
    if int(targets.max(initial=0)) >= reference.shape[-1]:
        raise ValueError(f"token id {int(targets.max())} >= vocabulary {reference.shape[-1]}")
    if not np.all(np.isfinite(candidate)):
        return LanguageModelFigures(0.0, perplexity(reference, targets), math.inf, targets.size)
    agreement = float(np.mean(reference.argmax(-1) == candidate.argmax(-1)))
    return LanguageModelFigures(
        agreement, perplexity(reference, targets), perplexity(candidate, targets), targets.size
    )

"""Owns a decoder-only language model's key-value cache layout and its prefill / decode steps.

A generative model is an ONNX decoder in the layout onnxruntime-genai and Optimum export:
`input_ids [batch, seq]`, `attention_mask [batch, past + seq]`, optionally
`position_ids [batch, seq]`, and per layer `past_key_values.{i}.key/value
[batch, kv_heads, past, head_dim]` in, `logits [batch, seq, vocab]` and `present.{i}.key/value`
out. `layout_of` reads that layout from the model's declared inputs and outputs (pure), so the
KV cache's bytes per token are known before any request: that is what the scheduler's memory
bound counts (docs/architecture.md, "Generative serving").

Iteration-level batching keeps one `Batch`: every running sequence's cache, left-padded to the
longest and masked by `attention_mask`, with positions given per row. A sequence joins after its
own prefill (`Batch.join` pads both sides to one length) and leaves by row selection
(`Batch.keep`, which also trims padding no row needs any more). Runs go through the dataplane's
`Runner` (`model.OnnxModel`), so this module imports no onnxruntime.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .dataplane import Runner
from .tensors import NUMPY_DTYPES, Array, TensorSpec

# A row's logits inside a left-padded batch, against the same row's alone: relative L2 distance
# up to which the model is batched across lengths. Kernels whose numerics depend on the batch
# stay far below it (dynamic int8 quantizes a whole batch's activations with one scale: 1.3 % on
# the bench decoder; MatMulNBits' row tiles: up to 1.3 %); a model that ignores attention_mask
# reads the padding as context and moves by 13-67 % on the fixture decoders.
PADDING_TOLERANCE = 0.05


class DecoderLayoutError(ValueError):
    """The model is not a decoder this server can generate with; the message names the input."""


@dataclass(frozen=True)
class DecoderLayout:
    """Where a decoder's tokens, mask, positions, logits and KV cache go in and come out."""

    input_ids: str
    attention_mask: str | None
    position_ids: str | None
    logits: str
    past: tuple[str, ...]
    present: tuple[str, ...]
    kv_heads: int
    head_dim: int
    kv_dtype: str  # v2 datatype of the cache (FP32, FP16)
    vocab: int  # -1 when the model does not declare it

    @property
    def bytes_per_token(self) -> int:
        """KV cache bytes one token of one sequence holds, over every layer's key and value."""
        itemsize = int(np.dtype(NUMPY_DTYPES[self.kv_dtype]).itemsize)
        return len(self.past) * self.kv_heads * self.head_dim * itemsize


def _present_name(past: str, outputs: Mapping[str, TensorSpec]) -> str:
    for candidate in (
        past.replace("past_key_values", "present"),
        past.replace("past", "present"),
    ):
        if candidate in outputs:
            return candidate
    raise DecoderLayoutError(f"input {past!r} has no matching present output")


def _kv_dims(spec: TensorSpec) -> tuple[int, int]:
    if len(spec.shape) != 4:
        raise DecoderLayoutError(
            f"input {spec.name!r}: expected [batch, kv_heads, past, head_dim], got {spec.shape}"
        )
    heads, dim = spec.shape[1], spec.shape[3]
    if heads < 1 or dim < 1:
        raise DecoderLayoutError(f"input {spec.name!r}: kv_heads and head_dim must be fixed")
    return heads, dim


def layout_of(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> DecoderLayout:
    """The decoder layout of a model's declared inputs and outputs (pure)."""
    by_input = {spec.name: spec for spec in inputs}
    by_output = {spec.name: spec for spec in outputs}
    if "input_ids" not in by_input:
        raise DecoderLayoutError("a generative model needs an 'input_ids' input")
    if "logits" not in by_output:
        raise DecoderLayoutError("a generative model needs a 'logits' output")
    past = tuple(name for name in by_input if "past" in name)
    if not past:
        raise DecoderLayoutError("a generative model needs past_key_values.* inputs (KV cache)")
    dims = {_kv_dims(by_input[name]) for name in past}
    if len(dims) != 1:
        raise DecoderLayoutError(f"past inputs disagree on [kv_heads, head_dim]: {sorted(dims)}")
    kinds = {by_input[name].datatype for name in past}
    if len(kinds) != 1 or not kinds <= {"FP32", "FP16"}:
        raise DecoderLayoutError(f"past inputs must all be FP32 or all FP16, got {sorted(kinds)}")
    (heads, dim), (kind,) = dims.pop(), kinds
    logits = by_output["logits"]
    return DecoderLayout(
        input_ids="input_ids",
        attention_mask="attention_mask" if "attention_mask" in by_input else None,
        position_ids="position_ids" if "position_ids" in by_input else None,
        logits="logits",
        past=past,
        present=tuple(_present_name(name, by_output) for name in past),
        kv_heads=heads,
        head_dim=dim,
        kv_dtype=kind,
        vocab=logits.shape[-1] if logits.shape else -1,
    )


@dataclass
class Batch:
    """The running sequences' KV cache: rows left-padded to one length, masked by `mask`."""

    cache: list[Array]  # per past input: [rows, kv_heads, length, head_dim]
    mask: Array  # [rows, length] int64: 1 for a real token, 0 for padding
    positions: Array  # [rows] int64: the position of each row's next token
    ids: list[int] = field(default_factory=list)  # the sequence id of each row

    @property
    def rows(self) -> int:
        return len(self.ids)

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])

    def join(self, other: Batch) -> Batch:
        """This batch and `other` as one, the shorter side left-padded to the longer."""
        if not self.ids:
            return other
        length = max(self.length, other.length)
        return Batch(
            cache=[
                np.concatenate([_pad(mine, length), _pad(theirs, length)])
                for mine, theirs in zip(self.cache, other.cache, strict=True)
            ],
            mask=np.concatenate([_pad_mask(self.mask, length), _pad_mask(other.mask, length)]),
            positions=np.concatenate([self.positions, other.positions]),
            ids=self.ids + other.ids,
        )

    def keep(self, ids: Sequence[int]) -> Batch:
        """Only the rows of `ids` (in this batch's order), without padding no row needs."""
        wanted = set(ids)
        rows = [index for index, seq in enumerate(self.ids) if seq in wanted]
        mask = self.mask[rows]
        used = np.flatnonzero(mask.any(axis=0))
        start = int(used[0]) if used.size else mask.shape[1]
        return Batch(
            cache=[np.ascontiguousarray(array[rows, :, start:, :]) for array in self.cache],
            mask=np.ascontiguousarray(mask[:, start:]),
            positions=self.positions[rows],
            ids=[self.ids[index] for index in rows],
        )


def _pad(array: Array, length: int) -> Array:
    missing = length - array.shape[2]
    if missing == 0:
        return array
    return np.pad(array, ((0, 0), (0, 0), (missing, 0), (0, 0)))


def _pad_mask(mask: Array, length: int) -> Array:
    missing = length - mask.shape[1]
    return mask if missing == 0 else np.pad(mask, ((0, 0), (missing, 0)))


class DecoderModel:
    """A decoder served for generation: the dataplane's `Runner` plus prefill and decode steps.

    It is a `Runner` (the `/infer` endpoint still runs raw feeds) whose warm-up runs a real
    prefill and decode steps, and checks whether left-padded batches give each row the logits
    it gets alone (`padding_safe`); a model that fails it is served one sequence per step.
    """

    def __init__(self, runner: Runner) -> None:
        self._runner = runner
        self.inputs = runner.inputs
        self.outputs = runner.outputs
        self.output_names = runner.output_names
        self.layout = layout_of(runner.inputs, runner.outputs)
        self._dtype = NUMPY_DTYPES[self.layout.kv_dtype]
        self._names = [self.layout.logits, *self.layout.present]
        self.padding_safe = False

    @property
    def batchable(self) -> bool:
        return False  # /infer requests carry their own caches: never merged

    def run(self, feeds: Mapping[str, Array], output_names: Sequence[str]) -> list[Array]:
        return self._runner.run(feeds, output_names)

    def empty(self, rows: int = 1) -> Batch:
        """A batch of `rows` sequences with nothing in their caches yet."""
        layout = self.layout
        shape = (rows, layout.kv_heads, 0, layout.head_dim)
        return Batch(
            cache=[np.zeros(shape, dtype=self._dtype) for _ in layout.past],
            mask=np.zeros((rows, 0), dtype=np.int64),
            positions=np.zeros(rows, dtype=np.int64),
            ids=list(range(rows)),
        )

    def _forward(
        self, batch: Batch, tokens: Array, before_run: Callable[[], object] | None
    ) -> tuple[Array, Batch]:
        """Run `tokens [rows, seq]` after `batch`'s cache: last logits [rows, vocab], new batch."""
        layout = self.layout
        rows, seq = tokens.shape
        mask = np.concatenate([batch.mask, np.ones((rows, seq), dtype=np.int64)], axis=1)
        feeds: dict[str, Array] = {layout.input_ids: tokens.astype(np.int64, copy=False)}
        if layout.attention_mask is not None:
            feeds[layout.attention_mask] = mask
        if layout.position_ids is not None:
            feeds[layout.position_ids] = batch.positions[:, None] + np.arange(seq, dtype=np.int64)
        feeds.update(zip(layout.past, batch.cache, strict=True))
        if before_run is not None:
            before_run()
        logits, *present = self._runner.run(feeds, self._names)
        after = Batch(cache=present, mask=mask, positions=batch.positions + seq, ids=batch.ids)
        return np.asarray(logits[:, -1, :], dtype=np.float32), after

    def prefill(
        self,
        sequence_id: int,
        prompt: Sequence[int],
        before_run: Callable[[], object] | None = None,
    ) -> tuple[Array, Batch]:
        """The prompt's next-token logits [vocab] and its one-row batch, ready to join.

        `before_run` (as for `decode`) is called once the feeds are ready, just before the run.
        """
        start = self.empty(1)
        start.ids = [sequence_id]
        logits, batch = self._forward(start, np.asarray([prompt], dtype=np.int64), before_run)
        return logits[0], batch

    def decode(
        self,
        batch: Batch,
        tokens: Sequence[int],
        before_run: Callable[[], object] | None = None,
    ) -> tuple[Array, Batch]:
        """One decode step: each row's next token in, next-token logits [rows, vocab] out.

        `before_run` is called once the feeds are ready, just before the run: work it hands to
        another thread then overlaps the run (which releases the GIL) instead of delaying it.
        """
        tokens_in = np.asarray(tokens, dtype=np.int64)[:, None]
        return self._forward(batch, tokens_in, before_run)

    def padding_error(self) -> float:
        """How far a row's logits inside a left-padded batch move from its logits alone
        (relative L2 distance; 0 for a model whose left padding is exact)."""
        short, long = [1, 2], [3, 4, 5, 6]
        _, solo = self.prefill(0, short)
        _, other = self.prefill(1, long)
        together = other.join(solo)  # the short row is left-padded by two
        alone_next, _ = self.decode(solo, [7])
        batched_next, _ = self.decode(together, [8, 7])
        alone, batched = alone_next[0], batched_next[1]
        scale = float(np.linalg.norm(alone)) or 1.0
        return float(np.linalg.norm(batched - alone)) / scale

    def check_padding(self) -> bool:
        """Whether left-padded batches give each row its own logits, up to PADDING_TOLERANCE."""
        return self.padding_error() <= PADDING_TOLERANCE

    def warm_up(self, batch: int = 1, runs: int = 3) -> float:
        """A real prefill and decode steps (not zeros); returns the fastest step in seconds."""
        del batch
        self.padding_safe = self.layout.attention_mask is not None and self.check_padding()
        _, state = self.prefill(0, [1, 2, 3])
        best = float("inf")
        for _ in range(max(1, runs)):
            started = time.perf_counter()
            _, state = self.decode(state, [4])
            best = min(best, time.perf_counter() - started)
        return best

"""Owns the calibrated weight-only method: GPTQ in numpy, packed for MatMulNBits.

GPTQ (Frantar et al., 2022) rounds a MatMul's weight B [K, N] one input row at a time and
moves each row's rounding error onto the rows not yet rounded, weighted by the inverse of the
layer's Hessian H = 2 XᵀX over the calibration activations X [tokens, K]: the output XB̂ stays
close to XB, where round-to-nearest only keeps B̂ close to B. Steps (as the paper's reference):
dead inputs (H_kk = 0) are zeroed, H is dampened by DAMP x mean(diag H), U = the upper Cholesky
factor of H⁻¹, rows go in lazy batches of LAZY_ROWS (the error of a batch reaches the rows
after it in one matrix product). The grid is exactly MatMulNBits': blocks of `block_size` rows
per output column with their own scale (and zero point, asymmetric), computed as onnxruntime's
MLAS quantizer computes them (`block_params`), from the weights as updated when the block
starts; so with H = I no error moves and the levels are round-to-nearest's, bit for bit.
Act-order (rows by decreasing H_kk) is optional: its blocks' parameters come from the original
weights (static groups), since the kernel's blocks are contiguous rows.

Pure numpy, no PyTorch; `collect_hessians` is the one side effect (an onnxruntime session over
the calibration feeds). See docs/architecture.md, "Weight-only quantization".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx

DAMP = 0.01  # share of mean(diag H) added to the diagonal (the reference's percdamp)
LAZY_ROWS = 128  # rows per lazy batch; a multiple of every block size (32, 64, 128)


@dataclass(frozen=True)
class Blocks:
    """A weight [K, N] quantized block-wise along K: what MatMulNBits stores, unpacked.

    levels uint8 [K, N] in 0..2**bits-1; scales float32 [K / block_size, N]; zero points
    uint8 [K / block_size, N] (symmetric: None, the kernel's default 2**(bits-1)). K is
    padded to whole blocks; `rows` is the weight's own K.
    """

    levels: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray | None
    bits: int
    block_size: int
    rows: int

    def dequantized(self) -> np.ndarray:
        """The float weight [K, N] the kernel computes with (pure)."""
        middle = 1 << (self.bits - 1)
        zeros = self.zero_points
        if zeros is None:
            zeros = np.full(self.scales.shape, middle, np.uint8)
        per_row = np.repeat(self.scales, self.block_size, axis=0)
        zero_rows = np.repeat(zeros.astype(np.float32), self.block_size, axis=0)
        values: np.ndarray = (self.levels.astype(np.float32) - zero_rows) * per_row
        return values


def block_params(block: np.ndarray, bits: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point per column of one block [rows, N], as MLAS computes them (pure).

    Asymmetric: the range [min(x, 0), max(x, 0)] over 2**bits - 1 steps, zero point rounded
    (half away from zero) into range. Symmetric: scale = the signed value of largest magnitude
    over -2**(bits-1), so that value lands exactly on level 0 (scales may be negative), zero
    point 2**(bits-1).
    """
    values = block.astype(np.float32)
    top = np.float32((1 << bits) - 1)
    low = np.minimum(values.min(axis=0), np.float32(0))
    high = np.maximum(values.max(axis=0), np.float32(0))
    if symmetric:
        middle = 1 << (bits - 1)
        signed = np.where(np.abs(high) > np.abs(low), high, low)
        scales = (signed / np.float32(-middle)).astype(np.float32)
        return scales, np.full(scales.shape, middle, np.uint8)
    scales = ((high - low) / top).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        zero_fp = np.where(scales != 0, np.float32(0) - low / scales, low).astype(np.float32)
    zeros = np.clip(_round_half_away(zero_fp), 0, top)
    return scales, zeros.astype(np.uint8)


def _round_half_away(values: np.ndarray) -> np.ndarray:
    """C's roundf: halves away from zero (numpy's round goes to even)."""
    rounded: np.ndarray = np.sign(values) * np.floor(np.abs(values) + np.float32(0.5))
    return rounded


def quantize_rows(rows: np.ndarray, scales: np.ndarray, zeros: np.ndarray, bits: int) -> np.ndarray:
    """Levels of `rows` [r, N] on one block's grid, as MLAS rounds them (pure)."""
    with np.errstate(divide="ignore"):
        reciprocal = np.where(scales != 0, np.float32(1) / scales, np.float32(0))
    scaled = rows.astype(np.float32) * reciprocal.astype(np.float32) + zeros.astype(np.float32)
    levels = np.clip(_round_half_away(scaled.astype(np.float32)), 0, (1 << bits) - 1)
    result: np.ndarray = levels.astype(np.uint8)
    return result


def _padded(weight: np.ndarray, block_size: int) -> np.ndarray:
    """`weight` with zero rows up to a multiple of `block_size` (MLAS pads the same way)."""
    extra = -weight.shape[0] % block_size
    return np.pad(weight, ((0, extra), (0, 0))) if extra else weight


def round_to_nearest(weight: np.ndarray, bits: int, block_size: int, symmetric: bool) -> Blocks:
    """MatMulNBits' round-to-nearest blocks of `weight` [K, N] (pure; K padded to blocks)."""
    padded = _padded(weight.astype(np.float32), block_size)
    count = padded.shape[0] // block_size
    levels = np.empty(padded.shape, np.uint8)
    scales = np.empty((count, padded.shape[1]), np.float32)
    zeros = np.empty((count, padded.shape[1]), np.uint8)
    for b in range(count):
        rows = slice(b * block_size, (b + 1) * block_size)
        scales[b], zeros[b] = block_params(padded[rows], bits, symmetric)
        levels[rows] = quantize_rows(padded[rows], scales[b], zeros[b], bits)
    return Blocks(levels, scales, None if symmetric else zeros, bits, block_size, weight.shape[0])


def _inverse_factor(hessian: np.ndarray, damp: float) -> np.ndarray:
    """Upper Cholesky factor U of (H + damp·mean(diag H)·I)⁻¹, so H⁻¹ = UᵀU (pure)."""
    h = hessian.astype(np.float64, copy=True)
    h[np.diag_indices_from(h)] += damp * float(np.mean(np.diag(h)))
    inverse = np.linalg.inv(h)
    inverse = (inverse + inverse.T) / 2
    factor: np.ndarray = np.linalg.cholesky(inverse).T
    return factor


@dataclass(frozen=True)
class Factor:
    """What GPTQ derives from one Hessian, shared by the MatMuls reading one activation: the
    row order, the dead rows (H_kk = 0) and U, the upper Cholesky factor of H⁻¹ in that order."""

    order: np.ndarray
    dead: np.ndarray
    upper: np.ndarray


def factorize(
    hessian: np.ndarray, block_size: int, *, damp: float = DAMP, act_order: bool = False
) -> Factor:
    """The Factor of `hessian` [K, K] with K padded to whole blocks (pure)."""
    k = hessian.shape[0]
    size = k + (-k % block_size)
    h = np.eye(size, dtype=np.float64)
    h[:k, :k] = hessian
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    order = np.argsort(-np.diag(h), kind="stable") if act_order else np.arange(size)
    return Factor(order, dead, _inverse_factor(h[np.ix_(order, order)], damp))


def gptq(
    weight: np.ndarray,
    hessian: np.ndarray,
    *,
    bits: int,
    block_size: int,
    symmetric: bool,
    damp: float = DAMP,
    act_order: bool = False,
    factor: Factor | None = None,
) -> Blocks:
    """GPTQ blocks of `weight` [K, N] for inputs whose Hessian is `hessian` [K, K] (pure);
    `factor` (from `factorize` with the same arguments) saves its derivation."""
    k = weight.shape[0]
    if hessian.shape != (k, k):
        raise ValueError(f"Hessian {list(hessian.shape)} does not match weight rows {k}")
    if factor is None:
        factor = factorize(hessian, block_size, damp=damp, act_order=act_order)
    work = _padded(weight.astype(np.float64), block_size)
    work[factor.dead] = 0.0
    size, order = work.shape[0], factor.order
    static = round_to_nearest(work, bits, block_size, symmetric) if act_order else None
    grid = _Grid(bits, block_size, symmetric, size // block_size, weight.shape[1], static)
    upper = factor.upper
    permuted = work[order]
    levels = np.empty(permuted.shape, np.uint8)
    for start in range(0, size, LAZY_ROWS):
        stop = min(start + LAZY_ROWS, size)
        errors = _lazy_batch(permuted, upper, levels, order, grid, start, stop)
        permuted[stop:] -= upper[start:stop, stop:].T @ errors
    result = np.empty_like(levels)
    result[order] = levels
    return Blocks(result, grid.scales, None if symmetric else grid.zeros, bits, block_size, k)


class _Grid:
    """The block parameters GPTQ fills in as it goes (static: fixed up front, act-order)."""

    def __init__(
        self,
        bits: int,
        block_size: int,
        symmetric: bool,
        count: int,
        columns: int,
        static: Blocks | None,
    ) -> None:
        self.bits, self.block_size, self.symmetric = bits, block_size, symmetric
        self.static = static is not None
        middle = 1 << (bits - 1)
        self.scales = np.zeros((count, columns), np.float32)
        self.zeros = np.full((count, columns), middle, np.uint8)
        if static is not None:
            self.scales = static.scales
            if static.zero_points is not None:
                self.zeros = static.zero_points

    def round(self, rows: np.ndarray, row: int, original_row: int) -> tuple[np.ndarray, np.ndarray]:
        """Levels and dequantized values of weight row `row` (its block starts here: set it)."""
        if not self.static and row % self.block_size == 0:
            b = row // self.block_size
            self.scales[b], self.zeros[b] = block_params(
                rows[row : row + self.block_size], self.bits, self.symmetric
            )
        b = (original_row if self.static else row) // self.block_size
        levels = quantize_rows(rows[row : row + 1], self.scales[b], self.zeros[b], self.bits)[0]
        values = (levels.astype(np.float32) - self.zeros[b].astype(np.float32)) * self.scales[b]
        return levels, values.astype(np.float64)


def _lazy_batch(
    rows: np.ndarray,
    factor: np.ndarray,
    levels: np.ndarray,
    order: np.ndarray,
    grid: _Grid,
    start: int,
    stop: int,
) -> np.ndarray:
    """Round rows start..stop-1 in place, moving each row's error onto the batch's later rows;
    returns the batch's scaled errors [stop - start, N] for the rows after it."""
    errors = np.empty((stop - start, rows.shape[1]), np.float64)
    for i in range(start, stop):
        levels[i], values = grid.round(rows, i, int(order[i]))
        error = (rows[i] - values) / factor[i, i]
        rows[i + 1 : stop] -= np.outer(factor[i, i + 1 : stop], error)
        errors[i - start] = error
    return errors


def pack_blocks(blocks: Blocks) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """MatMulNBits initializers of `blocks` (pure), in onnxruntime's quantizer's layout:
    B uint8 [N, blocks, block_size * bits / 8] (4 bits: two levels a byte, the lower row in
    the low nibble), scales float32 [N, blocks], zero points uint8 [N, ceil(blocks * bits /
    8)] (4 bits: two blocks a byte, low nibble first) or None when symmetric. Padding rows
    hold level 0 and a padding zero point 2**(bits-1), as onnxruntime writes them."""
    levels = blocks.levels.copy()
    levels[blocks.rows :] = 0
    n = levels.shape[1]
    count = blocks.scales.shape[0]
    per_column = levels.T.reshape(n, count, blocks.block_size)
    packed = _pack_last(per_column, blocks.bits)
    scales = np.ascontiguousarray(blocks.scales.T, dtype=np.float32)
    zeros = None
    if blocks.zero_points is not None:
        middle = 1 << (blocks.bits - 1)
        zeros = _pack_last(np.ascontiguousarray(blocks.zero_points.T), blocks.bits, middle)
    return packed, scales, zeros


def _pack_last(levels: np.ndarray, bits: int, pad_value: int = 0) -> np.ndarray:
    """Two 4-bit levels a byte along the last axis, low nibble first (8 bits: as they are)."""
    if bits == 8:
        return np.ascontiguousarray(levels, dtype=np.uint8)
    if levels.shape[-1] % 2:
        pad = np.full((*levels.shape[:-1], 1), pad_value, np.uint8)
        levels = np.concatenate([levels, pad], axis=-1)
    packed: np.ndarray = (levels[..., 0::2] | (levels[..., 1::2] << 4)).astype(np.uint8)
    return packed


def collect_hessians(
    model: onnx.ModelProto, activations: Iterable[str], feeds: Iterable[dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """H = 2 XᵀX / tokens [K, K] (float64) of each named activation over the `feeds`: one
    onnxruntime session with the activations added as graph outputs, fed batch by batch so
    only the K x K sums stay in memory."""
    import onnxruntime as ort

    names = sorted(set(activations))
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {value.name for value in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in known)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        probe.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    sums: dict[str, np.ndarray] = {}
    tokens: dict[str, int] = {}
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed), strict=True):
            x = np.asarray(value, np.float64).reshape(-1, value.shape[-1])
            sums[name] = sums.get(name, 0.0) + x.T @ x
            tokens[name] = tokens.get(name, 0) + x.shape[0]
    return {name: 2.0 * sums[name] / max(tokens[name], 1) for name in sums}

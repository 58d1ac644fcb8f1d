"""Owns executing models with onnxruntime: sessions, batched evaluation and p50 latency.

Evaluation sessions use onnxruntime's full optimisation in memory (that is what serving does);
nothing optimised here is ever written to disk.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgemodel_runtime.compress.inputs import InputSpec, per_request

THREADS = 2
DEFAULT_BATCH = 16
LATENCY_RUNS = 20
LATENCY_WARMUP = 3
LATENCY_BLOCK = 5


def make_session(
    path: Path, *, optimize: bool = True, threads: int = THREADS
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # quantized graphs log benign warnings; keep stderr to one line
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def batch_size(specs: list[InputSpec]) -> int:
    fixed = [s.shape[0] for s in specs if s.shape and s.shape[0] is not None and s.shape[0] > 0]
    return fixed[0] if fixed else DEFAULT_BATCH


def batches(
    arrays: dict[str, np.ndarray], names: list[str], size: int
) -> Iterator[dict[str, np.ndarray]]:
    rows = int(arrays[names[0]].shape[0])
    for start in range(0, rows, size):
        yield {name: arrays[name][start : start + size] for name in names}


def run_all(
    session: ort.InferenceSession, arrays: dict[str, np.ndarray], specs: list[InputSpec]
) -> dict[str, np.ndarray]:
    """Run every row through the model in batches; outputs concatenated along axis 0.

    Per-request rows (see inputs.per_request) run one at a time and their outputs are stacked.
    """
    names = [s.name for s in specs]
    outputs = [o.name for o in session.get_outputs()]
    if per_request(arrays, specs):
        rows = int(arrays[names[0]].shape[0])
        results = [
            session.run(outputs, {name: np.asarray(arrays[name][i]) for name in names})
            for i in range(rows)
        ]
        return {
            name: np.stack([np.asarray(r[index]) for r in results])
            for index, name in enumerate(outputs)
        }
    parts: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
    for feed in batches(arrays, names, batch_size(specs)):
        for name, value in zip(outputs, session.run(outputs, feed), strict=True):
            parts[name].append(np.asarray(value))
    return {
        name: np.concatenate(chunks) if chunks[0].ndim else chunks[0]
        for name, chunks in parts.items()
    }


def sample_feed(
    arrays: dict[str, np.ndarray] | None, specs: list[InputSpec]
) -> dict[str, np.ndarray]:
    """One batch-1 request: the first data row when there is data, zeros otherwise."""
    batch = batch_size(specs) if any(s.shape and s.shape[0] for s in specs) else 1
    if arrays is not None and per_request(arrays, specs):
        return {s.name: np.asarray(arrays[s.name][0]) for s in specs}
    if arrays is not None:
        return {s.name: arrays[s.name][:batch] for s in specs}
    feed: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = [d if d is not None and d > 0 else 1 for d in spec.shape]
        feed[spec.name] = np.zeros(shape, dtype=spec.dtype)
    return feed


def p50_latency_ms(
    paths: list[Path],
    feed: dict[str, np.ndarray],
    runs: int = LATENCY_RUNS,
    warmup: int = LATENCY_WARMUP,
    block: int = LATENCY_BLOCK,
) -> list[float]:
    """p50 latency of each model, measured in interleaved rounds of short blocks.

    Each round runs every model for one untimed run and then `block` timed runs, so background
    load on a shared machine slows every model alike instead of whichever happened to be
    measured during the busy second. Alternating models run by run would measure something
    else: each session's intra-op pool keeps spinning for a while after its run, and on a
    two-core machine the next model's run then competes with it (measured: fp32 BERT-base
    164 ms instead of 118 ms, the int8 model 89 instead of 41 ms).
    """
    sessions = [make_session(path) for path in paths]
    for session in sessions:
        for _ in range(warmup):
            session.run(None, feed)
    timings: list[list[float]] = [[] for _ in sessions]
    rounds = max(1, -(-runs // block))
    for _ in range(rounds):
        for index, session in enumerate(sessions):
            session.run(None, feed)
            for _ in range(block):
                start = time.perf_counter()
                session.run(None, feed)
                timings[index].append(time.perf_counter() - start)
    return [statistics.median(samples) * 1000.0 for samples in timings]


def paired_latency(
    paths: list[Path],
    feed: dict[str, np.ndarray],
    runs: int = LATENCY_RUNS * 2,
    warmup: int = LATENCY_WARMUP,
    block: int = LATENCY_BLOCK,
) -> tuple[list[float], list[float]]:
    """(p50 ms of each model, latency ratio of each model to the first).

    The same interleaved rounds as p50_latency_ms, but each ratio is the median over rounds
    of (this model's block median / the first model's block median in the same round): on a
    shared CPU, load that comes and goes between rounds then cancels out of the ratio instead
    of landing on whichever model it hit (measured here: two identical graphs came out 0.87x
    and 1.18x from plain p50s under a load average of 14 on 2 cores).
    """
    sessions = [make_session(path) for path in paths]
    for session in sessions:
        for _ in range(warmup):
            session.run(None, feed)
    timings: list[list[float]] = [[] for _ in sessions]
    per_round: list[list[float]] = [[] for _ in sessions]
    rounds = max(1, -(-runs // block))
    for _ in range(rounds):
        for index, session in enumerate(sessions):
            session.run(None, feed)
            samples = []
            for _ in range(block):
                start = time.perf_counter()
                session.run(None, feed)
                samples.append(time.perf_counter() - start)
            timings[index].extend(samples)
            per_round[index].append(statistics.median(samples))
    ratios = [
        statistics.median(r / b for r, b in zip(rounds_of, per_round[0], strict=True))
        for rounds_of in per_round
    ]
    return [statistics.median(samples) * 1000.0 for samples in timings], ratios

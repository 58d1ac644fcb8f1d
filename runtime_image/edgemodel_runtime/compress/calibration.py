"""Owns the per-tensor calibration method of static int8: each activation's range from the
method (minmax, entropy, percentile) that quantizes that tensor with the least error.

onnxruntime's static quantizer calibrates every activation with one method. Which method is
best differs per tensor: minmax keeps a long-tailed tensor's outliers at the cost of
resolution everywhere else, percentile and entropy clip them. `choose_ranges` (pure) measures,
for every tensor, the mean squared error that fake-quantizing its sampled values with each
method's range causes, and keeps the range with the least. `per_tensor_cache` writes the
choice as an onnxruntime calibration cache, so `quantize_static` uses it as it would any
method's ranges (see docs/architecture.md, "Compression on real models").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

PER_TENSOR = "per-tensor"  # the calibration "method" that picks one of the others per tensor
LEVELS = 256  # 8-bit activations
# Values sampled per tensor to measure the error: enough for the tails to show.
MAX_SAMPLES = 200_000


@dataclass(frozen=True)
class Choice:
    """One tensor's chosen range and the error each candidate method measured."""

    tensor: str
    method: str
    low: float
    high: float
    errors: dict[str, float]


def quantization_error(values: np.ndarray, low: float, high: float) -> float:
    """Mean squared error of fake-quantizing `values` to 8 bits over [low, high] (pure).

    As onnxruntime computes activation parameters: the range always contains 0, the zero
    point is an integer, values outside the range saturate.
    """
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    if high - low <= 0.0:
        return float(np.mean(np.square(values, dtype=np.float64)))
    scale = (high - low) / (LEVELS - 1)
    zero = round(-low / scale)
    quantized = np.clip(np.round(values / scale) + zero, 0, LEVELS - 1)
    restored = (quantized - zero) * scale
    return float(np.mean(np.square(restored - values, dtype=np.float64)))


def choose_ranges(
    samples: dict[str, np.ndarray], ranges: dict[str, dict[str, tuple[float, float]]]
) -> dict[str, Choice]:
    """Per tensor, the method whose range quantizes its samples with the least error (pure).

    `ranges` maps method -> tensor -> (low, high). A tensor without samples keeps the first
    method's range (minmax, the default); ties go to the earlier method.
    """
    methods = list(ranges)
    if not methods:
        raise ValueError("choose_ranges needs at least one calibration method's ranges")
    tensors = [t for t in ranges[methods[0]] if all(t in ranges[m] for m in methods)]
    chosen: dict[str, Choice] = {}
    for tensor in tensors:
        values = samples.get(tensor)
        if values is None or values.size == 0:
            low, high = ranges[methods[0]][tensor]
            chosen[tensor] = Choice(tensor, methods[0], low, high, {})
            continue
        errors = {m: quantization_error(values, *ranges[m][tensor]) for m in methods}
        best = min(methods, key=lambda m: (errors[m], methods.index(m)))
        low, high = ranges[best][tensor]
        chosen[tensor] = Choice(tensor, best, low, high, errors)
    return chosen


def subsample(values: np.ndarray, limit: int = MAX_SAMPLES) -> np.ndarray:
    """At most `limit` of the values, evenly strided (deterministic, pure)."""
    flat = np.asarray(values, np.float32).reshape(-1)
    if flat.size <= limit:
        return flat
    return flat[:: int(np.ceil(flat.size / limit))]


def load_ranges(cache: Path) -> dict[str, tuple[float, float]]:
    """(low, high) per tensor from an onnxruntime calibration cache."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    data = load_tensors_data(cache)
    return {
        name: (float(np.min(data[name].range_value[0])), float(np.max(data[name].range_value[1])))
        for name in data
    }


def write_cache(choices: dict[str, Choice], cache: Path) -> None:
    """The chosen ranges as an onnxruntime MinMax calibration cache."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data

    data = {
        c.tensor: (np.array(c.low, np.float32), np.array(c.high, np.float32))
        for c in choices.values()
    }
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), cache)


def sample_activations(
    model: Path, tensors: list[str], feeds: list[dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Values of the named tensors on `feeds`, every tensor exposed as an extra output."""
    from edgemodel_runtime.compress.runner import make_session

    loaded = onnx.load_model(str(model))
    outputs = {o.name for o in loaded.graph.output}
    wanted = [t for t in tensors if t not in outputs]
    loaded.graph.output.extend(onnx.ValueInfoProto(name=t) for t in wanted)
    exposed = model.with_name(f"exposed-{model.name}")
    onnx.save_model(loaded, str(exposed))
    try:
        session = make_session(exposed)
        names = [o.name for o in session.get_outputs() if o.name in set(tensors)]
        collected: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for feed in feeds:
            for name, value in zip(names, session.run(names, feed), strict=True):
                if np.issubdtype(np.asarray(value).dtype, np.floating):
                    collected[name].append(subsample(np.asarray(value), MAX_SAMPLES // len(feeds)))
    finally:
        exposed.unlink(missing_ok=True)
    return {n: np.concatenate(v) for n, v in collected.items() if v}


def per_tensor_cache(
    model: Path, caches: dict[str, Path], feeds: list[dict[str, np.ndarray]], out: Path
) -> dict[str, Choice]:
    """Write `out`: per tensor, the range of the method in `caches` with the least error."""
    ranges = {method: load_ranges(path) for method, path in caches.items()}
    first = next(iter(ranges.values()))
    samples = sample_activations(model, list(first), feeds)
    choices = choose_ranges(samples, ranges)
    write_cache(choices, out)
    return choices

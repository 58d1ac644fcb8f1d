"""Per-tensor calibration: each activation's range from the method that quantizes it best."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgemodel_runtime.compress.calibration import (
    choose_ranges,
    load_ranges,
    quantization_error,
    subsample,
    write_cache,
)


def test_quantization_error_is_zero_on_the_grid_and_grows_with_saturation() -> None:
    grid = np.arange(0, 256, dtype=np.float32) / 255.0  # exactly the 8-bit levels of 0..1
    assert quantization_error(grid, 0.0, 1.0) == pytest.approx(0.0, abs=1e-12)
    # A range that cuts the top half off saturates it: far worse than rounding.
    assert quantization_error(grid, 0.0, 0.5) > 100 * quantization_error(grid, 0.0, 1.0 + 1e-3)
    # The range always holds 0 (as onnxruntime's parameters do): [2, 3] means [0, 3].
    assert quantization_error(np.array([0.0, 3.0]), 2.0, 3.0) == pytest.approx(0.0, abs=1e-12)
    assert quantization_error(np.array([1.0, -1.0]), 0.0, 0.0) == 1.0  # no range: all lost


def test_each_tensor_gets_the_method_with_the_least_error() -> None:
    rng = np.random.default_rng(0)
    heavy = np.concatenate([rng.normal(0, 1, 1_000_000), [100.0]])  # one outlier in a million
    bounded = rng.uniform(-1, 1, 100_000)  # minmax is exact, clipping costs
    ranges = {
        "minmax": {"heavy": (-5.0, 100.0), "bounded": (-1.0, 1.0), "unseen": (0.0, 1.0)},
        "percentile": {"heavy": (-4.0, 4.0), "bounded": (-0.9, 0.9), "unseen": (0.0, 0.5)},
    }
    chosen = choose_ranges({"heavy": heavy, "bounded": bounded}, ranges)
    assert chosen["heavy"].method == "percentile"  # clipping one value beats 13x coarser steps
    assert (chosen["heavy"].low, chosen["heavy"].high) == (-4.0, 4.0)
    assert chosen["bounded"].method == "minmax"
    errors = chosen["bounded"].errors
    assert errors["minmax"] < errors["percentile"]
    assert chosen["unseen"].method == "minmax" and chosen["unseen"].errors == {}  # no samples
    with pytest.raises(ValueError, match="at least one"):
        choose_ranges({}, {})


def test_ties_go_to_the_first_method() -> None:
    same = {"t": (0.0, 1.0)}
    chosen = choose_ranges({"t": np.linspace(0, 1, 50)}, {"minmax": same, "entropy": same})
    assert chosen["t"].method == "minmax"


def test_subsample_is_deterministic_and_bounded() -> None:
    values = np.arange(1000, dtype=np.float32).reshape(10, 100)
    small = subsample(values, 100)
    assert small.size <= 100 and small[0] == 0 and np.array_equal(small, subsample(values, 100))
    assert subsample(values, 5000).size == 1000


def test_the_choice_is_written_as_an_onnxruntime_minmax_cache(tmp_path: Path) -> None:
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import load_tensors_data

    chosen = choose_ranges(
        {"a": np.array([0.0, 2.0])}, {"minmax": {"a": (0.0, 2.0)}, "entropy": {"a": (0.0, 1.0)}}
    )
    cache = tmp_path / "calibration-per-tensor.json"
    write_cache(chosen, cache)
    assert load_tensors_data(cache).calibration_method == CalibrationMethod.MinMax
    assert load_ranges(cache) == {"a": (0.0, 2.0)}

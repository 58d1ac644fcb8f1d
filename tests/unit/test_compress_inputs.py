"""Validation of calibration/evaluation arrays against a model's inputs."""

from __future__ import annotations

import numpy as np
import pytest

from edgemodel_runtime.compress.errors import CompressError
from edgemodel_runtime.compress.inputs import InputSpec, check_arrays

SPECS = [
    InputSpec("input_ids", np.dtype(np.int64), (None, 128)),
    InputSpec("attention_mask", np.dtype(np.int64), (None, 128)),
]


def good(rows: int = 4) -> dict[str, np.ndarray]:
    return {
        "input_ids": np.zeros((rows, 128), np.int64),
        "attention_mask": np.ones((rows, 128), np.int64),
    }


def test_matching_arrays_pass_and_count_rows() -> None:
    assert check_arrays(good(), SPECS, "--eval", allow_labels=True) == 4
    arrays = good() | {"labels": np.arange(4)}
    assert check_arrays(arrays, SPECS, "--eval", allow_labels=True) == 4


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda a: a.pop("attention_mask"), "missing array for model input 'attention_mask'"),
        (lambda a: a.update(tokens=a.pop("input_ids")), "'tokens' is not a model input"),
        (lambda a: a.update(input_ids=a["input_ids"].astype(np.int32)), "dtype int32"),
        (lambda a: a.update(input_ids=np.zeros((4, 64), np.int64)), "dimension 1 differs"),
        (lambda a: a.update(input_ids=np.zeros((4,), np.int64)), "rank 2"),
        (lambda a: a.update(input_ids=np.zeros((3, 128), np.int64)), "different row counts"),
        (lambda a: a.update(labels=np.zeros((4, 2), np.int64)), "'labels' must be"),
        (lambda a: a.update(labels=np.zeros(4, np.float32)), "'labels' must be"),
    ],
)
def test_mismatches_name_the_array_and_the_problem(change: object, problem: str) -> None:
    arrays = good()
    change(arrays)  # type: ignore[operator]
    with pytest.raises(CompressError, match=problem.replace("(", r"\(")) as info:
        check_arrays(arrays, SPECS, "--eval", allow_labels=True)
    assert str(info.value).startswith("--eval:")


def test_labels_are_not_allowed_where_they_mean_nothing() -> None:
    with pytest.raises(CompressError, match="not a model input"):
        check_arrays(good() | {"labels": np.arange(4)}, SPECS, "--calibration", allow_labels=False)


def test_fixed_batch_needs_a_multiple_of_rows() -> None:
    specs = [InputSpec("x", np.dtype(np.float32), (2, 3))]
    with pytest.raises(CompressError, match="multiple of the model's fixed batch size 2"):
        check_arrays({"x": np.zeros((3, 3), np.float32)}, specs, "--eval", allow_labels=True)

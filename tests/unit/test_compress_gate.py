"""The accuracy gate's figures and verdict, on hand-made outputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgemodel_runtime.compress.gate import compare, primary_output, verdict

RNG = np.random.default_rng(0)
LOGITS = RNG.standard_normal((100, 5)).astype(np.float32)
LABELS = LOGITS.argmax(1).astype(np.int64)


def test_identical_outputs_are_perfect() -> None:
    figures = compare({"y": LOGITS}, {"y": LOGITS.copy()}, ["y"], LABELS)
    assert figures.agreement == 1.0 and figures.accuracy_drop == 0.0
    assert figures.cosine == pytest.approx(1.0) and figures.max_abs_error == 0.0
    assert verdict(figures, 0.0, 1.0) == []


def test_flipped_predictions_lower_agreement_and_accuracy() -> None:
    worse = LOGITS.copy()
    worse[:10] = -worse[:10]  # the argmax of these rows moves
    figures = compare({"y": LOGITS}, {"y": worse}, ["y"], LABELS)
    assert figures.agreement == pytest.approx(0.9)
    assert figures.accuracy_original == 100.0
    assert figures.accuracy_drop == pytest.approx(10.0)
    reasons = verdict(figures, 1.0, 0.95)
    assert len(reasons) == 2 and "accuracy drop" in reasons[0] and "agreement" in reasons[1]
    assert verdict(figures, 10.0, 0.9) == []


def test_primary_output_is_the_first_float_output_with_classes() -> None:
    outputs = {"label": np.zeros(4, np.int64), "score": np.zeros(4), "probs": np.zeros((4, 3))}
    assert primary_output(outputs, ["score", "probs"]) == ("probs", True)
    assert primary_output({"score": np.zeros((4, 1))}, ["score"]) == ("score", False)


def test_regression_output_has_no_agreement_and_fails_an_agreement_gate() -> None:
    values = {"y": np.linspace(0, 1, 50).reshape(50, 1)}
    figures = compare(values, {"y": values["y"] * 1.01}, ["y"], None)
    assert figures.agreement is None and figures.relative_error == pytest.approx(0.01)
    assert verdict(figures, None, None) == []
    assert "cannot be measured" in verdict(figures, None, 0.5)[0]


def test_non_finite_outputs_fail_the_gate() -> None:
    broken = LOGITS.copy()
    broken[0, 0] = np.nan
    figures = compare({"y": LOGITS}, {"y": broken}, ["y"], None)
    assert math.isinf(figures.max_abs_error) and figures.cosine == 0.0
    assert "NaN" in verdict(figures, None, None)[0]


def test_labels_are_ignored_for_sequence_outputs() -> None:
    seq = RNG.standard_normal((8, 6, 4))
    figures = compare({"y": seq}, {"y": seq}, ["y"], np.zeros(8, np.int64))
    assert figures.agreement == 1.0 and figures.accuracy_drop is None

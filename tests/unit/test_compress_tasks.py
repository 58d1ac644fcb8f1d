"""Task metrics: how a compressed model's decisions are compared with the original's, per kind."""

from __future__ import annotations

import numpy as np
import pytest

from edgemodel_runtime.compress import tasks

Box = tuple[float, float, float, float, int, float]


def yolo(boxes: list[Box], classes: int = 3) -> np.ndarray:
    """One image's [4 + classes, anchors] output holding the given (cx, cy, w, h, cls, score)."""
    out = np.zeros((4 + classes, 50), np.float32)
    for anchor, (cx, cy, w, h, cls, score) in enumerate(boxes):
        out[:4, anchor] = (cx, cy, w, h)
        out[4 + cls, anchor] = score
    return out


def test_identical_detections_agree_fully() -> None:
    image = yolo([(50, 50, 20, 20, 0, 0.9), (120, 80, 30, 10, 2, 0.6)])
    figures = tasks.figures("detector", image[None], image[None].copy())
    assert (figures.agreement, figures.task_metric, figures.decisions) == (1.0, 1.0, 2)


def test_a_missed_box_a_moved_box_and_a_wrong_class_each_lower_the_detector_figures() -> None:
    ref = yolo([(50, 50, 20, 20, 0, 0.9), (120, 80, 30, 10, 2, 0.6)])
    missed = yolo([(50, 50, 20, 20, 0, 0.9)])
    moved = yolo([(50, 50, 20, 20, 0, 0.9), (140, 80, 30, 10, 2, 0.6)])  # IoU < 0.5
    relabelled = yolo([(50, 50, 20, 20, 0, 0.9), (120, 80, 30, 10, 1, 0.6)])
    for got in (missed, moved, relabelled):
        figures = tasks.figures("detector", ref[None], got[None])
        assert figures.agreement < 1.0 and figures.task_metric is not None
        assert figures.task_metric < 1.0


def test_overlapping_boxes_of_one_class_are_suppressed() -> None:
    image = yolo([(50, 50, 20, 20, 0, 0.9), (51, 50, 20, 20, 0, 0.8), (51, 50, 20, 20, 1, 0.7)])
    boxes, scores, classes = tasks.yolo_boxes(image)
    assert classes.tolist() == [0, 1] and scores.tolist() == pytest.approx([0.9, 0.7])
    assert len(boxes) == 2


def test_ctc_text_ignores_space_runs_but_not_characters() -> None:
    space, symbols = 4, 5

    def posteriors(sequence: list[int]) -> np.ndarray:
        out = np.full((len(sequence), symbols), 0.01, np.float32)
        out[np.arange(len(sequence)), sequence] = 0.96
        return out

    ref = posteriors([1, 1, 0, 2, space, 3, 0, 0])  # "ab c"
    double_space = posteriors([1, 0, 2, space, 0, space, 3, space])  # "ab  c " -> "ab c"
    wrong = posteriors([1, 0, 2, space, 2, 0, 0, 0])  # "ab b"
    assert tasks.ctc_decode(ref[None]) == [(1, 2, space, 3)]
    same = tasks.figures("ctc-text", ref[None], double_space[None])
    assert (same.agreement, same.task_metric) == (1.0, 1.0)
    other = tasks.figures("ctc-text", ref[None], wrong[None])
    assert other.agreement == 0.0 and other.task_metric == pytest.approx(0.75)


def test_edit_distance() -> None:
    assert tasks.edit_distance((1, 2, 3), (1, 3)) == 1
    assert tasks.edit_distance((), (1, 2)) == 2
    assert tasks.edit_distance((1, 2), (2, 1)) == 2


def test_probability_maps_compare_pixel_decisions_and_mask_iou() -> None:
    ref = np.zeros((1, 1, 10, 10), np.float32)
    ref[0, 0, 2:6, 2:6] = 0.9  # 16 text pixels
    got = ref.copy()
    got[0, 0, 5, 2:6] = 0.1  # 4 of them lost
    figures = tasks.figures("probability-map", ref, got)
    assert figures.agreement == pytest.approx(0.96)
    assert figures.task_metric == pytest.approx(12 / 16)


def test_speech_frames_compare_decisions_at_one_half() -> None:
    ref = np.array([[0.1], [0.7], [0.9], [0.4]], np.float32)
    got = np.array([[0.2], [0.6], [0.4], [0.45]], np.float32)
    figures = tasks.figures("speech-probability", ref, got)
    assert figures.agreement == pytest.approx(0.75) and figures.task_metric == figures.agreement


def test_non_finite_outputs_agree_with_nothing() -> None:
    ref = np.ones((2, 3), np.float32)
    assert tasks.figures("classifier", ref, np.full((2, 3), np.nan, np.float32)).agreement == 0.0


@pytest.mark.parametrize(
    ("kind", "shape", "message"),
    [
        ("detector", (2, 3, 10), "anchors"),
        ("ctc-text", (2, 10), "steps"),
        ("classifier", (2, 1), "class dimension"),
        ("boxes", (2, 3), "unknown output kind"),
    ],
)
def test_an_output_that_does_not_fit_its_kind_is_named(
    kind: str, shape: tuple[int, ...], message: str
) -> None:
    values = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match=message):
        tasks.figures(kind, values, values)

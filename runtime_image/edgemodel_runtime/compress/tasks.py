"""Owns the task metrics: how far a compressed model's decisions follow the original's, per kind.

Pure numpy. An output kind says what a model's primary output means, so the gate can judge
decisions rather than raw numbers (see docs/architecture.md, "The accuracy gate"):

- `classifier`: [rows, classes] (or [rows, ..., classes]); agreement = top-1 agreement.
- `ctc-text`: [rows, steps, symbols] CTC posteriors (blank = 0, the last symbol a space, the
  PaddleOCR convention); agreement = share of rows whose greedy-decoded text is identical once
  spaces are normalised (runs collapsed, ends trimmed: a space sits near 0.5 probability
  beside a blank and flips with any rounding, and no OCR consumer keeps double spaces), task
  metric = character agreement, 1 - edit distance / length of the original's text.
- `detector`: YOLOv8-style [rows, 4 + classes, anchors] (cx, cy, w, h, class scores);
  agreement = F1 of box matches (same class, IoU >= 0.5) after confidence threshold and NMS,
  task metric = mAP@0.5 of the compressed model's boxes against the original's.
- `probability-map`: [rows, 1, H, W] per-pixel probabilities (a text or segmentation map);
  agreement = share of pixels with the same decision (> 0.5), task metric = IoU of the masks.
- `language-model`: a decoder's logits [rows, seq, vocab] on evaluation token sequences;
  agreement = next-token top-1 agreement, task metric = fp32 / compressed perplexity (judged
  in `lm_gate`, which needs the next tokens, so not by `figures` here).
- `speech-probability` (any per-row probability, e.g. voice activity): [rows, 1]; agreement =
  share of rows (frames) with the same decision (> 0.5), which is also the task metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgemodel_runtime.compress.lm_gate import KIND as LANGUAGE_MODEL
from edgemodel_runtime.compress.lm_gate import MIN_PERPLEXITY_RATIO

OUTPUT_KINDS = (
    "classifier",
    "ctc-text",
    "detector",
    "probability-map",
    "speech-probability",
    "language-model",
)
DETECTOR_CONFIDENCE = 0.25
DETECTOR_NMS_IOU = 0.45
MATCH_IOU = 0.5
DECISION_THRESHOLD = 0.5
MAX_BOXES = 300
# The gate's floor for each kind's task metric (beside the agreement threshold): box mAP and
# mask IoU against the original's own boxes/masks move with every borderline box or pixel,
# so they get a floor that a faithful model reaches and a broken one does not.
DEFAULT_TASK_THRESHOLDS = {
    "detector": 0.95,
    "ctc-text": 0.99,
    "probability-map": 0.95,
    "speech-probability": 0.99,
    "language-model": MIN_PERPLEXITY_RATIO,  # fp32 / compressed perplexity (see lm_gate)
}


@dataclass(frozen=True)
class TaskFigures:
    """Agreement (0..1, the gate's) and the task's own metric (0..1, higher is better)."""

    agreement: float
    task_metric: float | None
    task_metric_name: str | None
    decisions: int  # how many decisions were compared (boxes, pixels, frames, rows)


def top1_agreement(ref: np.ndarray, got: np.ndarray) -> float:
    classes = ref.shape[-1]
    return float(
        np.mean(ref.reshape(-1, classes).argmax(-1) == got.reshape(-1, classes).argmax(-1))
    )


def ctc_decode(posteriors: np.ndarray) -> list[tuple[int, ...]]:
    """Greedy CTC decoding of [rows, steps, symbols]: collapse repeats, drop blank (0)."""
    best = posteriors.argmax(-1)
    decoded: list[tuple[int, ...]] = []
    for row in best:
        keep = np.ones(row.shape, bool)
        keep[1:] = row[1:] != row[:-1]
        decoded.append(tuple(int(s) for s in row[keep & (row != 0)]))
    return decoded


def normalise_spaces(text: tuple[int, ...], space: int) -> tuple[int, ...]:
    """Collapse runs of the space symbol and trim it from both ends (pure)."""
    out: list[int] = []
    for symbol in text:
        if symbol == space and (not out or out[-1] == space):
            continue
        out.append(symbol)
    while out and out[-1] == space:
        out.pop()
    return tuple(out)


def edit_distance(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """Levenshtein distance between two symbol sequences (pure)."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def text_figures(ref: np.ndarray, got: np.ndarray) -> TaskFigures:
    space = ref.shape[-1] - 1
    texts = [
        (normalise_spaces(a, space), normalise_spaces(b, space))
        for a, b in zip(ctc_decode(ref), ctc_decode(got), strict=True)
    ]
    same = float(np.mean([a == b for a, b in texts]))
    length = sum(len(a) for a, _ in texts)
    errors = sum(edit_distance(a, b) for a, b in texts)
    characters = 1.0 - errors / length if length else float(errors == 0)
    return TaskFigures(same, max(0.0, characters), "character agreement", len(texts))


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with many."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def yolo_boxes(
    prediction: np.ndarray, confidence: float = DETECTOR_CONFIDENCE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's [4 + classes, anchors] output -> (xyxy boxes, scores, classes) after NMS."""
    scores_all = prediction[4:].T
    classes = scores_all.argmax(-1)
    scores = scores_all[np.arange(len(classes)), classes]
    keep = scores >= confidence
    cx, cy, w, h = prediction[:4, keep]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    scores, classes = scores[keep], classes[keep]
    order = np.argsort(-scores, kind="stable")[: MAX_BOXES * 10]
    boxes, scores, classes = boxes[order], scores[order], classes[order]
    chosen: list[int] = []
    suppressed = np.zeros(len(boxes), bool)
    for index in range(len(boxes)):
        if suppressed[index]:
            continue
        chosen.append(index)
        if len(chosen) >= MAX_BOXES:
            break
        same = classes == classes[index]
        overlap = _iou(boxes[index], boxes) > DETECTOR_NMS_IOU
        suppressed |= same & overlap
    picked = np.asarray(chosen, int)
    return boxes[picked], scores[picked], classes[picked]


def _match(
    ref: tuple[np.ndarray, np.ndarray, np.ndarray], got: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> list[bool]:
    """For each `got` box (by falling score): does it match an unmatched `ref` box?"""
    ref_boxes, _, ref_classes = ref
    got_boxes, _, got_classes = got
    used = np.zeros(len(ref_boxes), bool)
    hits: list[bool] = []
    for index in range(len(got_boxes)):
        if not len(ref_boxes):
            hits.append(False)
            continue
        ious = _iou(got_boxes[index], ref_boxes)
        ious[(ref_classes != got_classes[index]) | used] = 0.0
        best = int(np.argmax(ious))
        hit = bool(ious[best] >= MATCH_IOU)
        if hit:
            used[best] = True
        hits.append(hit)
    return hits


def _average_precision(hits: np.ndarray, positives: int) -> float:
    """Area under the all-point interpolated precision/recall curve (VOC/COCO style)."""
    if positives == 0:
        return 1.0 if hits.size == 0 else 0.0
    true_pos = np.cumsum(hits)
    precision = true_pos / np.arange(1, len(hits) + 1)
    recall = true_pos / positives
    envelope = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(envelope) - 2, -1, -1):
        envelope[i] = max(envelope[i], envelope[i + 1])
    points = np.concatenate([[0.0], recall, [1.0]])
    steps = np.where(points[1:] != points[:-1])[0]
    return float(np.sum((points[steps + 1] - points[steps]) * envelope[steps + 1]))


def detector_figures(ref: np.ndarray, got: np.ndarray) -> TaskFigures:
    """Box F1 (agreement) and mAP@0.5 of `got`'s boxes against `ref`'s, over all images."""
    matched = ref_total = got_total = 0
    per_class: dict[int, list[tuple[float, bool]]] = {}
    positives: dict[int, int] = {}
    for ref_row, got_row in zip(ref, got, strict=True):
        ref_boxes = yolo_boxes(ref_row)
        got_boxes = yolo_boxes(got_row)
        hits = _match(ref_boxes, got_boxes)
        matched += sum(hits)
        ref_total += len(ref_boxes[0])
        got_total += len(got_boxes[0])
        for cls in ref_boxes[2]:
            positives[int(cls)] = positives.get(int(cls), 0) + 1
        # mAP ranks every box above a low threshold, not only the confident ones.
        low = yolo_boxes(got_row, confidence=0.001)
        for score, cls, hit in zip(low[1], low[2], _match(ref_boxes, low), strict=True):
            per_class.setdefault(int(cls), []).append((float(score), hit))
    total = ref_total + got_total
    f1 = 1.0 if total == 0 else 2.0 * matched / total
    aps = []
    for cls, count in positives.items():
        ranked = sorted(per_class.get(cls, []), key=lambda item: -item[0])
        aps.append(_average_precision(np.asarray([hit for _, hit in ranked], float), count))
    ap = float(np.mean(aps)) if aps else (1.0 if got_total == 0 else 0.0)
    return TaskFigures(f1, ap, "mAP@0.5 vs original boxes", ref_total)


def figures(kind: str, ref: np.ndarray, got: np.ndarray) -> TaskFigures:
    """Agreement and task metric of `got` against `ref` for output kind `kind` (pure)."""
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"unknown output kind {kind!r} (choose from {', '.join(OUTPUT_KINDS)})")
    if kind == LANGUAGE_MODEL:
        raise ValueError("a language model is judged against its next tokens (see lm_gate)")
    if not np.all(np.isfinite(got)):
        return TaskFigures(0.0, 0.0, None, int(ref.shape[0]) if ref.ndim else 1)
    if kind == "classifier":
        if ref.ndim < 2 or ref.shape[-1] < 2:
            raise ValueError(f"a classifier output needs a class dimension, got {ref.shape}")
        return TaskFigures(top1_agreement(ref, got), None, None, ref.size // ref.shape[-1])
    if kind == "ctc-text":
        if ref.ndim != 3:
            raise ValueError(f"a ctc-text output is [rows, steps, symbols], got {ref.shape}")
        return text_figures(ref, got)
    if kind == "detector":
        if ref.ndim != 3 or ref.shape[1] < 5:
            raise ValueError(f"a detector output is [rows, 4 + classes, anchors], got {ref.shape}")
        return detector_figures(ref, got)
    ref_on = ref > DECISION_THRESHOLD
    got_on = got > DECISION_THRESHOLD
    agreement = float(np.mean(ref_on == got_on))
    if kind == "probability-map":
        union = int(np.sum(ref_on | got_on))
        iou = 1.0 if union == 0 else float(np.sum(ref_on & got_on)) / union
        return TaskFigures(agreement, iou, "mask IoU", int(ref.size))
    return TaskFigures(agreement, agreement, "frame decisions", int(ref.size))


def finite_or_zero(value: float | None) -> float:
    return 0.0 if value is None or not math.isfinite(value) else value

"""Owns the accuracy gate: figures comparing original and compressed outputs, and the verdict.

Pure functions over numpy arrays. Which output is judged: with a known output kind (see
`tasks`), the model's first float output, judged by that kind's agreement and task metric;
otherwise the first float output whose last dimension is a class dimension (rank >= 2, size
> 1) is the "primary" output used for top-1 agreement and accuracy; without one, the first
float output is used for cosine and error only, and an agreement gate cannot pass.
Cosine similarity is computed over the whole flattened output (all evaluation rows at once), so
a 2-logit classifier head is judged as one vector rather than per tiny row.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgemodel_runtime.compress import lm_gate, tasks


@dataclass(frozen=True)
class Figures:
    """How closely the compressed model follows the original on the evaluation set."""

    output: str
    rows: int
    agreement: float | None  # top-1 agreement with the original, 0..1
    accuracy_original: float | None  # top-1 accuracy in percent, when labels exist
    accuracy_compressed: float | None
    accuracy_drop: float | None  # percentage points (original - compressed)
    cosine: float
    max_abs_error: float
    relative_error: float  # ||compressed - original|| / ||original||
    kind: str | None = None  # the output kind judged (tasks.OUTPUT_KINDS), when known
    task_metric: float | None = None  # the kind's own metric (0..1), e.g. mAP@0.5
    task_metric_name: str | None = None
    # language models (lm_gate): perplexity on the evaluation sequences' next tokens
    perplexity_original: float | None = None
    perplexity_compressed: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def primary_output(outputs: dict[str, np.ndarray], float_names: list[str]) -> tuple[str, bool]:
    """(name, has_class_dimension) of the output the gate judges."""
    floats = [n for n in float_names if n in outputs]
    for name in floats:
        value = outputs[name]
        if value.ndim >= 2 and value.shape[-1] > 1:
            return name, True
    if not floats:
        raise ValueError("the model has no floating-point output to compare")
    return floats[0], False


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na = float(np.linalg.norm(a))
    nb = float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def compare(
    reference: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    float_names: list[str],
    labels: np.ndarray | None,
    kind: str | None = None,
) -> Figures:
    if kind == lm_gate.KIND:
        return _language_model(reference, candidate, float_names, labels)
    if kind is not None and kind != "classifier":
        floats = [n for n in float_names if n in reference]
        if not floats:
            raise ValueError("the model has no floating-point output to compare")
        name, has_classes = floats[0], False
    else:
        name, has_classes = primary_output(reference, float_names)
    ref = np.asarray(reference[name], dtype=np.float64)
    got = np.asarray(candidate[name], dtype=np.float64)
    if ref.shape != got.shape:
        raise ValueError(f"output {name!r} changed shape: {ref.shape} -> {got.shape}")
    rows = int(ref.shape[0]) if ref.ndim else 1
    finite = bool(np.all(np.isfinite(got)))
    flat_ref, flat_got = ref.reshape(-1), got.reshape(-1)
    if finite:
        cosine = _cosine(flat_ref, flat_got)
        diff = flat_got - flat_ref
        max_abs = float(np.max(np.abs(diff))) if diff.size else 0.0
        norm = float(np.linalg.norm(flat_ref))
        relative = float(np.linalg.norm(diff) / norm) if norm else float(np.linalg.norm(diff))
    else:  # NaN/inf in the compressed model: report the worst figures rather than NaN
        cosine, max_abs, relative = 0.0, math.inf, math.inf
    agreement = acc_ref = acc_got = drop = None
    if has_classes:
        top_ref = ref.reshape(rows, -1, ref.shape[-1]).argmax(-1)
        top_got = got.reshape(rows, -1, got.shape[-1]).argmax(-1)
        agreement = float(np.mean(top_ref == top_got)) if finite else 0.0
        if labels is not None and top_ref.shape[1] == 1:
            acc_ref = float(np.mean(top_ref[:, 0] == labels) * 100.0)
            acc_got = float(np.mean(top_got[:, 0] == labels) * 100.0) if finite else 0.0
            drop = acc_ref - acc_got
        kind = kind or "classifier"
    if kind is not None and kind != "classifier":
        judged = tasks.figures(kind, ref, got)
        return Figures(
            name,
            rows,
            judged.agreement,
            None,
            None,
            None,
            cosine,
            max_abs,
            relative,
            kind,
            judged.task_metric,
            judged.task_metric_name,
        )
    return Figures(name, rows, agreement, acc_ref, acc_got, drop, cosine, max_abs, relative, kind)


def _language_model(
    reference: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    float_names: list[str],
    targets: np.ndarray | None,
) -> Figures:
    """Next-token agreement and perplexity ratio (see lm_gate); `targets` are the next tokens."""
    name = next((n for n in float_names if n in reference), None)
    if name is None or targets is None:
        raise ValueError("a language model is judged on its logits against the next tokens")
    ref, got = reference[name], candidate[name]
    judged = lm_gate.figures(ref, got, targets)
    finite = bool(np.all(np.isfinite(got)))
    flat_ref = ref.reshape(-1).astype(np.float64)
    diff = got.reshape(-1).astype(np.float64) - flat_ref
    norm = float(np.linalg.norm(flat_ref))
    return Figures(
        output=name,
        rows=int(ref.shape[0]),
        agreement=judged.agreement,
        accuracy_original=None,
        accuracy_compressed=None,
        accuracy_drop=None,
        cosine=_cosine(flat_ref, got.reshape(-1).astype(np.float64)) if finite else 0.0,
        max_abs_error=float(np.max(np.abs(diff))) if finite else math.inf,
        relative_error=float(np.linalg.norm(diff) / norm) if finite and norm else math.inf,
        kind=lm_gate.KIND,
        task_metric=round(judged.perplexity_ratio, 6),
        task_metric_name="perplexity ratio (fp32 / compressed)",
        perplexity_original=round(judged.perplexity_original, 6),
        perplexity_compressed=round(judged.perplexity_compressed, 6)
        if math.isfinite(judged.perplexity_compressed)
        else None,
    )


def verdict(
    figures: Figures,
    max_accuracy_drop: float | None,
    min_agreement: float | None,
    min_task_metric: float | None = None,
) -> list[str]:
    """Why the gate fails (empty list: it passes)."""
    reasons: list[str] = []
    if not math.isfinite(figures.max_abs_error):
        reasons.append("compressed outputs contain NaN or infinity")
    if (
        max_accuracy_drop is not None
        and figures.accuracy_drop is not None
        and figures.accuracy_drop > max_accuracy_drop + 1e-9
    ):
        reasons.append(
            f"accuracy drop {figures.accuracy_drop:.2f} points > allowed {max_accuracy_drop:g}"
        )
    if min_agreement is not None:
        if figures.agreement is None:
            reasons.append(f"top-1 agreement cannot be measured on output {figures.output!r}")
        elif figures.agreement < min_agreement - 1e-12:
            what = (
                "top-1 agreement"
                if figures.kind in (None, "classifier")
                else (f"{figures.kind} agreement")
            )
            reasons.append(f"{what} {figures.agreement:.4f} < required {min_agreement:g}")
    if (
        min_task_metric is not None
        and figures.task_metric is not None
        and figures.task_metric < min_task_metric - 1e-12
    ):
        reasons.append(
            f"{figures.task_metric_name} {figures.task_metric:.4f} < required {min_task_metric:g}"
        )
    return reasons


def score(figures: Figures | None) -> tuple[float, float]:
    """Order attempts when none passes: best agreement first, then smallest error."""
    if figures is None:
        return (-math.inf, -math.inf)
    agreement = figures.agreement if figures.agreement is not None else 0.0
    accuracy = -(figures.accuracy_drop or 0.0)
    return (agreement + accuracy, -figures.relative_error)

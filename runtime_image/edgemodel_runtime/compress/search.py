"""Owns the accuracy-driven search run when the first conversion fails the gate.

Strategy, cheapest first, always inside the time budget:
1. (static-int8) the other calibration methods, unchanged otherwise;
2. per-node sensitivity: quantize one candidate node at a time and measure the relative output
   error on the evaluation set (the error that node alone introduces);
3. keep the most sensitive nodes in float, 1, 2, 4, ... of them (never more than half of the
   candidates: past that the artifact is no longer compressed), with every calibration method.
The first attempt that passes wins; if none does, the best-scoring attempt is reported.
The driver takes callbacks so the ordering logic is testable without onnxruntime.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgemodel_runtime.compress.gate import Figures, score
from edgemodel_runtime.compress.quantize import Variant

MAX_FLOAT_FRACTION = 0.5


@dataclass(frozen=True)
class Sensitivity:
    """Output error when only `node` is converted (higher: more sensitive)."""

    node: str
    op_type: str
    relative_error: float


@dataclass(frozen=True)
class Attempt:
    """One converted candidate and its gate outcome."""

    variant: Variant
    figures: Figures | None  # None when there is no evaluation data (nothing to gate)
    reasons: tuple[str, ...]
    artifact: Any  # the pipeline's handle on the candidate file

    @property
    def passed(self) -> bool:
        return not self.reasons


@dataclass
class SearchLog:
    """What the search did, for the report."""

    attempts: list[Attempt] = field(default_factory=list)
    sensitivities: list[Sensitivity] = field(default_factory=list)
    budget_exhausted: bool = False
    elapsed_s: float = 0.0


def exclusion_plan(ranked: list[Sensitivity], candidates: int) -> list[tuple[str, ...]]:
    """Growing sets of most-sensitive nodes to keep in float: top 1, 2, 4, ... (pure)."""
    cap = int(candidates * MAX_FLOAT_FRACTION)
    plan: list[tuple[str, ...]] = []
    size = 1
    while size <= min(cap, len(ranked)):
        plan.append(tuple(s.node for s in ranked[:size]))
        size *= 2
    top = min(cap, len(ranked))
    if top and (not plan or len(plan[-1]) != top):
        plan.append(tuple(s.node for s in ranked[:top]))
    return plan


def method_order(current: str | None, methods: tuple[str, ...]) -> list[str | None]:
    if current is None:
        return [None]
    return [current, *(m for m in methods if m != current)]


def run_search(
    first: Attempt,
    *,
    candidates: list[tuple[str, str]],
    methods: list[str | None],
    attempt: Callable[[Variant], Attempt],
    sensitivity: Callable[[str], float],
    budget_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[Attempt, SearchLog]:
    """Search until an attempt passes or the budget runs out; returns (chosen, log)."""
    start = clock()
    log = SearchLog(attempts=[first])
    best = first

    def out_of_time() -> bool:
        if clock() - start >= budget_s:
            log.budget_exhausted = True
            return True
        return False

    def consider(result: Attempt) -> bool:
        nonlocal best
        log.attempts.append(result)
        if result.passed or score(result.figures) > score(best.figures):
            best = result
        return result.passed

    def finish() -> tuple[Attempt, SearchLog]:
        log.elapsed_s = clock() - start
        return best, log

    if first.passed or budget_s <= 0:
        return finish()
    for method in methods[1:]:
        if out_of_time():
            return finish()
        if consider(attempt(Variant(calibration_method=method))):
            return finish()
    op_of = dict(candidates)
    measured: list[Sensitivity] = []
    for node, _op in candidates:
        if out_of_time():
            break
        measured.append(Sensitivity(node, op_of[node], sensitivity(node)))
    measured.sort(key=lambda s: s.relative_error, reverse=True)
    log.sensitivities = measured
    # Try the method that did best on its own first.
    by_method = {a.variant.calibration_method: a for a in log.attempts}
    ordered = sorted(
        methods,
        key=lambda m: score(by_method[m].figures) if m in by_method else (-9.0, 0.0),
        reverse=True,
    )
    for excluded in exclusion_plan(measured, len(candidates)):
        for method in ordered:
            if out_of_time():
                return finish()
            if consider(attempt(Variant(calibration_method=method, nodes_to_exclude=excluded))):
                return finish()
    return finish()

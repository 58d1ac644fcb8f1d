"""Owns the accuracy-driven search run when the first conversion fails the gate.

Strategy, cheapest first, always inside the time budget:
1. (static-int8) the other calibration methods, unchanged otherwise, then the per-tensor
   method (each activation's range from the method that quantizes it best, see calibration);
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

from edgemodel_runtime.compress.calibration import PER_TENSOR
from edgemodel_runtime.compress.gate import Figures, score
from edgemodel_runtime.compress.quantize import Variant

MAX_FLOAT_FRACTION = 0.5
# Weight-only int8 keeps its nodes' weights fp16 (see mixed): even with most of them kept the
# artifact is compressed (all kept: about 0.5x), so its plan may go further.
MIXED_MAX_FRACTION = 0.9


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
    # weight-only int8: the error when only that node's weight is stored int8
    weight_sensitivities: list[Sensitivity] = field(default_factory=list)
    budget_exhausted: bool = False
    elapsed_s: float = 0.0


def exclusion_plan(
    ranked: list[Sensitivity], candidates: int, max_fraction: float = MAX_FLOAT_FRACTION
) -> list[tuple[str, ...]]:
    """Growing sets of most-sensitive nodes to keep in float: top 1, 2, 4, ... (pure)."""
    cap = int(candidates * max_fraction)
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


def with_per_tensor(methods: list[str | None]) -> list[str | None]:
    """The calibration methods to try, the per-tensor choice last when there is a choice
    (static int8: several methods; dynamic int8 calibrates nothing) (pure)."""
    if len(methods) < 2 or PER_TENSOR in methods:
        return methods
    return [*methods, PER_TENSOR]


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
    methods = with_per_tensor(methods)
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


# Latency ratios within this of 1.0 are measurement noise on a shared CPU, not "slower".
LATENCY_TOLERANCE = 0.05
# Candidates within this fraction of the smallest one's size count as the same size, and the
# fastest of them wins (int8 kernels at 0.26x beat weight-only int8 at 0.25x when they run
# 2.5x faster).
SIZE_TOLERANCE = 0.10


def pick(
    pool: list[Attempt],
    *,
    size: Callable[[Attempt], int],
    latency_ratio: Callable[[Attempt], float | None],
    runs_as_original: Callable[[Attempt], bool] = lambda _: False,
) -> tuple[Attempt, dict[int, str]]:
    """The candidate to publish, and a note per candidate (keyed by id) saying why (pure).

    Of the candidates that pass the gate, those not slower than the original (beyond
    LATENCY_TOLERANCE; unmeasured counts as not slower; a candidate that onnxruntime runs
    with the original's own kernels is never slower, whatever the noise) are preferred, then
    the smallest (within SIZE_TOLERANCE), then the fastest. Without a passing candidate, the
    best-scoring one is returned (it is reported, never deployed).
    """
    notes: dict[int, str] = {}
    passing = [a for a in pool if a.passed]
    for a in pool:
        if not a.passed:
            notes[id(a)] = "failed the gate: " + "; ".join(a.reasons)
    if not passing:
        best = max(pool, key=lambda a: score(a.figures))
        return best, notes
    slow: set[int] = set()
    for a in passing:
        measured = latency_ratio(a)
        if runs_as_original(a):
            shown = "" if measured is None else f" (measured {measured:.2f}x: noise)"
            notes[id(a)] = "runs the original's fp32 kernels after load-time folding" + shown
            continue
        if measured is not None and measured > 1.0 + LATENCY_TOLERANCE:
            slow.add(id(a))
            notes[id(a)] = (
                f"runs {measured:.2f}x the original's latency on this CPU: slower than fp32, "
                "so not the result of a faster mode"
            )
    fast = [a for a in passing if id(a) not in slow] or passing

    def speed(a: Attempt) -> float:
        measured = latency_ratio(a)
        return 1.0 if measured is None or runs_as_original(a) else measured

    smallest = min(size(a) for a in fast)
    similar = [a for a in fast if size(a) <= smallest * (1 + SIZE_TOLERANCE)]
    # Unmeasured (no latency check asked for): int8 kernels first, they are the mode's promise.
    chosen = min(similar, key=lambda a: (speed(a), a.variant.weight_only, size(a)))
    for a in passing:
        if a is not chosen and id(a) not in slow:
            notes[id(a)] = "passed, but larger (or slower) than the chosen candidate; " + (
                notes.get(id(a), "")
            )
    reason = "chosen: smallest passing candidate not slower than fp32"
    notes[id(chosen)] = reason + (f"; {notes[id(chosen)]}" if id(chosen) in notes else "")
    return chosen, notes


# Share of the weight-only search's budget its sensitivity probes may use.
PROBE_SHARE = 0.5


def weight_only_search(
    first: Attempt,
    *,
    candidates: list[tuple[str, str]],
    attempt: Callable[[Variant], Attempt],
    sensitivity: Callable[[str], float],
    budget_s: float,
    clock: Callable[[], float],
    log: SearchLog,
) -> Attempt:
    """Keep the weights of the most sensitive nodes fp32 until weight-only int8 passes.

    Sensitivity here is the output error when only that node's weight is stored int8; the
    plan is the same growing top-1, 2, 4, ... as for the int8 kernels (the kept nodes' weights
    go fp16, see mixed). Probing stops at PROBE_SHARE of the budget so that the plan runs on
    what was measured: on a loaded 2-core machine the PP-OCRv4 recognizer's 45 probes took
    the whole 400 s budget and no attempt was left. Returns the first passing attempt, else
    the best-scoring one; every attempt is appended to `log`.
    """
    start = clock()
    log.attempts.append(first)
    best = first
    measured: list[Sensitivity] = []
    op_of = dict(candidates)
    for node, _op in candidates:
        if clock() - start >= budget_s * PROBE_SHARE:
            log.budget_exhausted = True
            break
        measured.append(Sensitivity(node, op_of[node], sensitivity(node)))
    measured.sort(key=lambda s: s.relative_error, reverse=True)
    log.weight_sensitivities = measured
    for excluded in exclusion_plan(measured, len(candidates), MIXED_MAX_FRACTION):
        if clock() - start >= budget_s:
            log.budget_exhausted = True
            break
        result = attempt(Variant(nodes_to_exclude=excluded, weight_only=True))
        log.attempts.append(result)
        if result.passed:
            return result
        if score(result.figures) > score(best.figures):
            best = result
    return best


def wants_qoperator(mode: str, target: str | None, chosen: Attempt) -> bool:
    """Try the QOperator twin of a passing static-int8 candidate (pure).

    Only on amd64, where this CPU can time it: QDQ is the rule, and onnxruntime's CPU
    provider fuses QDQ units into the same QLinear kernels, so QOperator wins only where a
    fusion is missed. arm64 is not timed here (qemu times the emulator) and keeps QDQ;
    gpu providers run QDQ.
    """
    return (
        mode == "static-int8"
        and target == "amd64"
        and chosen.passed
        and not chosen.variant.weight_only
        and not chosen.variant.qoperator
    )


def qoperator_faster(qdq_ratio: float | None, qoperator_ratio: float | None) -> bool:
    """QOperator replaces QDQ only when measurably faster: beyond LATENCY_TOLERANCE (pure)."""
    if qdq_ratio is None or qoperator_ratio is None:
        return False
    return qoperator_ratio < qdq_ratio * (1 - LATENCY_TOLERANCE)


def qoperator_note(qdq_ratio: float | None, qoperator_ratio: float | None, faster: bool) -> str:
    """The report's word on the QOperator twin (pure)."""
    figures = f"QOperator {qoperator_ratio or 0:.2f}x vs QDQ {qdq_ratio or 0:.2f}x fp32 latency"
    if faster:
        return f"{figures}: QOperator measurably faster on this CPU"
    return f"{figures}: not measurably faster (>{LATENCY_TOLERANCE:.0%}), QDQ kept"

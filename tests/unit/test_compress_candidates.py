"""Choosing among candidates: pass the gate, not slower than fp32, then small, then fast."""

from __future__ import annotations

from edgemodel_runtime.compress.gate import Figures
from edgemodel_runtime.compress.quantize import Variant
from edgemodel_runtime.compress.search import Attempt, pick

KERNELS = Variant()
WEIGHT_ONLY = Variant(weight_only=True)


def candidate(variant: Variant, agreement: float, size: int) -> Attempt:
    figures = Figures("y", 10, agreement, None, None, None, 1.0, 0.0, 0.0)
    reasons = () if agreement >= 0.99 else (f"top-1 agreement {agreement} < required 0.99",)
    return Attempt(variant, figures, reasons, size)


def choose(pool: list[Attempt], latency: dict[int, float | None]) -> tuple[Attempt, dict[int, str]]:
    return pick(
        pool,
        size=lambda a: int(a.artifact),
        latency_ratio=lambda a: latency.get(id(a)),
    )


def test_an_int8_artifact_slower_than_fp32_is_not_chosen_and_the_note_says_so() -> None:
    kernels = candidate(KERNELS, 1.0, 250)
    light = candidate(WEIGHT_ONLY, 1.0, 255)
    chosen, notes = choose([kernels, light], {id(kernels): 1.4, id(light): 1.0})
    assert chosen is light
    assert "1.40x" in notes[id(kernels)] and "slower than fp32" in notes[id(kernels)]


def test_of_similar_sizes_the_faster_wins() -> None:
    kernels = candidate(KERNELS, 1.0, 260)
    light = candidate(WEIGHT_ONLY, 1.0, 250)
    chosen, _ = choose([kernels, light], {id(kernels): 0.4, id(light): 1.0})
    assert chosen is kernels


def test_a_clearly_smaller_candidate_wins_when_neither_is_slower() -> None:
    kernels = candidate(KERNELS, 1.0, 400)
    light = candidate(WEIGHT_ONLY, 1.0, 250)
    chosen, _ = choose([kernels, light], {id(kernels): 0.6, id(light): 1.0})
    assert chosen is light


def test_a_candidate_failing_the_gate_is_never_chosen_over_a_passing_one() -> None:
    kernels = candidate(KERNELS, 0.96, 200)
    light = candidate(WEIGHT_ONLY, 0.995, 250)
    chosen, notes = choose([kernels, light], {id(light): 1.0})
    assert chosen is light and notes[id(kernels)].startswith("failed the gate")


def test_without_a_passing_candidate_the_best_scoring_is_reported() -> None:
    kernels = candidate(KERNELS, 0.96, 200)
    light = candidate(WEIGHT_ONLY, 0.98, 250)
    chosen, _ = choose([kernels, light], {})
    assert chosen is light and not chosen.passed


def test_unmeasured_latency_prefers_the_int8_kernels() -> None:
    kernels = candidate(KERNELS, 1.0, 255)
    light = candidate(WEIGHT_ONLY, 1.0, 250)
    chosen, _ = choose([light, kernels], {})
    assert chosen is kernels


def test_when_everything_passing_is_slower_the_fastest_is_still_published() -> None:
    kernels = candidate(KERNELS, 1.0, 250)
    light = candidate(WEIGHT_ONLY, 1.0, 250)
    chosen, notes = choose([kernels, light], {id(kernels): 1.5, id(light): 1.2})
    assert chosen is light and "slower than fp32" in notes[id(light)]

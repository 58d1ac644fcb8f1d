"""The accuracy search's ordering logic, driven with fake attempts and a fake clock."""

from __future__ import annotations

from edgemodel_runtime.compress.calibration import PER_TENSOR
from edgemodel_runtime.compress.gate import Figures
from edgemodel_runtime.compress.quantize import Variant
from edgemodel_runtime.compress.search import (
    MIXED_MAX_FRACTION,
    PROBE_SHARE,
    Attempt,
    SearchLog,
    Sensitivity,
    exclusion_plan,
    method_order,
    qoperator_faster,
    qoperator_note,
    run_search,
    wants_qoperator,
    weight_only_search,
    with_per_tensor,
)


def figures(agreement: float) -> Figures:
    return Figures("y", 10, agreement, None, None, None, agreement, 1 - agreement, 1 - agreement)


def attempt_of(variant: Variant, agreement: float, required: float = 0.99) -> Attempt:
    reasons = () if agreement >= required else (f"agreement {agreement}",)
    return Attempt(variant, figures(agreement), reasons, None)


CANDIDATES = [(f"n{i}", "MatMul") for i in range(10)]
SENSITIVITY = {f"n{i}": float(i) for i in range(10)}  # n9 is the most sensitive


def ranked(n: int) -> list[Sensitivity]:
    return [Sensitivity(f"n{i}", "MatMul", float(i)) for i in reversed(range(n))]


def test_exclusion_plan_doubles_and_caps_at_half_the_candidates() -> None:
    plan = exclusion_plan(ranked(10), 10)
    assert [len(p) for p in plan] == [1, 2, 4, 5]
    assert plan[0] == ("n9",) and plan[-1] == ("n9", "n8", "n7", "n6", "n5")
    assert exclusion_plan(ranked(1), 1) == []  # never everything in float
    assert exclusion_plan(ranked(3), 10) == [("n2",), ("n2", "n1"), ("n2", "n1", "n0")]


def test_method_order_starts_with_the_requested_method() -> None:
    assert method_order("entropy", ("minmax", "entropy", "percentile")) == [
        "entropy",
        "minmax",
        "percentile",
    ]
    assert method_order(None, ("minmax",)) == [None]


def test_search_keeps_the_most_sensitive_nodes_in_float_until_the_gate_passes() -> None:
    tried: list[Variant] = []

    def attempt(variant: Variant) -> Attempt:
        tried.append(variant)
        # Passes once n9 and n8 (the two worst) stay in float.
        ok = {"n9", "n8"} <= set(variant.nodes_to_exclude)
        return attempt_of(variant, 0.995 if ok else 0.9)

    first = attempt_of(Variant(), 0.8)
    chosen, log = run_search(
        first,
        candidates=CANDIDATES,
        methods=[None],
        attempt=attempt,
        sensitivity=SENSITIVITY.__getitem__,
        budget_s=100,
        clock=iter(range(1000)).__next__,
    )
    assert chosen.passed and chosen.variant.nodes_to_exclude == ("n9", "n8")
    assert [v.nodes_to_exclude for v in tried] == [("n9",), ("n9", "n8")]
    assert log.sensitivities[0].node == "n9" and not log.budget_exhausted


def test_other_calibration_methods_are_tried_first() -> None:
    def attempt(variant: Variant) -> Attempt:
        return attempt_of(variant, 0.995 if variant.calibration_method == "percentile" else 0.9)

    chosen, log = run_search(
        attempt_of(Variant("minmax"), 0.9),
        candidates=CANDIDATES,
        methods=["minmax", "entropy", "percentile"],
        attempt=attempt,
        sensitivity=SENSITIVITY.__getitem__,
        budget_s=100,
        clock=iter(range(1000)).__next__,
    )
    assert chosen.variant == Variant("percentile") and len(log.attempts) == 3
    assert log.sensitivities == []  # never needed


def test_the_per_tensor_method_comes_after_the_whole_graph_methods() -> None:
    """Static int8: when no single method passes, each activation gets its range from the
    method that quantizes it best, before any node is kept in float."""
    tried: list[str | None] = []

    def attempt(variant: Variant) -> Attempt:
        tried.append(variant.calibration_method)
        return attempt_of(variant, 0.995 if variant.calibration_method == PER_TENSOR else 0.9)

    chosen, log = run_search(
        attempt_of(Variant("minmax"), 0.9),
        candidates=CANDIDATES,
        methods=["minmax", "entropy", "percentile"],
        attempt=attempt,
        sensitivity=SENSITIVITY.__getitem__,
        budget_s=100,
        clock=iter(range(1000)).__next__,
    )
    assert tried == ["entropy", "percentile", PER_TENSOR]
    assert chosen.variant == Variant(PER_TENSOR) and log.sensitivities == []
    assert with_per_tensor([None]) == [None]  # dynamic int8 calibrates nothing
    assert with_per_tensor(["minmax", PER_TENSOR]) == ["minmax", PER_TENSOR]


def test_a_qoperator_twin_is_tried_only_for_a_passing_static_pick_on_amd64() -> None:
    passing = attempt_of(Variant("minmax"), 0.995)
    assert wants_qoperator("static-int8", "amd64", passing)
    assert not wants_qoperator("static-int8", "arm64", passing)  # not timed here: QDQ rule
    assert not wants_qoperator("static-int8", "gpu", passing)
    assert not wants_qoperator("dynamic-int8", "amd64", passing)
    assert not wants_qoperator("static-int8", "amd64", attempt_of(Variant("minmax"), 0.9))
    weight_only = attempt_of(Variant(weight_only=True), 0.995)
    assert not wants_qoperator("static-int8", "amd64", weight_only)
    twin = attempt_of(Variant("minmax", qoperator=True), 0.995)
    assert not wants_qoperator("static-int8", "amd64", twin)


def test_qoperator_replaces_qdq_only_when_measurably_faster() -> None:
    assert qoperator_faster(0.60, 0.50)
    assert not qoperator_faster(0.53, 0.56)  # YOLOv8n on amd64: QDQ fused, QOperator slower
    assert not qoperator_faster(0.60, 0.59)  # within the noise tolerance
    assert not qoperator_faster(None, 0.5) and not qoperator_faster(0.5, None)
    assert qoperator_note(0.53, 0.56, False) == (
        "QOperator 0.56x vs QDQ 0.53x fp32 latency: not measurably faster (>5%), QDQ kept"
    )
    assert qoperator_note(0.6, 0.5, True).endswith("QOperator measurably faster on this CPU")


def test_budget_stops_the_search_and_the_best_attempt_is_reported() -> None:
    clock = iter(range(1000)).__next__
    agreements = iter([0.85, 0.95, 0.9, 0.9, 0.9])

    def attempt(variant: Variant) -> Attempt:
        return attempt_of(variant, next(agreements))

    chosen, log = run_search(
        attempt_of(Variant(), 0.8),
        candidates=CANDIDATES,
        methods=[None],
        attempt=attempt,
        sensitivity=SENSITIVITY.__getitem__,
        budget_s=14,
        clock=clock,
    )
    assert log.budget_exhausted and not chosen.passed
    assert chosen.figures is not None
    assert chosen.figures.agreement == 0.95  # the best seen, not the last


def test_zero_budget_means_no_search() -> None:
    first = attempt_of(Variant(), 0.5)
    chosen, log = run_search(
        first,
        candidates=CANDIDATES,
        methods=[None],
        attempt=lambda v: (_ for _ in ()).throw(AssertionError("no attempts")),
        sensitivity=SENSITIVITY.__getitem__,
        budget_s=0,
    )
    assert chosen is first and log.attempts == [first]


def test_weight_only_probes_leave_half_the_budget_to_the_plan() -> None:
    """Probing stops at PROBE_SHARE of the budget; the plan then keeps the most sensitive of
    the probed nodes out of int8 until the gate passes."""
    candidates = [(f"w{i}", "Conv") for i in range(30)]
    sensitivity = {f"w{i}": float(i % 7) for i in range(30)}  # w6 and w13 are the worst probed
    tried: list[Variant] = []

    def attempt(variant: Variant) -> Attempt:
        tried.append(variant)
        ok = {"w6", "w13"} <= set(variant.nodes_to_exclude)
        return attempt_of(variant, 0.995 if ok else 0.9)

    log = SearchLog()
    first = attempt_of(Variant(weight_only=True), 0.9)
    chosen = weight_only_search(
        first,
        candidates=candidates,
        attempt=attempt,
        sensitivity=sensitivity.__getitem__,
        budget_s=20 / PROBE_SHARE,
        clock=iter(range(1000)).__next__,  # one tick per probe
        log=log,
    )
    assert len(log.weight_sensitivities) < len(candidates)  # probing stopped early
    assert log.budget_exhausted
    assert chosen.passed and set(chosen.variant.nodes_to_exclude) >= {"w6", "w13"}
    assert all(v.weight_only for v in tried)
    assert log.attempts[0] is first and log.attempts[-1] is chosen


def test_weight_only_plans_may_keep_most_nodes_because_they_stay_compressed() -> None:
    plan = exclusion_plan(ranked(10), 10, MIXED_MAX_FRACTION)
    assert [len(p) for p in plan] == [1, 2, 4, 8, 9]  # fp16 weights: never all ten

"""The autoscaler's decision, against every combination of what it can observe.

Factors: reading outcome (SUCCESSFUL, FAILED, INCONCLUSIVE, ERROR) x p95 band (above the
scale-up threshold, between, below the scale-down threshold) x last scale (none, a recent
scale-up, a recent scale-down, long ago) x "continuously below" streak (none, short, long
enough) x replicas at min / in between / at max x paused; then the same against the shed share
(requests refused at the in-flight cap: none read, 0, under the line, over it, no requests,
unreachable). Then clamping, step sizes, state round-trips, a simulated timeline of load rising
and falling, and properties that hold for any input.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgemodel_operator.api import SLO, Autoscaling
from edgemodel_operator.autoscaler import Decision, ScalerState, decide, shed_step, step_up
from edgemodel_operator.metrics import Outcome, Reading, classify_latency, classify_shed

SLO_ = SLO(latency_p95_ms=100.0)
POLICY = Autoscaling(
    enabled=True, interval_seconds=30, scale_up_at=0.9, scale_down_at=0.5, stabilization_seconds=300
)
UPPER, LOWER = 90.0, 50.0
MIN, MAX = 2, 8
NOW = 1_800_000_000.0

BANDS = {"above": 150.0, "between": 70.0, "below": 30.0}
POSITIONS = {"min": MIN, "middle": 4, "max": MAX}
LAST_SCALE = {
    "none": ScalerState(),
    "recent-up": ScalerState(last_scale_up_at=NOW - 10),
    "recent-down": ScalerState(last_scale_down_at=NOW - 10),
    "long-ago": ScalerState(last_scale_up_at=NOW - 1000, last_scale_down_at=NOW - 2000),
}
STREAKS = {"none": None, "short": NOW - 100, "long": NOW - 400}
OUTCOMES = list(Outcome)


def reading(outcome: Outcome, value: float) -> Reading:
    if outcome in (Outcome.SUCCESSFUL, Outcome.FAILED):
        return Reading(outcome, value, SLO_.latency_p95_ms, f"p95 {value}")
    what = "no latency samples" if outcome is Outcome.INCONCLUSIVE else "connection refused"
    return Reading(outcome, None, SLO_.latency_p95_ms, what)


def run(
    state: ScalerState,
    replicas: int,
    p95: Reading,
    paused: bool = False,
    now: float = NOW,
    shed: Reading | None = None,
) -> tuple[ScalerState, Decision]:
    return decide(state, POLICY, SLO_, replicas, MIN, MAX, p95, now, paused, shed)


@dataclass(frozen=True)
class Expected:
    replicas: int
    reason: str  # a fragment the reason must contain


def expected(
    outcome: Outcome, band: str, last: str, streak: str, position: str, paused: bool
) -> Expected:
    """The rules of the module docstring, written out case by case."""
    replicas = POSITIONS[position]
    if paused:
        return Expected(replicas, "paused")
    if outcome is Outcome.ERROR:
        return Expected(replicas, "Prometheus unreachable")
    if outcome is Outcome.INCONCLUSIVE:
        return Expected(replicas, "no data")
    if band == "between":
        return Expected(replicas, "within")
    if band == "above":
        if position == "max":
            return Expected(replicas, "at max")
        if last == "recent-up":  # a recent scale-down never delays a scale-up
            return Expected(replicas, "cooldown")
        # p95 150 vs upper 90 -> +67%: 2 -> +2 (capped at +100%), 4 -> +3.
        return Expected({2: 4, 4: 7}[replicas], "scale up")
    if position == "min":
        return Expected(replicas, "at min")
    if streak != "long":
        return Expected(replicas, "stabilizing")
    if last in ("recent-up", "recent-down"):
        return Expected(replicas, "cooldown")
    return Expected(replicas - 1, "scale down")


CASES = list(itertools.product(OUTCOMES, BANDS, LAST_SCALE, STREAKS, POSITIONS, [False, True]))


@pytest.mark.parametrize(("outcome", "band", "last", "streak", "position", "paused"), CASES)
def test_every_combination(
    outcome: Outcome, band: str, last: str, streak: str, position: str, paused: bool
) -> None:
    state = ScalerState(
        last_scale_up_at=LAST_SCALE[last].last_scale_up_at,
        last_scale_down_at=LAST_SCALE[last].last_scale_down_at,
        below_since=STREAKS[streak],
    )
    replicas = POSITIONS[position]
    new_state, decision = run(state, replicas, reading(outcome, BANDS[band]), paused)
    want = expected(outcome, band, last, streak, position, paused)

    assert decision.replicas == want.replicas
    assert want.reason in decision.reason, decision.reason
    assert MIN <= decision.replicas <= MAX
    action = {1: "up", -1: "down", 0: "hold"}[
        (decision.replicas > replicas) - (decision.replicas < replicas)
    ]
    assert decision.action == action

    # State: scale times move only on a scale; the streak lives only while data says "below".
    has_data = outcome in (Outcome.SUCCESSFUL, Outcome.FAILED)
    assert new_state.last_scale_up_at == (
        NOW if decision.action == "up" else state.last_scale_up_at
    )
    assert new_state.last_scale_down_at == (
        NOW if decision.action == "down" else state.last_scale_down_at
    )
    if not paused and has_data and band == "below":
        assert new_state.below_since == (state.below_since or NOW)
    else:
        assert new_state.below_since is None


def test_case_count() -> None:
    assert len(CASES) == 4 * 3 * 4 * 3 * 3 * 2


# ------------------------------------------------------------------ shedding

SHED_LINE = POLICY.scale_up_at_shed_fraction
SHEDS: dict[str, Reading | None] = {
    "not-read": None,  # autoscaling reads it; a pass without it must behave as before
    "zero": classify_shed(0.0, SHED_LINE),
    "under": classify_shed(0.005, SHED_LINE),
    "over": classify_shed(0.2, SHED_LINE),
    "no-requests": classify_shed(math.nan, SHED_LINE),
    "unreachable": Reading(Outcome.ERROR, None, SHED_LINE, "connection refused"),
}


def expected_with_shed(
    shed: str, outcome: Outcome, band: str, last: str, streak: str, position: str
) -> Expected:
    """The shed rules (module docstring, rules 4 and 7) over the latency rules."""
    replicas = POSITIONS[position]
    if outcome is Outcome.ERROR:
        return Expected(replicas, "Prometheus unreachable")
    if shed == "over":
        if position == "max":
            return Expected(replicas, "at max")
        if last == "recent-up":
            return Expected(replicas, "cooldown")
        # 20 % shed: replicas x 0.2 / 0.8 rounded up: 2 -> +1, 4 -> +1
        return Expected(replicas + 1, "shed 20.0% of requests > 1.0%")
    has_data = outcome in (Outcome.SUCCESSFUL, Outcome.FAILED)
    if shed == "under" and has_data and band == "below":
        return Expected(replicas, "not scaling down while requests are refused")
    return expected(outcome, band, last, streak, position, False)


SHED_CASES = list(
    itertools.product(SHEDS, OUTCOMES, BANDS, LAST_SCALE, ["none", "long"], POSITIONS)
)


@pytest.mark.parametrize(("shed", "outcome", "band", "last", "streak", "position"), SHED_CASES)
def test_every_combination_with_the_shed_share(
    shed: str, outcome: Outcome, band: str, last: str, streak: str, position: str
) -> None:
    state = replace(LAST_SCALE[last], below_since=STREAKS[streak])
    replicas = POSITIONS[position]
    new_state, decision = run(state, replicas, reading(outcome, BANDS[band]), shed=SHEDS[shed])
    want = expected_with_shed(shed, outcome, band, last, streak, position)
    assert decision.replicas == want.replicas
    assert want.reason in decision.reason, decision.reason
    assert new_state.last_scale_up_at == (
        NOW if decision.action == "up" else state.last_scale_up_at
    )
    if decision.action == "down":
        assert shed in ("not-read", "zero", "no-requests", "unreachable")
    if shed in ("under", "over"):
        assert new_state.below_since is None  # refusing requests is never "continuously low"


def test_shed_case_count() -> None:
    assert len(SHED_CASES) == 6 * 4 * 3 * 4 * 2 * 3


@pytest.mark.parametrize(
    ("replicas", "shed", "step"),
    [
        (1, 0.02, 1),  # just over the line: at least +1
        (2, 0.5, 2),  # half refused: double
        (3, 0.25, 1),  # 3 x 0.25 / 0.75 = 1
        (4, 0.6, 4),  # 4 x 1.5 = 6, capped at +100% = 4
        (10, 0.6, 4),  # capped at +4
        (0, 0.5, 1),
        (3, 1.0, 3),  # everything refused: as much as allowed
    ],
)
def test_shed_step(replicas: int, shed: float, step: int) -> None:
    assert shed_step(replicas, shed) == step


def test_a_target_that_refuses_everything_scales_up_though_its_p95_has_no_data() -> None:
    no_p95 = reading(Outcome.INCONCLUSIVE, 0.0)
    _, decision = run(ScalerState(), 2, no_p95, shed=classify_shed(1.0, SHED_LINE))
    assert (decision.action, decision.replicas) == ("up", 4)
    assert "shed 100.0% of requests > 1.0%" in decision.reason


def test_shedding_within_the_p95_band_scales_up_and_paused_still_holds() -> None:
    fast = reading(Outcome.SUCCESSFUL, BANDS["between"])
    over = classify_shed(0.1, SHED_LINE)
    _, decision = run(ScalerState(), 4, fast, shed=over)
    assert (decision.action, decision.replicas) == ("up", 5)
    _, paused = run(ScalerState(), 4, fast, paused=True, shed=over)
    assert paused.action == "hold" and paused.reason == "paused"


# ------------------------------------------------------------------ clamping


@pytest.mark.parametrize("band", BANDS)
@pytest.mark.parametrize("paused", [False, True])
@pytest.mark.parametrize(
    ("replicas", "clamped", "side"), [(0, MIN, "below min"), (12, MAX, "above max")]
)
def test_out_of_bounds_replicas_are_clamped_first(
    band: str, paused: bool, replicas: int, clamped: int, side: str
) -> None:
    _, decision = run(ScalerState(), replicas, reading(Outcome.SUCCESSFUL, BANDS[band]), paused)
    assert f"replicas {replicas} {side} {clamped}: clamped to {clamped}" in decision.reason
    if band == "above" and not paused and clamped == MIN:
        # The rules continue from the clamped count: 2 at 150 ms -> 4.
        assert decision.replicas == 4 and "scale up" in decision.reason
    else:
        assert decision.replicas == clamped
    assert decision.action == ("up" if replicas < clamped else "down")


def test_max_below_min_means_exactly_min() -> None:
    _, decision = decide(
        ScalerState(), POLICY, SLO_, 5, 3, 1, reading(Outcome.SUCCESSFUL, 30.0), NOW, False
    )
    assert decision.replicas == 3


def test_zero_min_scales_up_from_zero() -> None:
    _, decision = decide(
        ScalerState(), POLICY, SLO_, 0, 0, 5, reading(Outcome.FAILED, 500.0), NOW, False
    )
    assert (decision.replicas, decision.action) == (1, "up")


# ------------------------------------------------------------------ step sizes


@pytest.mark.parametrize(
    ("replicas", "p95", "step"),
    [
        (1, 91.0, 1),  # just over: at least +1
        (1, 1000.0, 1),  # +100% of 1
        (2, 180.0, 2),  # p95 2x the threshold: double
        (3, 100.0, 1),  # +11%: ceil(0.33) = 1
        (10, 100.0, 2),  # +11% of 10: ceil(1.1) = 2
        (10, 180.0, 4),  # +100% wanted, capped at +4
        (50, 1000.0, 4),
        (0, 500.0, 1),
        (6, math.inf, 4),  # +Inf bucket: as much as allowed
    ],
)
def test_step_up(replicas: int, p95: float, step: int) -> None:
    assert step_up(replicas, p95, UPPER) == step


def test_step_up_never_passes_max() -> None:
    _, decision = decide(
        ScalerState(), POLICY, SLO_, 7, 1, 8, reading(Outcome.FAILED, 900.0), NOW, False
    )
    assert decision.replicas == 8


@pytest.mark.parametrize("value", [UPPER, LOWER])
def test_thresholds_themselves_are_between(value: float) -> None:
    _, decision = run(ScalerState(below_since=NOW - 1000), 4, reading(Outcome.SUCCESSFUL, value))
    assert decision.action == "hold" and "within" in decision.reason


def test_cooldown_ends_after_the_interval() -> None:
    state = ScalerState(last_scale_up_at=NOW - 30)
    _, decision = run(state, 4, reading(Outcome.FAILED, 150.0))
    assert decision.action == "up"
    _, decision = run(ScalerState(last_scale_up_at=NOW - 29.5), 4, reading(Outcome.FAILED, 150.0))
    assert decision.action == "hold" and "cooldown" in decision.reason


def test_zero_stabilization_scales_down_on_first_sight() -> None:
    policy = Autoscaling(enabled=True, stabilization_seconds=0)
    _, decision = decide(
        ScalerState(), policy, SLO_, 4, 1, 8, reading(Outcome.SUCCESSFUL, 1.0), NOW, False
    )
    assert decision.action == "down"


# ------------------------------------------------------------------ state storage


@pytest.mark.parametrize(
    "state",
    [
        ScalerState(),
        ScalerState(last_scale_up_at=NOW - 5),
        ScalerState(last_scale_up_at=1.5, last_scale_down_at=2.5, below_since=3.5),
    ],
)
def test_state_round_trips_through_json(state: ScalerState) -> None:
    assert ScalerState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


@pytest.mark.parametrize(
    "raw",
    [None, {}, {"lastScaleUpAt": "yesterday"}, {"belowSince": True}, {"lastScaleDownAt": None}],
)
def test_unreadable_state_is_forgotten(raw: dict[str, object] | None) -> None:
    assert ScalerState.from_dict(raw) == ScalerState()


# ------------------------------------------------------------------ a timeline


def test_timeline_load_rises_then_falls() -> None:
    """p95 = 40 ms x load / replicas; the operator runs every 10 s and restarts every pass.

    Load jumps at t=100 (p95 200 ms): the first scale-up comes at the first pass after the
    jump and the target is reached within two intervals. Load falls at t=600: nothing scales
    down before 300 s of continuous low p95, then one replica per interval down to min. A
    Prometheus outage in the middle of the low phase restarts the stabilization.
    """
    slo = SLO(latency_p95_ms=100.0)
    policy = POLICY
    replicas, state = 2, ScalerState()
    events: list[tuple[float, str, int]] = []
    for t in range(0, 2400, 10):
        load = 10.0 if 100 <= t < 600 else (2.0 if t < 100 else 1.0)
        outage = 950 <= t < 990
        if outage:
            p95 = Reading(Outcome.ERROR, None, 100.0, "connection refused")
        else:
            p95 = classify_latency(40.0 * load / replicas, slo.latency_p95_ms)
        now = 1_800_000_000.0 + t
        state, decision = decide(state, policy, slo, replicas, 1, 10, p95, now, False)
        state = ScalerState.from_dict(json.loads(json.dumps(state.to_dict())))  # a restart
        if decision.action != "hold":
            events.append((t, decision.action, decision.replicas))
        replicas = decision.replicas
        if outage:
            assert decision.action == "hold" and "Prometheus unreachable" in decision.reason

    ups = [e for e in events if e[1] == "up"]
    downs = [e for e in events if e[1] == "down"]
    assert ups == [(100, "up", 4), (130, "up", 5)]  # 2 -> 4 at once, 4 -> 5 after the cooldown
    assert all(t >= 600 for t, _, _ in downs)
    # Low from t=600: first step down 300 s later, then one per interval; the outage
    # (950..980) breaks the streak, which restarts at 990, so the next step waits until 1290.
    assert [t for t, _, _ in downs] == [900, 930, 1290, 1320]
    assert replicas == 1


# ------------------------------------------------------------------ properties


@settings(max_examples=300, deadline=None)
@given(
    outcome=st.sampled_from(OUTCOMES),
    value=st.one_of(st.floats(min_value=0, max_value=1000), st.just(math.nan), st.just(math.inf)),
    replicas=st.integers(0, 20),
    low=st.integers(0, 10),
    span=st.integers(0, 10),
    up_ago=st.one_of(st.none(), st.floats(0, 1000)),
    down_ago=st.one_of(st.none(), st.floats(0, 1000)),
    below_ago=st.one_of(st.none(), st.floats(0, 1000)),
    paused=st.booleans(),
    shed_value=st.one_of(st.none(), st.just(math.nan), st.floats(0, 1)),
)
def test_properties(
    outcome: Outcome,
    value: float,
    replicas: int,
    low: int,
    span: int,
    up_ago: float | None,
    down_ago: float | None,
    below_ago: float | None,
    paused: bool,
    shed_value: float | None,
) -> None:
    high = low + span
    shed = None if shed_value is None else classify_shed(shed_value, SHED_LINE)
    saturated = shed is not None and shed.outcome is Outcome.FAILED
    has_data = outcome in (Outcome.SUCCESSFUL, Outcome.FAILED)
    p95 = Reading(outcome, value if has_data else None, 100.0, "x")
    state = ScalerState(
        None if up_ago is None else NOW - up_ago,
        None if down_ago is None else NOW - down_ago,
        None if below_ago is None else NOW - below_ago,
    )
    new_state, decision = decide(state, POLICY, SLO_, replicas, low, high, p95, NOW, paused, shed)
    start = min(high, max(low, replicas))
    assert low <= decision.replicas <= high
    assert decision.reason
    moved = decision.replicas - start
    if paused or outcome is Outcome.ERROR:
        assert moved == 0  # never while paused, never blind
    if not saturated and (not has_data or math.isnan(value)):
        assert moved == 0  # no p95 and nothing refused: nothing to act on
    if moved > 0:
        assert value > UPPER or saturated
        assert moved <= min(4, max(1, start))
    if moved < 0:
        assert value < LOWER and moved == -1
        assert shed is None or not shed.has_value or shed.value == 0.0
        assert new_state.below_since is not None and NOW - new_state.below_since >= 300
    # Idempotent at the same instant: a second pass right after changes nothing more.
    _, again = decide(new_state, POLICY, SLO_, decision.replicas, low, high, p95, NOW, paused, shed)
    assert again.replicas == decision.replicas and again.action == "hold"

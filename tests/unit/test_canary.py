"""Canary rollout decisions: the traffic split, the analysis, the step machine and the guard.

`step` is tested against every combination of analysis outcome x position (first, middle,
last step) x consecutive failures before (none, one short of the threshold, at it) x whether
the step has run a full interval x whether an analysis is due x paused; `guard` likewise over
its factors. Restart safety: a state round-tripped through status (to_dict / from_dict, via
JSON) behaves exactly like the one kept in memory.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgemodel_operator.api import SLO
from edgemodel_operator.canary import (
    HISTORY_KEPT,
    Check,
    RolloutState,
    Verdict,
    analyse,
    guard,
    split,
    step,
)
from edgemodel_operator.metrics import Outcome, Reading

NOW = 1_800_000_000.0
STEPS = [10, 50, 100]
INTERVAL = 30
THRESHOLD = 3
SLO_ = SLO(latency_p95_ms=100.0, max_error_rate=0.01)


def r(outcome: Outcome, value: float | None = None) -> Reading:
    return Reading(outcome, value, None, f"{outcome.value.lower()} {value}")


# ------------------------------------------------------------------ split


@pytest.mark.parametrize(
    ("total", "percent", "expected"),
    [
        (10, 0, (10, 0)),
        (10, 10, (9, 1)),
        (10, 50, (5, 5)),
        (10, 100, (0, 10)),
        (3, 10, (2, 1)),  # 0.3 rounds to 0, but a canary needs a replica
        (3, 50, (1, 2)),  # 1.5 rounds half up
        (4, 99, (1, 3)),  # 3.96 rounds to 4, but stable keeps one until 100
        (2, 1, (1, 1)),
        (1, 10, (0, 1)),  # one replica cannot be split: the canary's once percent > 0
        (1, 0, (1, 0)),
        (1, 100, (0, 1)),
        (7, 25, (5, 2)),
    ],
)
def test_split(total: int, percent: int, expected: tuple[int, int]) -> None:
    assert split(total, percent) == expected


@pytest.mark.parametrize(("total", "percent"), [(0, 10), (-1, 10), (5, -1), (5, 101)])
def test_split_rejects_impossible_input(total: int, percent: int) -> None:
    with pytest.raises(ValueError):
        split(total, percent)


@given(total=st.integers(1, 1000), percent=st.integers(0, 100))
def test_split_properties(total: int, percent: int) -> None:
    stable, canary = split(total, percent)
    assert stable + canary == total and stable >= 0 and canary >= 0
    assert (canary >= 1) == (percent > 0)
    if percent == 100:
        assert stable == 0
    elif total >= 2:
        assert stable >= 1
    if total >= 2 and 0 < percent < 100:
        assert abs(canary - total * percent / 100) <= max(1.0, 0.5 + 1e-9)
    if percent < 100:
        assert split(total, percent + 1)[1] >= canary  # more percent, never fewer replicas


# ------------------------------------------------------------------ analyse

CANARY_P95 = {
    "fast": r(Outcome.SUCCESSFUL, 80.0),
    "slow": r(Outcome.FAILED, 150.0),
    "none": r(Outcome.INCONCLUSIVE),
    "error": r(Outcome.ERROR),
}
CANARY_ERRORS = {
    "ok": r(Outcome.SUCCESSFUL, 0.001),
    "high": r(Outcome.FAILED, 0.05),
    "none": r(Outcome.INCONCLUSIVE),
    "error": r(Outcome.ERROR),
}
STABLE_P95 = {
    "fast": r(Outcome.SUCCESSFUL, 50.0),  # 150 > 1.2 x 50: the canary is to blame
    "slow": r(Outcome.FAILED, 140.0),  # 150 <= 1.2 x 140: the whole fleet is slow
    "none": r(Outcome.INCONCLUSIVE),
    "error": r(Outcome.ERROR),
}


def expected_latency(canary: str, stable: str) -> Outcome:
    if canary == "error":
        return Outcome.ERROR
    if canary == "none":
        return Outcome.INCONCLUSIVE
    if canary == "fast":
        return Outcome.SUCCESSFUL
    return {
        "fast": Outcome.FAILED,
        "slow": Outcome.SUCCESSFUL,
        "none": Outcome.FAILED,  # no baseline: the SLO alone decides
        "error": Outcome.ERROR,  # over the SLO and the baseline unknown: do not blame blind
    }[stable]


def expected_errors(errors: str) -> Outcome:
    return {
        "ok": Outcome.SUCCESSFUL,
        "high": Outcome.FAILED,
        "none": Outcome.INCONCLUSIVE,
        "error": Outcome.ERROR,
    }[errors]


@pytest.mark.parametrize(
    ("canary", "errors", "stable"), list(itertools.product(CANARY_P95, CANARY_ERRORS, STABLE_P95))
)
def test_analyse_every_combination(canary: str, errors: str, stable: str) -> None:
    result = analyse(CANARY_P95[canary], CANARY_ERRORS[errors], STABLE_P95[stable], SLO_)
    both = {expected_latency(canary, stable), expected_errors(errors)}
    for outcome in (Outcome.FAILED, Outcome.ERROR, Outcome.INCONCLUSIVE, Outcome.SUCCESSFUL):
        if outcome in both:
            assert result.outcome is outcome, result.detail
            break
    assert result.detail


def test_analyse_rejudges_values_against_the_slo() -> None:
    # The input readings' own outcomes do not matter, only their values (and ERROR).
    mislabelled = Reading(Outcome.SUCCESSFUL, 500.0, 1000.0, "judged against another SLO")
    result = analyse(mislabelled, CANARY_ERRORS["ok"], STABLE_P95["fast"], SLO_)
    assert result.outcome is Outcome.FAILED
    assert result.value == 500.0 and result.threshold == pytest.approx(60.0)


def test_analyse_explains_a_slow_fleet() -> None:
    result = analyse(CANARY_P95["slow"], CANARY_ERRORS["ok"], STABLE_P95["slow"], SLO_)
    assert result.outcome is Outcome.SUCCESSFUL and "fleet is slow" in result.detail


# ------------------------------------------------------------------ step: every combination

POSITIONS = {"first": 0, "middle": 1, "last": 2}
COUNTS = {"none": 0, "one-short": THRESHOLD - 1, "at": THRESHOLD}
OUTCOMES = list(Outcome)


def state_for(position: str, count: str, step_long: bool, due: bool) -> RolloutState:
    return RolloutState(
        canary_revision="new",
        previous_stable="old",
        step_index=POSITIONS[position],
        step_started_at=NOW - (60 if step_long else 10),
        failed_checks=COUNTS[count],
        last_analysis_at=NOW - (INTERVAL if due else 10),
        history=(Check(NOW - 100, Outcome.SUCCESSFUL, "earlier"),),
    )


STEP_CASES = list(
    itertools.product(OUTCOMES, POSITIONS, COUNTS, [False, True], [False, True], [False, True])
)


@pytest.mark.parametrize(("outcome", "position", "count", "step_long", "due", "paused"), STEP_CASES)
def test_step_every_combination(
    outcome: Outcome, position: str, count: str, step_long: bool, due: bool, paused: bool
) -> None:
    state = state_for(position, count, step_long, due)
    index = POSITIONS[position]
    analysis = r(outcome, 1.0 if outcome in (Outcome.SUCCESSFUL, Outcome.FAILED) else None)
    new, verdict = step(state, STEPS, analysis, NOW, INTERVAL, THRESHOLD, paused)

    if paused or not due:
        assert new == state  # nothing recorded, nothing counted
        assert verdict == Verdict("hold", verdict.reason, STEPS[index])
        assert ("paused" if paused else "next analysis") in verdict.reason
        return

    # An analysis was taken: recorded once, at now.
    assert new.last_analysis_at == NOW
    assert new.history == (*state.history, Check(NOW, outcome, analysis.detail))
    if outcome is Outcome.FAILED:
        failed = COUNTS[count] + 1
        assert new.failed_checks == failed
        if failed >= THRESHOLD:
            assert verdict == Verdict("rollback", verdict.reason, 0, "old")
            assert new.rolled_back_at == NOW and "consecutive failed checks" in verdict.reason
        else:
            assert verdict.action == "hold" and verdict.weight == STEPS[index]
            assert f"failed check {failed} of {THRESHOLD}" in verdict.reason
            assert new.rolled_back_at is None
        assert new.step_index == index and new.step_started_at == state.step_started_at
    elif outcome in (Outcome.INCONCLUSIVE, Outcome.ERROR):
        assert verdict.action == "hold" and verdict.weight == STEPS[index]
        assert ("no data" if outcome is Outcome.INCONCLUSIVE else "unreachable") in verdict.reason
        assert new.failed_checks == state.failed_checks  # neither reset nor counted
        assert (new.step_index, new.step_started_at) == (index, state.step_started_at)
        assert new.rolled_back_at is None and new.promoted_at is None
    else:
        assert new.failed_checks == 0
        assert new.rolled_back_at is None
        if not step_long:
            assert verdict.action == "hold" and "healthy" in verdict.reason
            assert new.step_index == index and new.promoted_at is None
        elif position == "last":
            assert verdict == Verdict("promote", verdict.reason, 100)
            assert new.promoted_at == NOW and new.step_index == index
        else:
            assert verdict == Verdict("advance", verdict.reason, STEPS[index + 1])
            assert new.step_index == index + 1 and new.step_started_at == NOW
            assert new.promoted_at is None


def test_step_case_count() -> None:
    assert len(STEP_CASES) == 4 * 3 * 3 * 2 * 2 * 2


# ------------------------------------------------------------------ step: sequences


def drive(
    outcomes: list[Outcome], every: float = 10.0, restart: bool = False
) -> tuple[RolloutState, list[tuple[float, Verdict]]]:
    state = RolloutState.start("new", "old", NOW)
    verdicts: list[tuple[float, Verdict]] = []
    for i, outcome in enumerate(outcomes):
        now = NOW + every * (i + 1)
        state, verdict = step(state, STEPS, r(outcome, 1.0), now, INTERVAL, THRESHOLD, False)
        if restart:
            state = RolloutState.from_dict(json.loads(json.dumps(state.to_dict())))
        verdicts.append((now - NOW, verdict))
    return state, verdicts


def test_healthy_rollout_advances_once_per_interval_then_promotes() -> None:
    state, verdicts = drive([Outcome.SUCCESSFUL] * 12)
    moves = [(t, v.action, v.weight) for t, v in verdicts if v.action != "hold"]
    assert moves[:3] == [(30, "advance", 50), (60, "advance", 100), (90, "promote", 100)]
    assert all(v.action == "promote" for _, v in verdicts[8:])  # terminal verdict repeats
    assert state.promoted_at == NOW + 90


def test_only_consecutive_failures_roll_back() -> None:
    F, S, N, E = Outcome.FAILED, Outcome.SUCCESSFUL, Outcome.INCONCLUSIVE, Outcome.ERROR
    # One analysis per call (every = interval). F F S resets; N and E in between do not.
    _, verdicts = drive([F, F, S, F, N, E, F, N, F], every=INTERVAL)
    actions = [v.action for _, v in verdicts]
    assert actions == [
        "hold",
        "hold",
        "advance",
        "hold",
        "hold",
        "hold",
        "hold",
        "hold",
        "rollback",
    ]
    assert verdicts[-1][1].rollback_to == "old"


def test_calls_within_the_interval_do_not_count() -> None:
    state = RolloutState.start("new", "old", NOW)
    failed = r(Outcome.FAILED, 500.0)
    for t in range(30, 60):  # thirty calls in one interval: one analysis
        state, verdict = step(state, STEPS, failed, NOW + t, INTERVAL, THRESHOLD, False)
    assert state.failed_checks == 1 and verdict.action == "hold"


def test_rollback_is_terminal_and_repeats() -> None:
    state, _ = drive([Outcome.FAILED] * 3, every=INTERVAL)
    assert state.rolled_back_at is not None
    for outcome in Outcome:
        again, verdict = step(state, STEPS, r(outcome, 1.0), NOW + 1000, INTERVAL, THRESHOLD, True)
        assert again == state and verdict.action == "rollback" and verdict.rollback_to == "old"


def test_shortened_steps_keep_the_rollout_on_the_last_step() -> None:
    state = replace(state_for("last", "none", True, True), step_index=5)
    _, verdict = step(state, STEPS, r(Outcome.SUCCESSFUL, 1.0), NOW, INTERVAL, THRESHOLD, False)
    assert verdict.action == "promote"


def test_empty_steps_are_a_programming_error() -> None:
    with pytest.raises(ValueError):
        step(RolloutState(), [], r(Outcome.SUCCESSFUL, 1.0), NOW, INTERVAL, THRESHOLD, False)


def test_history_is_bounded() -> None:
    state, _ = drive([Outcome.INCONCLUSIVE] * (HISTORY_KEPT + 5), every=INTERVAL)
    assert len(state.history) == HISTORY_KEPT
    assert state.history[-1].at == NOW + INTERVAL * (HISTORY_KEPT + 5)


# ------------------------------------------------------------------ restart safety


@pytest.mark.parametrize(
    "outcomes",
    [
        [Outcome.SUCCESSFUL] * 12,
        [Outcome.FAILED, Outcome.FAILED, Outcome.SUCCESSFUL] * 4,
        [Outcome.FAILED, Outcome.ERROR, Outcome.INCONCLUSIVE, Outcome.FAILED] * 3,
        [Outcome.SUCCESSFUL, Outcome.ERROR] * 8,
    ],
)
@pytest.mark.parametrize("every", [10.0, 30.0])
def test_restart_every_pass_changes_nothing(outcomes: list[Outcome], every: float) -> None:
    kept, in_memory = drive(outcomes, every)
    restored, restarted = drive(outcomes, every, restart=True)
    assert restarted == in_memory
    assert restored == kept


def test_restart_mid_analysis_continues_at_the_same_step_and_count() -> None:
    state = RolloutState.start("new", "old", NOW)
    state, _ = step(state, STEPS, r(Outcome.SUCCESSFUL, 1.0), NOW + 30, INTERVAL, THRESHOLD, False)
    state, _ = step(state, STEPS, r(Outcome.FAILED, 500.0), NOW + 60, INTERVAL, THRESHOLD, False)
    state, _ = step(state, STEPS, r(Outcome.FAILED, 500.0), NOW + 90, INTERVAL, THRESHOLD, False)
    assert (state.step_index, state.failed_checks) == (1, 2)

    stored = json.dumps(state.to_dict())  # the operator dies here
    restored = RolloutState.from_dict(json.loads(stored))
    assert restored == state
    # Inside the interval after the restart: still nothing counted twice.
    same, verdict = step(
        restored, STEPS, r(Outcome.FAILED, 1.0), NOW + 100, INTERVAL, THRESHOLD, False
    )
    assert same == restored and verdict.action == "hold" and verdict.weight == 50
    _, verdict = step(
        restored, STEPS, r(Outcome.FAILED, 1.0), NOW + 120, INTERVAL, THRESHOLD, False
    )
    assert verdict.action == "rollback"


@pytest.mark.parametrize(
    "raw",
    [
        None,
        {},
        {"stepIndex": "two", "failedChecks": -4, "promotedAt": "soon", "history": "none"},
        {"history": [{"at": 1, "outcome": "Maybe"}, "junk", {"outcome": "Failed"}]},
    ],
)
def test_unreadable_state_falls_back_to_defaults(raw: dict[str, object] | None) -> None:
    assert RolloutState.from_dict(raw) == RolloutState()


# ------------------------------------------------------------------ guard

WITHIN = {"early": NOW - 60, "over": NOW - 300}  # promoted_at, guard 300 s


def promoted(when: str, count: str, due: bool, previous: str) -> RolloutState:
    return RolloutState(
        canary_revision="new",
        previous_stable=previous,
        step_index=2,
        promoted_at=WITHIN[when],
        failed_checks=COUNTS[count],
        last_analysis_at=NOW - (INTERVAL if due else 5),
    )


GUARD_CASES = list(
    itertools.product(OUTCOMES, WITHIN, COUNTS, [False, True], [False, True], ["old", ""])
)


@pytest.mark.parametrize(("outcome", "when", "count", "due", "paused", "previous"), GUARD_CASES)
def test_guard_every_combination(
    outcome: Outcome, when: str, count: str, due: bool, paused: bool, previous: str
) -> None:
    state = promoted(when, count, due, previous)
    reading = r(outcome, 1.0 if outcome in (Outcome.SUCCESSFUL, Outcome.FAILED) else None)
    new, verdict = guard(state, reading, NOW, 300, INTERVAL, THRESHOLD, paused)

    if when == "over":
        assert new == state and verdict.action == "hold" and "guard over" in verdict.reason
        return
    if paused or not due:
        assert new == state and verdict == Verdict("hold", verdict.reason, 100)
        return
    assert new.last_analysis_at == NOW and len(new.history) == 1
    failed = COUNTS[count] + 1
    if outcome is Outcome.FAILED and failed >= THRESHOLD and previous:
        assert verdict == Verdict("rollback", verdict.reason, 0, "old")
        assert new.rolled_back_at == NOW and "guard" in verdict.reason
        return
    assert verdict.action == "hold" and verdict.weight == 100 and new.rolled_back_at is None
    if outcome is Outcome.FAILED:
        assert new.failed_checks == failed
        if failed >= THRESHOLD:
            assert "no previous stable revision" in verdict.reason
    elif outcome is Outcome.SUCCESSFUL:
        assert new.failed_checks == 0
    else:
        assert new.failed_checks == state.failed_checks


def test_guard_case_count() -> None:
    assert len(GUARD_CASES) == 4 * 2 * 3 * 2 * 2 * 2


def test_guard_without_promotion_does_nothing() -> None:
    state = RolloutState.start("new", "old", NOW)
    new, verdict = guard(state, r(Outcome.FAILED, 1.0), NOW + 60, 300, INTERVAL, 1, False)
    assert new == state and verdict.action == "hold"


def test_promotion_then_guard_rolls_back_a_bad_revision() -> None:
    state, verdicts = drive([Outcome.SUCCESSFUL] * 9)
    assert verdicts[-1][1].action == "promote"
    promoted_at = state.promoted_at
    assert promoted_at is not None and state.failed_checks == 0
    actions = []
    for i in range(1, 5):
        now = promoted_at + INTERVAL * i
        state, verdict = guard(
            state, r(Outcome.FAILED, 900.0), now, 300, INTERVAL, THRESHOLD, False
        )
        state = RolloutState.from_dict(json.loads(json.dumps(state.to_dict())))
        actions.append(verdict.action)
    assert actions == ["hold", "hold", "rollback", "rollback"]
    assert state.rolled_back_at == promoted_at + 3 * INTERVAL
    # Once rolled back, the step machine agrees (and keeps saying so).
    _, verdict = step(state, STEPS, r(Outcome.SUCCESSFUL, 1.0), NOW + 9999, INTERVAL, 3, False)
    assert verdict.action == "rollback" and verdict.rollback_to == "old"


def test_guard_active() -> None:
    state = RolloutState(promoted_at=NOW)
    assert state.guard_active(NOW + 299, 300) and not state.guard_active(NOW + 300, 300)
    assert not replace(state, rolled_back_at=NOW + 1).guard_active(NOW + 2, 300)
    assert not RolloutState().guard_active(NOW, 300)

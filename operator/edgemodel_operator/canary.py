"""Owns the canary rollout and rollback decisions: traffic split, analysis, step, guard.

Pure (principle 1): no kopf, no client, no clock; `now` is wall-clock epoch seconds passed
in, because `RolloutState` is kept in `status.rollout` and must survive an operator restart.

- `split(total, percent)`: the replicas of each revision; traffic weight = replica ratio
  (a Service spreads requests evenly over ready endpoints).
- `analyse(...)`: one check of the canary against the SLO and the stable baseline.
- `step(...)`: the rollout's next move: hold, advance a step, promote, or roll back.
- `guard(...)`: after promotion, roll back a revision that fails within the guard window.

Principle 4 throughout: only FAILED counts toward the failure threshold, and failures must be
consecutive (a SUCCESSFUL check resets the count). INCONCLUSIVE (no data) and ERROR
(Prometheus unreachable) hold: they neither advance nor roll back nor touch the count, so a
monitoring outage can never promote a bad revision nor roll back a good one.

Terminal verdicts repeat: once rolled back (or promoted) the same verdict comes back on every
call, so an action lost on the way to the API server is simply requested again (principle 2).
The caller posts an Event only when the returned state differs from the one it passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from edgemodel_operator.api import SLO
from edgemodel_operator.readings import (
    Outcome,
    Reading,
    classify_error_rate,
    classify_latency,
    classify_vs_baseline,
)

# A canary whose p95 is over the SLO still passes when it is within 20% of the stable
# revision's p95 measured at the same time: then the fleet is slow (load, a noisy node), not
# the canary, and rolling back would not help.
BASELINE_TOLERANCE = 0.2
HISTORY_KEPT = 10
DETAIL_KEPT = 200  # characters of a check's detail kept in status

VerdictAction = Literal["hold", "advance", "promote", "rollback"]


# ------------------------------------------------------------------ traffic split


def split(total_replicas: int, percent: int) -> tuple[int, int]:
    """(stable, canary) replicas for a canary weight of `percent`, summing to `total_replicas`.

    Rounded to the nearest replica, with at least one canary replica whenever percent > 0 and
    at least one stable replica whenever percent < 100 and there are two or more replicas; at
    100 everything is canary. A single replica cannot be split: it is the canary's once
    percent > 0 (a caller wanting a true split surges, e.g. `split(total + 1, percent)`).
    """
    if total_replicas < 1:
        raise ValueError(f"total_replicas must be at least 1, got {total_replicas}")
    if not 0 <= percent <= 100:
        raise ValueError(f"percent must be within 0..100, got {percent}")
    if percent == 0:
        return total_replicas, 0
    if percent == 100:
        return 0, total_replicas
    canary = (total_replicas * percent + 50) // 100  # round half up, integers only
    canary = max(1, min(canary, total_replicas - 1)) if total_replicas >= 2 else 1
    return total_replicas - canary, canary


# ------------------------------------------------------------------ analysis


def _latency_check(canary: Reading, stable: Reading, slo: SLO, tolerance: float) -> Reading:
    if canary.outcome is Outcome.ERROR:
        return Reading(Outcome.ERROR, None, slo.latency_p95_ms, f"canary p95: {canary.detail}")
    against_slo = classify_latency(canary.value, slo.latency_p95_ms)
    if against_slo.outcome is not Outcome.FAILED:
        return replace(against_slo, detail=f"canary {against_slo.detail}")
    # Over the SLO: the stable baseline decides whether the canary is to blame.
    if stable.outcome is Outcome.ERROR:
        return Reading(
            Outcome.ERROR,
            canary.value,
            slo.latency_p95_ms,
            f"canary {against_slo.detail}, stable baseline unknown: {stable.detail}",
        )
    if not stable.has_value:
        return replace(against_slo, detail=f"canary {against_slo.detail} (no stable baseline)")
    baseline = classify_vs_baseline(canary, stable, tolerance)
    if baseline.outcome is Outcome.FAILED:
        return Reading(
            Outcome.FAILED,
            canary.value,
            baseline.threshold,
            f"canary {against_slo.detail} and {baseline.detail}",
        )
    return Reading(
        Outcome.SUCCESSFUL,
        canary.value,
        baseline.threshold,
        f"canary {against_slo.detail} but {baseline.detail} (the fleet is slow, not the canary)",
    )


def _error_check(canary_errors: Reading, slo: SLO) -> Reading:
    if canary_errors.outcome is Outcome.ERROR:
        return Reading(
            Outcome.ERROR, None, slo.max_error_rate, f"canary errors: {canary_errors.detail}"
        )
    checked = classify_error_rate(canary_errors.value, slo.max_error_rate)
    return replace(checked, detail=f"canary {checked.detail}")


def analyse(
    canary_p95: Reading,
    canary_errors: Reading,
    stable_p95: Reading,
    slo: SLO,
    tolerance: float = BASELINE_TOLERANCE,
) -> Reading:
    """One analysis of the canary: its p95 and error rate against the SLO and the baseline.

    Latency fails when canary p95 > max(SLO, stable p95 x (1 + tolerance)); without a stable
    value (no stable traffic, e.g. at 100%) the SLO alone decides, but an ERROR reading the
    stable makes an over-SLO canary ERROR (do not blame it blind). Errors fail when the
    canary's error rate > SLO maxErrorRate. Combined: FAILED if any check failed (a failure
    seen on real data is real even if the other metric is missing), else ERROR, else
    INCONCLUSIVE, else SUCCESSFUL. The inputs' own outcomes are ignored except ERROR; values
    are re-judged against `slo` so callers may pass readings classified against anything.
    """
    checks = (
        _latency_check(canary_p95, stable_p95, slo, tolerance),
        _error_check(canary_errors, slo),
    )
    for outcome in (Outcome.FAILED, Outcome.ERROR, Outcome.INCONCLUSIVE):
        hits = [c for c in checks if c.outcome is outcome]
        if hits:
            return Reading(
                outcome, hits[0].value, hits[0].threshold, "; ".join(c.detail for c in hits)
            )
    latency = checks[0]
    return Reading(
        Outcome.SUCCESSFUL, latency.value, latency.threshold, "; ".join(c.detail for c in checks)
    )


# ------------------------------------------------------------------ state


@dataclass(frozen=True)
class Check:
    """One analysis result, as kept in the rollout history."""

    at: float
    outcome: Outcome
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "outcome": self.outcome.value, "detail": self.detail}


@dataclass(frozen=True)
class RolloutState:
    """What the rollout must remember between passes (principle 3), kept in status.rollout."""

    canary_revision: str = ""
    # The stable revision when the canary started: the rollback target, before and after
    # promotion (then it is the revision the promoted one replaced).
    previous_stable: str = ""
    step_index: int = 0
    step_started_at: float | None = None
    failed_checks: int = 0  # consecutive FAILED analyses
    last_analysis_at: float | None = None
    promoted_at: float | None = None
    rolled_back_at: float | None = None
    history: tuple[Check, ...] = ()

    @classmethod
    def start(cls, canary_revision: str, previous_stable: str, now: float) -> RolloutState:
        """A rollout at its first step; the first analysis comes one interval from now."""
        return cls(
            canary_revision=canary_revision,
            previous_stable=previous_stable,
            step_started_at=now,
            last_analysis_at=now,
        )

    def guard_active(self, now: float, guard_s: int) -> bool:
        """Promoted, not rolled back, and still inside the post-promotion guard window."""
        return (
            self.promoted_at is not None
            and self.rolled_back_at is None
            and now - self.promoted_at < guard_s
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "canaryRevision": self.canary_revision,
            "previousStable": self.previous_stable,
            "stepIndex": self.step_index,
            "failedChecks": self.failed_checks,
            "history": [c.to_dict() for c in self.history],
        }
        for key, value in (
            ("stepStartedAt", self.step_started_at),
            ("lastAnalysisAt", self.last_analysis_at),
            ("promotedAt", self.promoted_at),
            ("rolledBackAt", self.rolled_back_at),
        ):
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> RolloutState:
        """Tolerates a missing or hand-edited status: unreadable fields take their defaults."""
        raw = raw or {}
        history: list[Check] = []
        items = raw.get("history")
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, Mapping):
                continue
            at = _number(item.get("at"))
            try:
                outcome = Outcome(str(item.get("outcome")))
            except ValueError:
                continue
            if at is not None:
                history.append(Check(at, outcome, str(item.get("detail") or "")))
        return cls(
            canary_revision=str(raw.get("canaryRevision") or ""),
            previous_stable=str(raw.get("previousStable") or ""),
            step_index=_count(raw.get("stepIndex")),
            step_started_at=_number(raw.get("stepStartedAt")),
            failed_checks=_count(raw.get("failedChecks")),
            last_analysis_at=_number(raw.get("lastAnalysisAt")),
            promoted_at=_number(raw.get("promotedAt")),
            rolled_back_at=_number(raw.get("rolledBackAt")),
            history=tuple(history[-HISTORY_KEPT:]),
        )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return max(0, value)


@dataclass(frozen=True)
class Verdict:
    """The rollout's next move, the canary's traffic percent after it, and why.

    `rollback_to` names the revision to return to on "rollback" (empty otherwise).
    """

    action: VerdictAction
    reason: str
    weight: int
    rollback_to: str = ""


def _record(state: RolloutState, analysis: Reading, now: float) -> RolloutState:
    check = Check(now, analysis.outcome, analysis.detail[:DETAIL_KEPT])
    return replace(state, last_analysis_at=now, history=(*state.history, check)[-HISTORY_KEPT:])


def _rolled_back(state: RolloutState) -> Verdict:
    return Verdict(
        "rollback",
        f"rolled back at {state.rolled_back_at:.0f} to {state.previous_stable or '-'}",
        0,
        state.previous_stable,
    )


def _not_due(state: RolloutState, now: float, interval_s: int) -> float | None:
    """Seconds until the next analysis is due, or None when it is due now."""
    last = state.last_analysis_at
    if last is not None and now - last < interval_s:
        return interval_s - (now - last)
    return None


# ------------------------------------------------------------------ decisions


def step(
    state: RolloutState,
    steps: Sequence[int],
    analysis: Reading,
    now: float,
    interval_s: int,
    failure_threshold: int,
    paused: bool,
) -> tuple[RolloutState, Verdict]:
    """The rollout's next move at its current step, given this pass's `analysis`.

    At most one analysis counts per `interval_s` (calls in between hold and change nothing).
    FAILED: the consecutive count rises; at `failure_threshold` -> rollback. SUCCESSFUL: the
    count resets and, once the step has run for `interval_s`, the rollout advances (from the
    last step: promote). INCONCLUSIVE / ERROR: hold, count unchanged. Paused: hold.
    """
    if not steps:
        raise ValueError("steps must not be empty")
    if state.rolled_back_at is not None:
        return state, _rolled_back(state)
    if state.promoted_at is not None:
        return state, Verdict("promote", f"promoted at {state.promoted_at:.0f}", 100)
    # A spec edit may have shortened the steps under a running rollout: stay on the last one.
    index = min(max(state.step_index, 0), len(steps) - 1)
    percent = steps[index]
    where = f"step {index + 1}/{len(steps)} ({percent}%)"
    if paused:
        return state, Verdict("hold", f"paused at {where}", percent)
    wait = _not_due(state, now, interval_s)
    if wait is not None:
        return state, Verdict("hold", f"{where}: next analysis in {wait:.0f}s", percent)

    state = _record(replace(state, step_index=index), analysis, now)
    threshold = max(1, failure_threshold)
    if analysis.outcome is Outcome.FAILED:
        failed = state.failed_checks + 1
        state = replace(state, failed_checks=failed)
        if failed >= threshold:
            state = replace(state, rolled_back_at=now)
            return state, Verdict(
                "rollback",
                f"{where}: {failed} consecutive failed checks (threshold {threshold}): "
                f"{analysis.detail}",
                0,
                state.previous_stable,
            )
        return state, Verdict(
            "hold", f"{where}: failed check {failed} of {threshold}: {analysis.detail}", percent
        )
    if analysis.outcome is Outcome.INCONCLUSIVE:
        return state, Verdict("hold", f"{where}: no data ({analysis.detail})", percent)
    if analysis.outcome is Outcome.ERROR:
        return state, Verdict(
            "hold", f"{where}: Prometheus unreachable ({analysis.detail})", percent
        )

    state = replace(state, failed_checks=0)
    started = state.step_started_at if state.step_started_at is not None else now
    if state.step_started_at is None:
        state = replace(state, step_started_at=now)
    lasted = now - started
    if lasted < interval_s:
        return state, Verdict(
            "hold", f"{where}: healthy, step has run {lasted:.0f}s of {interval_s}s", percent
        )
    if index == len(steps) - 1:
        # The guard counts its own failures from zero.
        state = replace(state, promoted_at=now, failed_checks=0)
        return state, Verdict("promote", f"{where}: healthy, promoting ({analysis.detail})", 100)
    state = replace(state, step_index=index + 1, step_started_at=now)
    return state, Verdict(
        "advance",
        f"{where}: healthy, advancing to step {index + 2}/{len(steps)} ({steps[index + 1]}%)",
        steps[index + 1],
    )


def guard(
    state: RolloutState,
    reading: Reading,
    now: float,
    guard_s: int,
    interval_s: int,
    failure_threshold: int,
    paused: bool,
) -> tuple[RolloutState, Verdict]:
    """After promotion: roll back to `state.previous_stable` when the promoted revision fails.

    Within `guard_s` of `state.promoted_at`, `failure_threshold` consecutive FAILED readings
    (one per `interval_s`) -> rollback; SUCCESSFUL resets the count; INCONCLUSIVE / ERROR and
    paused hold. After the window, or with nothing promoted, or with no previous stable
    revision to return to, it holds and changes nothing.
    """
    if state.rolled_back_at is not None:
        return state, _rolled_back(state)
    if state.promoted_at is None:
        return state, Verdict("hold", "nothing promoted: no post-promotion guard", 0)
    if now - state.promoted_at >= guard_s:
        return state, Verdict("hold", f"post-promotion guard over ({guard_s}s)", 100)
    left = f"guard {guard_s - (now - state.promoted_at):.0f}s left"
    if paused:
        return state, Verdict("hold", f"paused ({left})", 100)
    wait = _not_due(state, now, interval_s)
    if wait is not None:
        return state, Verdict("hold", f"{left}: next check in {wait:.0f}s", 100)

    state = _record(state, reading, now)
    threshold = max(1, failure_threshold)
    if reading.outcome is Outcome.FAILED:
        failed = state.failed_checks + 1
        state = replace(state, failed_checks=failed)
        if failed < threshold:
            return state, Verdict(
                "hold", f"{left}: failed check {failed} of {threshold}: {reading.detail}", 100
            )
        if not state.previous_stable:
            return state, Verdict(
                "hold",
                f"{left}: {failed} consecutive failed checks but no previous stable revision to "
                f"roll back to: {reading.detail}",
                100,
            )
        state = replace(state, rolled_back_at=now)
        return state, Verdict(
            "rollback",
            f"promoted revision failed {failed} consecutive checks within the "
            f"{guard_s}s guard: {reading.detail}",
            0,
            state.previous_stable,
        )
    if reading.outcome is Outcome.SUCCESSFUL:
        return replace(state, failed_checks=0), Verdict("hold", f"{left}: healthy", 100)
    what = "no data" if reading.outcome is Outcome.INCONCLUSIVE else "Prometheus unreachable"
    return state, Verdict("hold", f"{left}: {what} ({reading.detail})", 100)

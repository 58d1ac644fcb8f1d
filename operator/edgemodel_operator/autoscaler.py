"""Owns the replica-scaling decision of one target: `decide(state, ..., p95, now, paused, shed)`.

Pure (principles 1 and 6): no kopf, no client, no clock. The caller reads the target's p95
from Prometheus (a `metrics.Reading`), passes the wall-clock `now` (epoch seconds, because the
state is stored in status and must survive an operator restart), applies the replica count
the `Decision` names, and stores the returned `ScalerState` in status (`to_dict`).

Rules, in order (the decision's reason names the one that decided):
1. Replicas outside [min, max] are clamped first (the spec's bounds are the user's explicit
   instruction and the lifecycle enforces them anyway); the rules below continue from there.
2. Paused: no autoscaling at all.
3. Prometheus unreachable (ERROR): hold. Never scale down blind, and a gap breaks the
   "continuously below" streak.
4. Saturated: more than scaleUpAtShedFraction of the target's requests were shed at the
   in-flight cap over the window (the `shed` reading FAILED): scale up by the shed share
   (replicas x shed / (1 - shed), rounded up: the replicas that would have served the refused
   requests), at least +1, at most +100% and at most +4, never above max; the same cooldown as
   rule 6. Whatever the p95 says: a saturated target's served requests stay fast because the
   others are refused, and when it refuses everything the p95 has no data at all.
5. No p95 to act on (INCONCLUSIVE: no data): hold, and the streak breaks.
6. p95 > scaleUpAt x SLO: scale up by the overshoot (replicas x (p95 / upper - 1), rounded up),
   at least +1, at most +100% and at most +4 per decision, never above max; then a cooldown of
   intervalSeconds before the next scale-up, so the new pods' effect is measured first.
7. p95 < scaleDownAt x SLO continuously for stabilizationSeconds, and intervalSeconds since the
   last scale of either direction, and nothing shed in the window: -1 per decision, never below
   min. Scaling down is slow on purpose: one replica too many costs money, one too few breaks
   the SLO. Any shedding at all (even under the scale-up line) holds and breaks the streak.
8. Otherwise (between the thresholds): hold.
A scale-down never delays a scale-up: reacting to overload is never held back by a shrink.

"SLO" is the one the reading was classified against (its threshold): latencyP95Ms for request
latency, or for a generative model the token SLO furthest over its line (time to first token
or inter-token latency, see objectives.py), so token SLOs scale by the same rules.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from edgemodel_operator.api import SLO, Autoscaling
from edgemodel_operator.readings import Outcome, Reading

MAX_STEP_UP = 4

ScaleAction = Literal["up", "down", "hold"]


@dataclass(frozen=True)
class ScalerState:
    """What the autoscaler must remember between passes (principle 3): times, epoch seconds."""

    last_scale_up_at: float | None = None
    last_scale_down_at: float | None = None
    # When p95 was first seen below scaleDownAt x SLO in the current unbroken streak.
    below_since: float | None = None

    @property
    def last_scale_at(self) -> float | None:
        times = [t for t in (self.last_scale_up_at, self.last_scale_down_at) if t is not None]
        return max(times) if times else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.last_scale_up_at is not None:
            out["lastScaleUpAt"] = self.last_scale_up_at
        if self.last_scale_down_at is not None:
            out["lastScaleDownAt"] = self.last_scale_down_at
        if self.below_since is not None:
            out["belowSince"] = self.below_since
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> ScalerState:
        """Tolerates a missing or hand-edited status: unreadable fields are forgotten."""
        raw = raw or {}
        return cls(
            last_scale_up_at=_time(raw.get("lastScaleUpAt")),
            last_scale_down_at=_time(raw.get("lastScaleDownAt")),
            below_since=_time(raw.get("belowSince")),
        )


def _time(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True)
class Decision:
    """The replica count to run, what it means relative to the input, and why."""

    replicas: int
    action: ScaleAction
    reason: str


def _ms(value: float) -> str:
    return f"{value:.4g} ms"


def step_up(replicas: int, p95_ms: float, upper_ms: float) -> int:
    """How many replicas to add: proportional to the overshoot, in [1, min(replicas, 4)]."""
    wanted = math.ceil(replicas * (p95_ms / upper_ms - 1.0)) if math.isfinite(p95_ms) else 4
    return max(1, min(wanted, max(1, replicas), MAX_STEP_UP))


def shed_step(replicas: int, shed: float) -> int:
    """How many replicas to add for a shed share: replicas x shed / (1 - shed) rounded up, in
    [1, min(replicas, 4)] (everything shed: the most)."""
    wanted = math.ceil(replicas * shed / (1.0 - shed)) if shed < 1.0 else MAX_STEP_UP
    return max(1, min(wanted, max(1, replicas), MAX_STEP_UP))


def decide(
    state: ScalerState,
    policy: Autoscaling,
    slo: SLO,
    replicas: int,
    min_replicas: int,
    max_replicas: int,
    p95: Reading,
    now: float,
    paused: bool,
    shed: Reading | None = None,
) -> tuple[ScalerState, Decision]:
    """The next replica count for one target, and the state to store; see the module rules."""
    low = max(0, min_replicas)
    high = max(low, max_replicas)  # the API rejects max < min; were it to slip through: min
    start = min(high, max(low, replicas))
    notes: list[str] = []
    if start != replicas:
        side = f"below min {low}" if replicas < low else f"above max {high}"
        notes.append(f"replicas {replicas} {side}: clamped to {start}")

    def result(new_state: ScalerState, count: int, why: str) -> tuple[ScalerState, Decision]:
        action: ScaleAction = "up" if count > replicas else "down" if count < replicas else "hold"
        return new_state, Decision(count, action, "; ".join([*notes, why]))

    if paused:
        # The streak is observation-based; nothing is observed on our behalf while paused.
        return result(replace(state, below_since=None), start, "paused")

    if p95.outcome is Outcome.ERROR:
        return result(
            replace(state, below_since=None), start, f"hold: Prometheus unreachable ({p95.detail})"
        )
    if shed is not None and shed.outcome is Outcome.FAILED and shed.value is not None:
        return result(*_saturated(state, policy, shed.value, start=start, high=high, now=now))
    value = p95.value
    if p95.outcome is Outcome.INCONCLUSIVE or value is None or math.isnan(value):
        return result(replace(state, below_since=None), start, f"hold: no data ({p95.detail})")
    # The SLO the reading was classified against: latencyP95Ms for request latency, a token
    # SLO for a generative model (objectives.py); the lines scale with it the same way.
    line_ms = p95.threshold or slo.latency_p95_ms
    upper = policy.scale_up_at * line_ms
    lower = policy.scale_down_at * line_ms
    if value > upper:
        return result(
            *_above(state, policy, value=value, upper=upper, start=start, high=high, now=now)
        )
    shed_share = shed.value if shed is not None and shed.has_value else None
    if value < lower and shed_share:
        return result(
            replace(state, below_since=None),
            start,
            f"hold: p95 {_ms(value)} < {policy.scale_down_at:g} x SLO, but {shed_share:.1%} of "
            "requests shed: not scaling down while requests are refused",
        )
    if value < lower:
        return result(
            *_below(state, policy, value=value, lower=lower, start=start, low=low, now=now)
        )
    return result(
        replace(state, below_since=None),
        start,
        f"hold: p95 {_ms(value)} within [{_ms(lower)}, {_ms(upper)}]",
    )


def _above(
    state: ScalerState,
    policy: Autoscaling,
    *,
    value: float,
    upper: float,
    start: int,
    high: int,
    now: float,
) -> tuple[ScalerState, int, str]:
    """p95 over the scale-up line: (state, replicas, why) — up by `step_up`, or hold."""
    over = f"p95 {_ms(value)} > {policy.scale_up_at:g} x SLO = {_ms(upper)}"
    return _up(state, policy, over, step_up(start, value, upper), start=start, high=high, now=now)


def _saturated(
    state: ScalerState, policy: Autoscaling, shed: float, *, start: int, high: int, now: float
) -> tuple[ScalerState, int, str]:
    """More than scaleUpAtShedFraction shed: (state, replicas, why) — up by `shed_step`, or
    hold."""
    over = f"shed {shed:.1%} of requests > {policy.scale_up_at_shed_fraction:.1%}"
    return _up(state, policy, over, shed_step(start, shed), start=start, high=high, now=now)


def _up(
    state: ScalerState,
    policy: Autoscaling,
    over: str,
    step: int,
    *,
    start: int,
    high: int,
    now: float,
) -> tuple[ScalerState, int, str]:
    """A scale-up `over` asks for: +`step`, or hold at max or in the scale-up cooldown (rules
    4 and 6 share it); the streak breaks either way."""
    state = replace(state, below_since=None)
    if start >= high:
        return state, start, f"hold: {over}, at max {high} replicas"
    interval = policy.interval_seconds
    last_up = state.last_scale_up_at
    if last_up is not None and now - last_up < interval:
        wait = interval - (now - last_up)
        return state, start, f"hold: {over}, cooldown after scale-up ({wait:.0f}s left)"
    count = min(high, start + step)
    return replace(state, last_scale_up_at=now), count, f"scale up {start}->{count}: {over}"


def _below(
    state: ScalerState,
    policy: Autoscaling,
    *,
    value: float,
    lower: float,
    start: int,
    low: int,
    now: float,
) -> tuple[ScalerState, int, str]:
    """p95 under the scale-down line: (state, replicas, why) — down by one once stable."""
    since = state.below_since if state.below_since is not None else now
    state = replace(state, below_since=since)
    under = f"p95 {_ms(value)} < {policy.scale_down_at:g} x SLO = {_ms(lower)}"
    if start <= low:
        return state, start, f"hold: {under}, at min {low} replicas"
    below_for = now - since
    if below_for < policy.stabilization_seconds:
        return (
            state,
            start,
            f"hold: {under}, stabilizing ({below_for:.0f}s of {policy.stabilization_seconds}s)",
        )
    interval = policy.interval_seconds
    last = state.last_scale_at
    if last is not None and now - last < interval:
        wait = interval - (now - last)
        return state, start, f"hold: {under}, cooldown after scaling ({wait:.0f}s left)"
    count = start - 1
    return (
        replace(state, last_scale_down_at=now),
        count,
        f"scale down {start}->{count}: {under} for {below_for:.0f}s",
    )

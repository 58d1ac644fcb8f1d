"""Owns each target's replica count for a pass: what runs now, autoscaled, within bounds.

Decided once per pass, before any rollout strategy, so a pass makes one scaling decision per
target whatever it then does with the revisions (autoscaler.py holds the rules).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgemodel_operator import autoscaler, canary
from edgemodel_operator.api import Target
from edgemodel_operator.lifecycle.model import Desired, Event, Observed, State
from edgemodel_operator.readings import Outcome, Reading


@dataclass
class Scaling:
    """Replicas per target from now on, the autoscaler's memory, and what it decided."""

    counts: dict[str, int] = field(default_factory=dict)
    scalers: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, autoscaler.Decision] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)


def no_data(detail: str) -> Reading:
    """An INCONCLUSIVE reading standing for one that was not taken."""
    return Reading(Outcome.INCONCLUSIVE, None, None, detail)


@dataclass(frozen=True)
class _Inputs:
    desired: Desired
    observed: Observed
    stable: str
    rollout: canary.RolloutState
    now: float


def decide(desired: Desired, observed: Observed, state: State, now: float) -> Scaling:
    """Every target's replica count for this pass (autoscaled when the spec asks for it)."""
    out = Scaling(scalers=dict(state.rollout.get("scalers") or {}))
    rollout = canary.RolloutState.from_dict(state.rollout.get("canary"))
    inputs = _Inputs(desired, observed, state.stable_revision, rollout, now)
    for target in desired.spec.targets:
        out.counts[target.name] = _total(inputs, target, out)
    return out


def _current(inputs: _Inputs, target: Target) -> int | None:
    """What the target runs now: the stable revision's replicas (plus a live canary's)."""
    rev, stable, rollout = inputs.desired.revision, inputs.stable, inputs.rollout
    deployments = {(d.target, d.revision): d for d in inputs.observed.deployments}
    stable_dep = deployments.get((target.name, stable)) if stable else None
    rev_dep = deployments.get((target.name, rev))
    canary_live = rollout.canary_revision == rev and rollout.rolled_back_at is None
    if stable_dep is not None and rev_dep is not None and rev != stable and canary_live:
        return stable_dep.replicas + rev_dep.replicas
    dep = stable_dep or rev_dep
    return dep.replicas if dep is not None else None


def _total(inputs: _Inputs, target: Target, out: Scaling) -> int:
    """The target's replicas from now on: autoscaled and kept within bounds."""
    spec = inputs.desired.spec
    current = _current(inputs, target)
    count = clip(target.replicas.min, target.replicas.upper, current)
    if not (spec.autoscaling.enabled and spec.slo is not None):
        return count
    reading = inputs.observed.p95.get(target.name) or no_data("p95 not queried")
    scaler, decision = autoscaler.decide(
        autoscaler.ScalerState.from_dict(out.scalers.get(target.name)),
        spec.autoscaling,
        spec.slo,
        current or count,
        target.replicas.min,
        target.replicas.upper,
        reading,
        inputs.now,
        spec.paused,
        inputs.observed.shed.get(target.name),
    )
    out.scalers[target.name] = scaler.to_dict()
    out.notes[target.name] = decision
    if decision.action != "hold":
        kind = "ScaledUp" if decision.action == "up" else "ScaledDown"
        out.events.append(
            Event(
                "Normal",
                kind,
                f"target {target.name}: {current} -> {decision.replicas} replicas: "
                f"{decision.reason}",
            )
        )
    return decision.replicas


def clip(low: int, high: int, current: int | None) -> int:
    """Keep what the autoscaler chose, clipped to the spec's bounds; start at the minimum."""
    if current is None:
        return low
    return max(low, min(high, current))

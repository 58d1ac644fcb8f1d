"""Owns the EdgeModel lifecycle decision: `transition(state, desired, observed, now)`.

Pure: no kopf, no client, no clock (an import-linter contract holds it to that) — the
handler gathers what it observed, calls this, and applies the actions it returns, the last
of which says when to look again. Only what is observed moves the lifecycle forward: a Job
is "done" when the cluster says it succeeded, a revision is stable when its Deployments are
available; a lost action is simply asked for again on the next pass (idempotent apply).

Per revision: one compression Job per artifact variant (skipped when the store already has
that artifact) -> one Deployment per target -> when every target is available the revision
becomes stable and the previous revision's Deployments are removed. The phases and the edges
between them are declared in `phases` (docs/architecture.md, "Lifecycle"); one module per
concern does the work:

- compression: artifacts per variant, Jobs, failures and their retries (failures: kinds);
- scaling: each target's replicas for the pass (autoscaler.py decides);
- strategies: hold / replacement / steady (+ guard) / after rollback / canary (+ analysis
  limits, analysis.py) fill a plan of wanted replicas;
- workloads: the diff from wanted replicas to Apply/Delete, and per-target Services;
- status: conditions, target rows, the phase's final word.
"""

from __future__ import annotations

from datetime import datetime

from edgemodel_operator.api import Phase
from edgemodel_operator.lifecycle import compression, scaling, status, strategies, workloads
from edgemodel_operator.lifecycle.model import (
    Action,
    Apply,
    Delete,
    DeploymentObs,
    Desired,
    Event,
    JobObs,
    Observed,
    Requeue,
    State,
)
from edgemodel_operator.lifecycle.phases import EDGES, ENTRY, TERMINAL, allowed
from edgemodel_operator.lifecycle.phases import REQUEUE_SECONDS as REQUEUE_SECONDS

__all__ = [
    "EDGES",
    "ENTRY",
    "REQUEUE_SECONDS",
    "TERMINAL",
    "Action",
    "Apply",
    "Delete",
    "DeploymentObs",
    "Desired",
    "Event",
    "JobObs",
    "Observed",
    "Phase",
    "Requeue",
    "State",
    "allowed",
    "requeue_after",
    "transition",
]


def transition(
    state: State, desired: Desired, observed: Observed, now: datetime
) -> tuple[State, list[Action]]:
    """The next state and the actions that move the cluster toward `desired`.

    The last action is always a `Requeue`: when to look again if no watch event comes first.
    """
    stamp, ts = now.strftime(compression.STAMP), now.timestamp()
    artifacts = compression.compress(state.revisions, desired, observed, now)
    replicas = scaling.decide(desired, observed, state, ts)
    world = workloads.World(desired, observed, artifacts.revisions, replicas.counts)
    here = strategies.Pass(world, state, ts, stamp)
    plan = strategies.choose(here, artifacts)
    new_state, status_events = status.summarise(here, artifacts, plan, replicas)
    actions: list[Action] = [
        *artifacts.actions,
        *workloads.housekeeping(desired, observed),
        *replicas.events,
        *workloads.diff(world, plan.wanted),
        *plan.events,
        *status_events,
    ]
    actions.append(requeue_after(new_state, desired, artifacts.retry_in))
    return new_state, actions


def requeue_after(state: State, desired: Desired, retry_in: float | None) -> Requeue:
    """When to look again: the phase's poll, the SLO loop's interval, the end of a backoff."""
    spec = desired.spec
    delay, why = REQUEUE_SECONDS.get(state.phase, 30.0), f"phase {state.phase}"
    if spec.slo is not None and spec.autoscaling.enabled:
        # The SLO loop runs on its own clock: each analysis or scaling interval, a pass.
        delay, why = _sooner(delay, why, float(spec.autoscaling.interval_seconds), "autoscaling")
    canary_phases = (Phase.PROGRESSING, Phase.READY, Phase.ROLLING_BACK)
    if spec.slo is not None and state.rollout.get("canary") and state.phase in canary_phases:
        interval = float(spec.rollout.analysis_interval_seconds)
        delay, why = _sooner(delay, why, interval, "canary analysis")
    if retry_in is not None:
        delay, why = _sooner(delay, why, max(1.0, retry_in), "compression retry")
    return Requeue(delay, why)


def _sooner(delay: float, why: str, other: float, other_why: str) -> tuple[float, str]:
    return (other, other_why) if other < delay else (delay, why)

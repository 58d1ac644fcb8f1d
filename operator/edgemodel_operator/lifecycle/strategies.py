"""Owns the rollout strategies: which revisions run where this pass, and the phase that gives.

One function per situation, chosen by `choose` from what compression found and what status
remembers (docs/architecture.md, "Lifecycle"):

- hold: a revision still compressing (or failed) — the stable revision, if any, keeps serving;
- replacement: the first revision, or a new one without an SLO to judge a canary by — bring it
  up in full beside what serves now, then switch (blue/green), replacing in place a target
  whose new pods find no room beside the old ones;
- steady: the desired revision is the stable one — run it, and watch it with the
  post-promotion guard while the guard window lasts;
- after rollback: the desired revision failed its canary — the stable one serves until the
  spec changes;
- canary: the new revision beside the stable one, traffic weight = replica ratio, stepped by
  canary.step, stalled by the analysis limits (analysis.py).

Strategies only fill a `Plan`; workloads.py turns its wanted replicas into actions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgemodel_operator import canary
from edgemodel_operator.api import Phase
from edgemodel_operator.lifecycle.analysis import AnalysisLimits
from edgemodel_operator.lifecycle.compression import Compression
from edgemodel_operator.lifecycle.model import Event, State
from edgemodel_operator.lifecycle.scaling import no_data
from edgemodel_operator.lifecycle.workloads import Wanted, World


@dataclass
class Plan:
    """A strategy's decision: the phase, what runs, what it said, what status must remember."""

    phase: Phase
    stable: str
    rollout: canary.RolloutState
    limits: AnalysisLimits
    last_rollback: Mapping[str, Any] | None
    wanted: Wanted = field(default_factory=Wanted)
    events: list[Event] = field(default_factory=list)
    progressing: tuple[bool, str, str] | None = None
    stalled: tuple[str, str] | None = None  # (reason, message): the canary analysis stalled


@dataclass(frozen=True)
class Pass:
    """What a strategy decides from: the world, status as it was, and the time as values."""

    world: World
    state: State
    now: float
    stamp: str

    @property
    def rev(self) -> str:
        return self.world.desired.revision


def choose(here: Pass, compression: Compression) -> Plan:
    """The plan for this pass."""
    state, spec = here.state, here.world.desired.spec
    raw = state.rollout.get("canary")
    plan = Plan(
        phase=state.phase,
        stable=state.stable_revision,
        rollout=canary.RolloutState.from_dict(raw),
        limits=AnalysisLimits.from_dict(raw),
        last_rollback=state.last_rollback,
    )
    stable, rev = plan.stable, here.rev
    rolled_back = plan.rollout.canary_revision if plan.rollout.rolled_back_at is not None else ""
    if compression.failures:
        reason = "AccuracyGateFailed" if compression.gate_failed else "CompressionFailed"
        hold(here, plan, Phase.FAILED, (False, reason, f"revision {rev} cannot be deployed"))
    elif not compression.complete:
        progressing = (True, "Compressing", f"revision {rev} is being compressed")
        hold(here, plan, Phase.COMPRESSING, progressing)
    elif not stable or (stable != rev and spec.slo is None):
        replacement(here, plan)
    elif stable == rev:
        steady(here, plan)
    elif rev == rolled_back:
        after_rollback(here, plan)
    else:
        canary_rollout(here, plan)
    return plan


def hold(here: Pass, plan: Plan, phase: Phase, progressing: tuple[bool, str, str]) -> None:
    """The desired revision cannot run yet: whatever is stable keeps serving."""
    plan.phase, plan.progressing = phase, progressing
    if plan.stable and plan.stable != here.rev:
        plan.wanted.run_all(plan.stable, here.world)


def replacement(here: Pass, plan: Plan) -> None:
    """Bring the revision up in full beside what serves now, then switch (blue/green)."""
    world, rev, stable = here.world, here.rev, plan.stable
    plan.wanted.run_all(rev, world)
    if world.available(rev):
        if stable != rev:
            plan.events.append(
                Event(
                    "Normal",
                    "RevisionStable",
                    f"revision {rev} is available on every target"
                    + (f"; replacing {stable}" if stable else ""),
                )
            )
            plan.wanted.remove(stable)
        plan.stable = rev
        plan.phase = Phase.READY
        plan.progressing = (False, "RevisionStable", f"revision {rev} is stable")
        return
    plan.phase = Phase.DEPLOYING
    plan.progressing = (
        True,
        "Deploying",
        f"revision {rev}: waiting for every target to be available",
    )
    if stable and stable != rev:
        for target in world.desired.spec.targets:
            blocked, event = world.surge_blocked(stable, target)
            if event is not None:
                plan.events.append(event)
            plan.wanted.run(stable, target, 0 if blocked else world.counts[target.name])


def steady(here: Pass, plan: Plan) -> None:
    """The desired revision is stable: run it (scaling it is not a deployment: it stays
    Ready, or Degraded below its minimum, decided with availability in status.py), and
    guard it after a promotion (or finish the guard's rollback)."""
    rev, spec = here.rev, here.world.desired.spec
    plan.wanted.run_all(rev, here.world)
    plan.phase = Phase.READY
    plan.progressing = (False, "RevisionStable", f"revision {rev} is stable")
    guard_s = spec.rollout.post_promotion_guard_seconds
    rollout = plan.rollout
    # A guard rollback whose previous revision was not yet available goes on until it is.
    unfinished = rollout.rolled_back_at is not None
    if rollout.canary_revision == rev and (unfinished or rollout.guard_active(here.now, guard_s)):
        guard(here, plan)


def guard(here: Pass, plan: Plan) -> None:
    """After promotion: roll back to the previous revision when the promoted one fails."""
    world, rev = here.world, here.rev
    spec = world.desired.spec
    plan.rollout, verdict = canary.guard(
        plan.rollout,
        world.observed.guard or no_data("guard not measured"),
        here.now,
        spec.rollout.post_promotion_guard_seconds,
        spec.rollout.analysis_interval_seconds,
        spec.rollout.failure_threshold,
        spec.paused,
    )
    if verdict.action != "rollback" or not verdict.rollback_to:
        return
    previous = verdict.rollback_to
    plan.wanted.run_all(previous, world)
    if world.available(previous):
        plan.wanted.remove(rev)
        plan.stable = previous
        plan.phase = Phase.READY
    else:
        plan.phase = Phase.ROLLING_BACK
    last = plan.last_rollback
    if not last or last.get("from") != rev:
        plan.last_rollback = {
            "from": rev,
            "to": previous,
            "reason": verdict.reason,
            "time": here.stamp,
        }
        plan.events.append(
            Event(
                "Warning",
                "RolledBack",
                f"post-promotion guard: {rev} -> {previous}: {verdict.reason}",
            )
        )
    plan.progressing = (False, "RolledBack", f"rolled back {rev} to {previous}: {verdict.reason}")


def after_rollback(here: Pass, plan: Plan) -> None:
    """This revision failed its canary: keep serving the stable one until the spec changes."""
    world, rev, stable = here.world, here.rev, plan.stable
    plan.wanted.run_all(stable, world)
    plan.wanted.remove(rev)
    plan.phase = Phase.READY if world.available(stable) else Phase.ROLLING_BACK
    why = (plan.last_rollback or {}).get("reason", "")
    plan.progressing = (False, "RolledBack", f"revision {rev} was rolled back to {stable}: {why}")


def canary_rollout(here: Pass, plan: Plan) -> None:
    """The new revision beside the stable one, traffic weight = replica ratio."""
    world, rev, stable = here.world, here.rev, plan.stable
    desired = world.desired
    spec = desired.spec
    restart = plan.limits.stalled and desired.generation > plan.limits.stalled_generation
    if plan.rollout.canary_revision != rev or restart:
        plan.rollout = canary.RolloutState.start(rev, stable, here.now)
        plan.limits = AnalysisLimits()
        plan.events.append(
            Event(
                "Normal",
                "CanaryStarted",
                f"revision {rev} starts beside {stable} at {spec.rollout.steps[0]}%",
            )
        )
    if plan.limits.stalled:
        stall(here, plan)
        return
    analysis = world.observed.analysis or no_data("canary not measured")
    analysed_before = plan.rollout.last_analysis_at
    plan.rollout, verdict = canary.step(
        plan.rollout,
        spec.rollout.steps,
        analysis,
        here.now,
        spec.rollout.analysis_interval_seconds,
        spec.rollout.failure_threshold,
        spec.paused,
    )
    if plan.rollout.last_analysis_at != analysed_before:
        plan.limits = plan.limits.count(analysis, spec.rollout, rev, desired.generation, here.now)
        if plan.limits.stalled:
            plan.events.append(Event("Warning", "RolloutStalled", plan.limits.message))
            stall(here, plan)
            return
    if verdict.action == "rollback":
        _rolled_back(here, plan, verdict)
    elif verdict.action == "promote":
        _promote(here, plan, verdict)
    else:
        _step(here, plan, verdict)


def stall(here: Pass, plan: Plan) -> None:
    """The analysis stalled: the canary goes, the stable revision serves alone, Failed."""
    limits = plan.limits
    plan.wanted.run_all(plan.stable, here.world)
    plan.wanted.remove(here.rev)
    plan.phase = Phase.FAILED
    message = f"{limits.message}; revision {plan.stable} keeps serving"
    plan.progressing = (False, limits.reason, message)
    plan.stalled = (limits.reason, message)


def _rolled_back(here: Pass, plan: Plan, verdict: canary.Verdict) -> None:
    world, rev, stable = here.world, here.rev, plan.stable
    plan.wanted.run_all(stable, world)
    plan.wanted.remove(rev)
    plan.last_rollback = {"from": rev, "to": stable, "reason": verdict.reason, "time": here.stamp}
    plan.events.append(
        Event("Warning", "RolledBack", f"canary {rev} -> {stable}: {verdict.reason}")
    )
    plan.phase = Phase.READY if world.available(stable) else Phase.ROLLING_BACK
    plan.progressing = (
        False,
        "RolledBack",
        f"revision {rev} was rolled back to {stable}: {verdict.reason}",
    )


def _promote(here: Pass, plan: Plan, verdict: canary.Verdict) -> None:
    world, rev, stable = here.world, here.rev, plan.stable
    plan.wanted.run_all(rev, world)
    if world.available(rev):
        plan.wanted.remove(stable)
        plan.events.append(
            Event("Normal", "Promoted", f"revision {rev} promoted over {stable}: {verdict.reason}")
        )
        plan.stable = rev
        plan.phase = Phase.READY
        plan.progressing = (False, "Promoted", f"revision {rev} promoted")
        return
    plan.phase = Phase.PROGRESSING
    plan.progressing = (True, "Promoting", f"revision {rev}: scaling to 100%")
    plan.wanted.run_all(stable, world)


def _step(here: Pass, plan: Plan, verdict: canary.Verdict) -> None:
    world, rev, stable = here.world, here.rev, plan.stable
    if verdict.action == "advance":
        plan.events.append(Event("Normal", "CanaryAdvanced", f"revision {rev}: {verdict.reason}"))
    for target in world.desired.spec.targets:
        n = world.counts[target.name]
        keep, new = canary.split(max(n, 2), verdict.weight) if n else (0, 0)
        blocked, event = world.surge_blocked(stable, target)
        if event is not None:
            plan.events.append(event)
        if blocked:
            keep = max(0, n - new)
        plan.wanted.run(stable, target, keep)
        plan.wanted.run(rev, target, new)
    plan.phase = Phase.PROGRESSING
    plan.progressing = (True, "Canary", f"revision {rev} at {verdict.weight}%: {verdict.reason}")

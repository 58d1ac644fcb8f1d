"""Owns what a pass writes to status: conditions, per-target rows, the phase's last word.

From the plan a strategy made and what was observed: Compressed, Progressing, Available,
Degraded, MetricsAvailable, Ready and Stalled in the kstatus shape (conditions.py), a Ready
phase demoted to Degraded when a target lacks replicas or has nowhere to run, the per-target
rows of `kubectl get`, and a PhaseChanged Event when the phase moved.

Conditions read straight from observations, beside the rollout's, go in
`observed_conditions` (docs/architecture.md, "Status"): that is the place for one more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from edgemodel_operator import autoscaler, providers
from edgemodel_operator.api import EdgeModelSpec, Phase, Target
from edgemodel_operator.conditions import set_condition
from edgemodel_operator.lifecycle.compression import Compression, artifacts_message
from edgemodel_operator.lifecycle.model import Desired, Event, Observed, State
from edgemodel_operator.lifecycle.scaling import Scaling
from edgemodel_operator.lifecycle.strategies import Pass, Plan
from edgemodel_operator.readings import Outcome, Reading

Verdict = tuple[bool, str, str]  # a condition's status, reason and message


@dataclass
class _Conditions:
    """The conditions as this pass leaves them; transition times move only on a flip."""

    items: list[Mapping[str, Any]]
    stamp: str
    generation: int
    seen: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    def set(self, kind: str, status: bool, reason: str, message: str) -> None:
        self.items = set_condition(
            self.items, kind, status, reason, message, self.stamp, self.generation
        )

    def get(self, kind: str) -> Mapping[str, Any]:
        return next((c for c in self.items if c.get("type") == kind), {})


RECORD_CONDITION = "ArtifactRecordValid"


def observed_conditions(
    desired: Desired, observed: Observed, previous: Sequence[Mapping[str, Any]] = ()
) -> list[tuple[str, Verdict]]:
    """Conditions computed from observations alone, set on every pass: (type, verdict).

    The extension point for conditions that are no part of the rollout, each a pure function
    of `Observed` (and of the conditions status carried before this pass, `previous`). Today:

    - `AcceleratorAvailable`, False with reason ProviderFallback when a GPU target's server
      found no working CUDA provider and refused to serve from the CPU (providers.py;
      docs/architecture.md, "Real containers"). EdgeModels without GPU targets do not carry it.
    - `ArtifactRecordValid` (`record_condition`).
    """
    found: list[tuple[str, Verdict]] = []
    gpu_targets = [t.name for t in desired.spec.targets if t.gpu]
    verdict = providers.accelerator_condition(observed.provider_fallbacks, gpu_targets)
    if verdict is not None:
        found.append((providers.CONDITION, verdict))
    present = any(c.get("type") == RECORD_CONDITION for c in previous)
    record = record_condition(observed.record_checks, present)
    if record is not None:
        found.append((RECORD_CONDITION, record))
    return found


def record_condition(checks: Mapping[str, str], present: bool) -> Verdict | None:
    """`ArtifactRecordValid` from this pass's artifact store lookups (docs/security.md).

    False with reason MalformedRecord, naming the artifact and the field, when a record the
    store holds for this revision is malformed: the record is not trusted and the revision is
    compressed as if there were none. It appears only once a malformed record was seen and
    turns True (RecordsValid) when a later lookup finds usable records or none; passes that
    look nothing up (the revision's Jobs run, or its artifacts are known) leave it as it is.
    """
    problems = [f"record {key}: {problem}" for key, problem in sorted(checks.items()) if problem]
    if problems:
        return False, "MalformedRecord", "; ".join(problems) + "; compressing instead"
    if checks and present:
        looked = ", ".join(sorted(checks))
        return True, "RecordsValid", f"the store's records for {looked} are well-formed or absent"
    return None


def summarise(
    here: Pass, compression: Compression, plan: Plan, scaling: Scaling
) -> tuple[State, list[Event]]:
    """The new State and the status Events (PhaseChanged) after this pass."""
    world, state = here.world, here.state
    desired, observed, spec = world.desired, world.observed, world.desired.spec
    rev = desired.revision
    conditions = _Conditions(list(state.conditions), here.stamp, desired.generation)
    conditions.set("Compressed", *_compressed(rev, compression))
    if plan.progressing is not None:
        conditions.set("Progressing", *plan.progressing)
    phase = plan.phase
    canary_rev = rev if phase is Phase.PROGRESSING and plan.stable != rev else ""
    # Availability of what serves now (the stable revision, or the one being deployed).
    serving = plan.stable or (rev if phase is Phase.DEPLOYING else "")
    rows = _Rows(spec, observed, {r for r in (serving, canary_rev) if r}, rev, scaling.notes)
    rows.build(here.stamp, state.targets)
    wanted_targets = {t.name for t in spec.targets}
    unplaceable = {t: m for t, m in observed.unschedulable.items() if t in wanted_targets}
    conditions.set("Available", *_available(serving, rows, unplaceable))
    if phase is Phase.READY and (rows.unavailable or unplaceable):
        phase = Phase.DEGRADED
    degraded = phase is Phase.DEGRADED
    conditions.set(
        "Degraded",
        degraded,
        "ReplicasUnavailable" if degraded else "AsExpected",
        "; ".join(rows.unavailable) if degraded else "",
    )
    metrics = metrics_condition(observed)
    if metrics is not None:
        conditions.set("MetricsAvailable", *metrics)
    for kind, verdict in observed_conditions(desired, observed, state.conditions):
        conditions.set(kind, *verdict)
    _ready_and_stalled(conditions, phase, plan)
    events = []
    if phase != state.phase:
        warn = phase in (Phase.FAILED, Phase.DEGRADED, Phase.ROLLING_BACK)
        events.append(
            Event(
                "Warning" if warn else "Normal", "PhaseChanged", f"phase {state.phase} -> {phase}"
            )
        )
    own: dict[str, Any] = {}
    if plan.rollout.canary_revision:
        own["canary"] = {**plan.rollout.to_dict(), **plan.limits.to_dict()}
    if scaling.scalers:
        own["scalers"] = {k: v for k, v in scaling.scalers.items() if k in wanted_targets}
    new_state = replace(
        state,
        phase=phase,
        stable_revision=plan.stable,
        canary_revision=canary_rev,
        revisions=compression.revisions,
        conditions=tuple(conditions.items),
        targets=tuple(rows.rows),
        ready_replicas=f"{rows.ready_total}/{rows.desired_total}",
        last_rollback=plan.last_rollback,
        rollout=own,
        p95_latency_ms=worst(observed.p95),
    )
    return new_state, events


def _compressed(rev: str, compression: Compression) -> Verdict:
    if compression.failures:
        reason = "AccuracyGateFailed" if compression.gate_failed else "CompressionFailed"
        return False, reason, f"revision {rev}: " + "; ".join(compression.failures)
    if compression.complete:
        return True, "ArtifactsReady", artifacts_message(rev, compression.artifacts)
    if compression.retrying and not compression.compressing:
        return False, "CompressionRetrying", f"revision {rev}: " + "; ".join(compression.retrying)
    what = ", ".join(compression.compressing) or "waiting for the artifact store"
    retrying = "".join(f"; {r}" for r in compression.retrying)
    return False, "Compressing", f"revision {rev}: compressing {what}{retrying}"


def _available(serving: str, rows: _Rows, unplaceable: Mapping[str, str]) -> Verdict:
    if unplaceable:
        where = "; ".join(f"target {t}: {m}" for t, m in sorted(unplaceable.items()))
        return False, "Unschedulable", where
    if rows.unavailable:
        return False, "ReplicasUnavailable", "; ".join(rows.unavailable)
    if serving:
        return True, "ReplicasAvailable", f"{rows.ready_total}/{rows.desired_total} replicas ready"
    return False, "NotDeployed", "no revision deployed yet"


def _ready_and_stalled(conditions: _Conditions, phase: Phase, plan: Plan) -> None:
    if phase is Phase.READY:
        conditions.set("Ready", True, "Ready", f"revision {plan.stable} serves on every target")
    else:
        if plan.stalled is not None or phase in (Phase.PROGRESSING, Phase.ROLLING_BACK):
            why = conditions.get("Progressing")
        elif phase in (Phase.FAILED, Phase.COMPRESSING):
            why = conditions.get("Compressed")
        else:
            why = conditions.get("Available")
        reason, message = str(why.get("reason") or phase), str(why.get("message") or phase)
        conditions.set("Ready", False, reason, message)
    # kstatus (Flux's health checks, `kubectl wait --for=condition=Stalled`): a failed revision
    # waits for a spec change, not for time, so say so rather than leave GitOps tools waiting
    # for their timeout. The previous stable revision, if any, keeps serving meanwhile.
    if phase is not Phase.FAILED:
        conditions.set("Stalled", False, "AsExpected", "")
        return
    if plan.stalled is not None:
        reason, message = plan.stalled
    else:
        failed = conditions.get("Compressed")
        reason = str(failed.get("reason") or "CompressionFailed")
        message = str(failed.get("message") or "compression failed")
    conditions.set("Stalled", True, reason, f"{message}; needs a spec change")


def worst(readings: Mapping[str, Reading]) -> float | None:
    """The highest value among readings that have one (the p95 status shows)."""
    values = [r.value for r in readings.values() if r.has_value and r.value is not None]
    return round(max(values), 3) if values else None


def metrics_condition(observed: Observed) -> Verdict | None:
    """MetricsAvailable from every reading taken this pass; None when none was."""
    readings = [*observed.p95.values(), *observed.errors.values()]
    readings += [r for r in (observed.analysis, observed.guard) if r is not None]
    if not readings:
        return None
    errors = [r for r in readings if r.outcome is Outcome.ERROR]
    if errors:
        return False, "PrometheusUnreachable", errors[0].detail
    if all(r.outcome is Outcome.INCONCLUSIVE for r in readings):
        return False, "NoData", readings[0].detail
    return True, "MetricsAvailable", f"{len(readings)} readings"


@dataclass
class _Rows:
    """The per-target rows of status.targets, and the replica totals over them."""

    spec: EdgeModelSpec
    observed: Observed
    serving: set[str]
    desired_rev: str
    decisions: Mapping[str, autoscaler.Decision]
    rows: list[dict[str, Any]] = field(default_factory=list)
    ready_total: int = 0
    desired_total: int = 0
    unavailable: list[str] = field(default_factory=list)

    def build(self, stamp: str, previous: tuple[Mapping[str, Any], ...]) -> None:
        before = {str(row.get("name")): row for row in previous}
        for target in self.spec.targets:
            row = self._row(target)
            self._scaling(row, target, stamp, before.get(target.name, {}))
            message = self.observed.unschedulable.get(target.name)
            if message:
                row["message"] = message
            self.rows.append(row)

    def _row(self, target: Target) -> dict[str, Any]:
        deps = [
            d
            for d in self.observed.deployments
            if d.target == target.name and d.revision in self.serving
        ]
        replicas = sum(d.replicas for d in deps) if deps else target.replicas.min
        ready = min(sum(d.ready for d in deps), replicas)
        if self.serving:
            self.ready_total += ready
            if ready < target.replicas.min:
                self.unavailable.append(
                    f"target {target.name}: {ready}/{target.replicas.min} ready"
                )
        self.desired_total += replicas
        row: dict[str, Any] = {
            "name": target.name,
            "arch": target.arch,
            "accelerator": target.accelerator,
            "revision": ",".join(sorted(self.serving)) or self.desired_rev,
            "replicas": replicas,
            "readyReplicas": ready,
        }
        p95 = self.observed.p95.get(target.name)
        if p95 is not None and p95.has_value:
            row["p95LatencyMs"] = round(float(p95.value or 0.0), 3)
            if p95.threshold is not None:  # which SLO: a generative model's token objective
                row["latencySloMs"] = float(p95.threshold)
        errors = self.observed.errors.get(target.name)
        if errors is not None and errors.has_value:
            row["errorRate"] = round(float(errors.value or 0.0), 5)
        shed = self.observed.shed.get(target.name)
        if shed is not None and shed.has_value:
            row["shedFraction"] = round(float(shed.value or 0.0), 5)
        return row

    def _scaling(
        self, row: dict[str, Any], target: Target, stamp: str, old: Mapping[str, Any]
    ) -> None:
        decision = self.decisions.get(target.name)
        if decision is not None and decision.action != "hold":
            row.update(
                lastScaleDecision=f"{decision.action} to {decision.replicas}",
                lastScaleReason=decision.reason[:512],
                lastScaleTime=stamp,
            )
            return
        for key in ("lastScaleDecision", "lastScaleReason", "lastScaleTime"):
            if old.get(key):
                row[key] = old[key]
        if decision is not None and not old.get("lastScaleDecision"):
            row.update(lastScaleDecision="hold", lastScaleReason=decision.reason[:512])

"""Owns the EdgeModel lifecycle decision: `transition(state, desired, observed, now)`.

Pure: no kopf, no client, no clock — the handler gathers what it observed, calls this, and
applies the actions it returns. Only what is observed moves the lifecycle forward: a Job is
"done" when the cluster says it succeeded, a revision is stable when its Deployments are
available; a lost action is simply asked for again on the next pass (idempotent apply).

Per revision: one compression Job per artifact variant (skipped when the store already has
that artifact) -> one Deployment per target -> when every target is available the revision
becomes stable and the previous revision's Deployments are removed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from edgemodel_operator import autoscaler, builders, canary
from edgemodel_operator.api import EdgeModelSpec, Target
from edgemodel_operator.builders import SPEC_HASH
from edgemodel_operator.conditions import set_condition
from edgemodel_operator.metrics import Outcome, Reading
from edgemodel_operator.revision import compression_plan, variant_of, variants
from edgemodel_operator.settings import Settings

# ------------------------------------------------------------------ inputs


@dataclass(frozen=True)
class Desired:
    """The EdgeModel as written, plus what the operator derived from it."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: EdgeModelSpec
    revision: str
    settings: Settings


@dataclass(frozen=True)
class JobObs:
    """A compression Job as the cluster reports it."""

    name: str
    revision: str
    variant: str
    active: bool = False
    succeeded: bool = False
    failed: bool = False
    summary: Mapping[str, Any] | None = None  # the publish step's termination message
    failure: str = ""  # why it failed: condition message, exit code, log tail
    gate_failed: bool = False  # the compress step exited 3


@dataclass(frozen=True)
class DeploymentObs:
    """A runtime Deployment as the cluster reports it."""

    name: str
    revision: str
    target: str
    replicas: int
    ready: int
    available: int
    updated: int
    current: bool  # status.observedGeneration caught up with metadata.generation
    artifact_sha256: str = ""
    spec_hash: str = ""  # of the manifest last applied (builders.stamp)

    @property
    def fully_available(self) -> bool:
        return self.current and self.available >= self.replicas and self.updated >= self.replicas


@dataclass(frozen=True)
class Observed:
    """Everything the handler saw this pass."""

    jobs: list[JobObs] = field(default_factory=list)
    deployments: list[DeploymentObs] = field(default_factory=list)
    services: frozenset[str] = frozenset()
    # artifact key -> publish summary, for artifacts the store already holds
    artifacts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # target -> why no node can host it (placement check or the scheduler's own message)
    unschedulable: Mapping[str, str] = field(default_factory=dict)
    store_ready: bool = True
    # SLO readings, present only when the spec has an SLO (see `metrics_needed`):
    # target -> p95 of what serves that target now (for the autoscaler and status)
    p95: Mapping[str, Reading] = field(default_factory=dict)
    errors: Mapping[str, Reading] = field(default_factory=dict)
    # the canary checked against the SLO and the stable baseline, over all targets
    analysis: Reading | None = None
    # the newly promoted revision against the SLO, during the post-promotion guard
    guard: Reading | None = None


# ------------------------------------------------------------------ state and actions


@dataclass(frozen=True)
class State:
    """What status keeps because it cannot be re-observed (principle 3), plus the summary."""

    phase: str = "Pending"
    stable_revision: str = ""
    canary_revision: str = ""
    revisions: tuple[Mapping[str, Any], ...] = ()
    conditions: tuple[Mapping[str, Any], ...] = ()
    targets: tuple[Mapping[str, Any], ...] = ()
    ready_replicas: str = ""
    last_rollback: Mapping[str, Any] | None = None
    rollout: Mapping[str, Any] = field(default_factory=dict)
    p95_latency_ms: float | None = None

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> State:
        return cls(
            phase=str(status.get("phase") or "Pending"),
            stable_revision=str(status.get("stableRevision") or ""),
            canary_revision=str(status.get("canaryRevision") or ""),
            revisions=tuple(status.get("revisions") or ()),
            conditions=tuple(status.get("conditions") or ()),
            targets=tuple(status.get("targets") or ()),
            ready_replicas=str(status.get("readyReplicas") or ""),
            last_rollback=status.get("lastRollback"),
            rollout=dict(status.get("rollout") or {}),
            p95_latency_ms=status.get("p95LatencyMs"),
        )

    def to_status(self, generation: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "phase": self.phase,
            "observedGeneration": generation,
            "stableRevision": self.stable_revision or None,
            "canaryRevision": self.canary_revision or None,
            "revisions": [dict(r) for r in self.revisions],
            "conditions": [dict(c) for c in self.conditions],
            "targets": [dict(t) for t in self.targets],
            "readyReplicas": self.ready_replicas or None,
            "p95LatencyMs": self.p95_latency_ms,
        }
        if self.last_rollback:
            out["lastRollback"] = dict(self.last_rollback)
        out["rollout"] = dict(self.rollout) if self.rollout else None
        return out


@dataclass(frozen=True)
class Apply:
    """Create or update an object to match this manifest (server-side apply)."""

    manifest: Mapping[str, Any]


@dataclass(frozen=True)
class Delete:
    """Delete an object (a missing one is fine)."""

    api_version: str
    kind: str
    namespace: str
    name: str


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event on the EdgeModel."""

    type: str  # Normal | Warning
    reason: str
    message: str


Action = Apply | Delete | Event

MAX_REVISIONS_KEPT = 10


# ------------------------------------------------------------------ the decision


def _artifact(state: State, revision: str, variant: str) -> Mapping[str, Any] | None:
    for record in state.revisions:
        if record.get("revision") == revision and record.get("variant") == variant:
            return record
    return None


def _record(
    revision: str,
    variant: str,
    summary: Mapping[str, Any] | None,
    result: str,
    message: str,
    now: str,
) -> dict[str, Any]:
    summary = summary or {}
    accuracy = summary.get("accuracy")
    record: dict[str, Any] = {
        "revision": revision,
        "variant": variant,
        "result": result,
        "time": now,
    }
    if summary.get("artifactSha256"):
        record["artifactDigest"] = summary["artifactSha256"]
    if summary.get("artifactUri"):
        record["artifactUri"] = summary["artifactUri"]
    if summary.get("sizeBytes") is not None:
        record["sizeBytes"] = int(summary["sizeBytes"])
    if summary.get("ratio") is not None:
        record["ratio"] = float(summary["ratio"])
    if summary.get("mode"):
        record["mode"] = summary["mode"]
    if isinstance(accuracy, Mapping) and accuracy:
        record["accuracy"] = dict(accuracy)
    if message:
        record["message"] = message[:1024]
    return record


def _upsert(
    records: tuple[Mapping[str, Any], ...], record: Mapping[str, Any]
) -> tuple[Mapping[str, Any], ...]:
    kept = [
        r
        for r in records
        if (r.get("revision"), r.get("variant")) != (record["revision"], record["variant"])
    ]
    kept.append(record)
    return tuple(kept[-MAX_REVISIONS_KEPT:])


def transition(
    state: State, desired: Desired, observed: Observed, now: datetime
) -> tuple[State, list[Action]]:
    """The next state and the actions that move the cluster toward `desired`."""
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    ts = now.timestamp()
    spec, rev, settings = desired.spec, desired.revision, desired.settings
    actions: list[Action] = []
    revisions = state.revisions
    conditions = list(state.conditions)

    def condition(kind: str, status: bool, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = set_condition(
            conditions, kind, status, reason, message, stamp, desired.generation
        )

    # 1. compression: one artifact per variant of the desired revision
    artifacts: dict[str, Mapping[str, Any]] = {}
    compressing: list[str] = []
    failures: list[str] = []
    gate_failed = False
    jobs = {(j.revision, j.variant): j for j in observed.jobs}
    for variant in variants(spec):
        key = builders.artifact_key(rev, variant)
        known = _artifact(State(revisions=revisions), rev, variant)
        if known is not None and known.get("result") == "passed" and known.get("artifactDigest"):
            artifacts[variant] = known
            continue
        if key in observed.artifacts:
            record = _record(
                rev,
                variant,
                observed.artifacts[key],
                "passed",
                "found in the artifact store",
                stamp,
            )
            revisions = _upsert(revisions, record)
            artifacts[variant] = record
            continue
        job = jobs.get((rev, variant))
        if (
            known is not None
            and known.get("result") in ("failed", "gate-failed")
            and (job is None or job.failed)
        ):
            failures.append(f"{variant}: {known.get('message', known.get('result'))}")
            gate_failed = gate_failed or known.get("result") == "gate-failed"
            continue
        if job is None:
            if observed.store_ready:
                actions.append(
                    Apply(
                        builders.compression_job(
                            desired.name,
                            desired.namespace,
                            desired.uid,
                            spec,
                            rev,
                            variant,
                            settings,
                        )
                    )
                )
            compressing.append(f"{variant} ({compression_plan(spec, variant).mode})")
        elif job.succeeded and job.summary and job.summary.get("artifactSha256"):
            record = _record(rev, variant, job.summary, "passed", "", stamp)
            revisions = _upsert(revisions, record)
            artifacts[variant] = record
            actions.append(Event("Normal", "Compressed", _compressed_message(variant, record)))
        elif job.failed or (job.succeeded and not job.summary):
            result = "gate-failed" if job.gate_failed else "failed"
            message = job.failure or "compression Job failed without a message"
            revisions = _upsert(
                revisions, _record(rev, variant, job.summary, result, message, stamp)
            )
            failures.append(f"{variant}: {message}")
            gate_failed = gate_failed or job.gate_failed
            actions.append(
                Event(
                    "Warning",
                    "AccuracyGateFailed" if job.gate_failed else "CompressionFailed",
                    f"revision {rev} variant {variant}: {message}"[:1024],
                )
            )
        else:
            compressing.append(f"{variant} ({compression_plan(spec, variant).mode})")

    stable = state.stable_revision
    wanted_targets = {t.name for t in spec.targets}
    by_target_rev = {(d.target, d.revision): d for d in observed.deployments}
    rollout = canary.RolloutState.from_dict(state.rollout.get("canary"))
    scalers = dict(state.rollout.get("scalers") or {})
    last_rollback = state.last_rollback
    scale_notes: dict[str, autoscaler.Decision] = {}

    # Targets removed from the spec go, whatever revision they run.
    for dep in observed.deployments:
        if dep.target not in wanted_targets:
            actions.append(Delete("apps/v1", "Deployment", desired.namespace, dep.name))
    for svc in observed.services:
        if svc not in {builders.service_name(desired.name, t) for t in wanted_targets}:
            actions.append(Delete("v1", "Service", desired.namespace, svc))

    # Services exist from the start: clients can resolve them before the first revision is up.
    for target in spec.targets:
        if builders.service_name(desired.name, target.name) not in observed.services:
            actions.append(
                Apply(builders.target_service(desired.name, desired.namespace, desired.uid, target))
            )

    def sha_for(revision: str, target: Target) -> str:
        record = _artifact(State(revisions=revisions), revision, variant_of(target))
        if record is not None and record.get("artifactDigest"):
            return str(record["artifactDigest"])
        dep = by_target_rev.get((target.name, revision))
        return dep.artifact_sha256 if dep is not None else ""

    def current_replicas(target: Target) -> int | None:
        """What the target runs now: the stable revision's replicas (plus a live canary's)."""
        stable_dep = by_target_rev.get((target.name, stable)) if stable else None
        rev_dep = by_target_rev.get((target.name, rev))
        canary_live = rollout.canary_revision == rev and rollout.rolled_back_at is None
        if stable_dep is not None and rev_dep is not None and rev != stable and canary_live:
            return stable_dep.replicas + rev_dep.replicas
        dep = stable_dep or rev_dep
        return dep.replicas if dep is not None else None

    def total(target: Target) -> int:
        """The target's replicas from now on: autoscaled and kept within bounds."""
        current = current_replicas(target)
        count = _replicas(target.replicas.min, target.replicas.upper, current)
        if spec.autoscaling.enabled and spec.slo is not None:
            reading = observed.p95.get(target.name) or _no_data("p95 not queried")
            scaler, decision = autoscaler.decide(
                autoscaler.ScalerState.from_dict(scalers.get(target.name)),
                spec.autoscaling,
                spec.slo,
                current or count,
                target.replicas.min,
                target.replicas.upper,
                reading,
                ts,
                spec.paused,
            )
            scalers[target.name] = scaler.to_dict()
            scale_notes[target.name] = decision
            if decision.action != "hold":
                kind = "ScaledUp" if decision.action == "up" else "ScaledDown"
                actions.append(
                    Event(
                        "Normal",
                        kind,
                        f"target {target.name}: {current} -> {decision.replicas} replicas: "
                        f"{decision.reason}",
                    )
                )
            return decision.replicas
        return count

    def run(revision: str, target: Target, replicas: int) -> None:
        sha = sha_for(revision, target)
        if not sha:
            return
        manifest = builders.runtime_deployment(
            desired.name,
            desired.namespace,
            desired.uid,
            spec,
            target,
            revision,
            sha,
            replicas,
            settings,
        )
        seen = by_target_rev.get((target.name, revision))
        if seen is not None and seen.spec_hash == manifest["metadata"]["annotations"][SPEC_HASH]:
            return  # already as wanted: skip the write (most passes change nothing)
        actions.append(Apply(manifest))

    def remove(revision: str) -> None:
        for dep in observed.deployments:
            if dep.revision == revision and dep.target in wanted_targets:
                actions.append(Delete("apps/v1", "Deployment", desired.namespace, dep.name))

    def available(revision: str, counts: Mapping[str, int]) -> bool:
        for target in spec.targets:
            dep = by_target_rev.get((target.name, revision))
            want = counts.get(target.name, 0)
            if want == 0:
                continue
            if dep is None or not dep.fully_available or dep.replicas != want:
                return False
        return True

    counts = {t.name: total(t) for t in spec.targets}  # once per pass: one scaling decision

    def surge_blocked(target: Target) -> bool:
        """The new revision's pods found no room beside the old ones (a node's only GPU, say):
        the old revision of that target gives its place up (replace instead of surge)."""
        new_dep = by_target_rev.get((target.name, rev))
        blocked = target.name in observed.unschedulable and new_dep is not None and rev != stable
        old_dep = by_target_rev.get((target.name, stable)) if stable else None
        if blocked and old_dep is not None and old_dep.replicas > 0:
            actions.append(
                Event(
                    "Normal",
                    "ReplacingInPlace",
                    f"target {target.name}: no room for revision {rev} beside {stable} "
                    f"({observed.unschedulable[target.name]}); replacing in place",
                )
            )
        return blocked

    phase = state.phase
    progressing: tuple[bool, str, str] | None = None
    rolled_back_rev = rollout.canary_revision if rollout.rolled_back_at is not None else ""
    if failures:
        phase = "Failed"
        reason = "AccuracyGateFailed" if gate_failed else "CompressionFailed"
        condition("Compressed", False, reason, f"revision {rev}: " + "; ".join(failures))
        progressing = (False, reason, f"revision {rev} cannot be deployed")
        if stable and stable != rev:
            for target in spec.targets:
                run(stable, target, counts[target.name])
    elif compressing or len(artifacts) < len(variants(spec)):
        phase = "Compressing"
        what = ", ".join(compressing) or "waiting for the artifact store"
        condition("Compressed", False, "Compressing", f"revision {rev}: compressing {what}")
        progressing = (True, "Compressing", f"revision {rev} is being compressed")
        if stable and stable != rev:
            for target in spec.targets:
                run(stable, target, counts[target.name])
    else:
        condition("Compressed", True, "ArtifactsReady", _artifacts_message(rev, artifacts))
        if not stable or (stable != rev and spec.slo is None):
            # First revision, or no SLO to judge a canary by: bring the revision up in full
            # beside what serves now, then switch (blue/green).
            for target in spec.targets:
                run(rev, target, counts[target.name])
            if available(rev, counts):
                if stable != rev:
                    actions.append(
                        Event(
                            "Normal",
                            "RevisionStable",
                            f"revision {rev} is available on every target"
                            + (f"; replacing {stable}" if stable else ""),
                        )
                    )
                    remove(stable)
                stable = rev
                phase = "Ready"
                progressing = (False, "RevisionStable", f"revision {rev} is stable")
            else:
                phase = "Deploying"
                progressing = (
                    True,
                    "Deploying",
                    f"revision {rev}: waiting for every target to be available",
                )
                if stable and stable != rev:
                    for target in spec.targets:
                        keep = 0 if surge_blocked(target) else counts[target.name]
                        run(stable, target, keep)
        elif stable == rev:
            for target in spec.targets:
                run(rev, target, counts[target.name])
            # Scaling a stable revision is not a deployment: it stays Ready (or Degraded
            # below its minimum, decided with availability below).
            phase = "Ready"
            progressing = (False, "RevisionStable", f"revision {rev} is stable")
            if rollout.canary_revision == rev and rollout.guard_active(
                ts, spec.rollout.post_promotion_guard_seconds
            ):
                rollout, verdict = canary.guard(
                    rollout,
                    observed.guard or _no_data("guard not measured"),
                    ts,
                    spec.rollout.post_promotion_guard_seconds,
                    spec.rollout.analysis_interval_seconds,
                    spec.rollout.failure_threshold,
                    spec.paused,
                )
                if verdict.action == "rollback" and verdict.rollback_to:
                    previous = verdict.rollback_to
                    for target in spec.targets:
                        run(previous, target, counts[target.name])
                    if available(previous, counts):
                        remove(rev)
                        stable = previous
                        phase = "Ready"
                    else:
                        phase = "RollingBack"
                    if not last_rollback or last_rollback.get("from") != rev:
                        last_rollback = {
                            "from": rev,
                            "to": previous,
                            "reason": verdict.reason,
                            "time": stamp,
                        }
                        actions.append(
                            Event(
                                "Warning",
                                "RolledBack",
                                f"post-promotion guard: {rev} -> {previous}: {verdict.reason}",
                            )
                        )
                    progressing = (
                        False,
                        "RolledBack",
                        f"rolled back {rev} to {previous}: {verdict.reason}",
                    )
        elif rev == rolled_back_rev:
            # This revision failed its canary: keep serving the stable one until the spec changes.
            for target in spec.targets:
                run(stable, target, counts[target.name])
            remove(rev)
            phase = "Ready" if available(stable, counts) else "RollingBack"
            progressing = (
                False,
                "RolledBack",
                f"revision {rev} was rolled back to {stable}: "
                f"{(last_rollback or {}).get('reason', '')}",
            )
        else:
            # Canary: the new revision beside the stable one, traffic weight = replica ratio.
            if rollout.canary_revision != rev:
                rollout = canary.RolloutState.start(rev, stable, ts)
                actions.append(
                    Event(
                        "Normal",
                        "CanaryStarted",
                        f"revision {rev} starts beside {stable} at {spec.rollout.steps[0]}%",
                    )
                )
            rollout, verdict = canary.step(
                rollout,
                spec.rollout.steps,
                observed.analysis or _no_data("canary not measured"),
                ts,
                spec.rollout.analysis_interval_seconds,
                spec.rollout.failure_threshold,
                spec.paused,
            )
            if verdict.action == "rollback":
                for target in spec.targets:
                    run(stable, target, counts[target.name])
                remove(rev)
                last_rollback = {"from": rev, "to": stable, "reason": verdict.reason, "time": stamp}
                actions.append(
                    Event("Warning", "RolledBack", f"canary {rev} -> {stable}: {verdict.reason}")
                )
                phase = "Ready" if available(stable, counts) else "RollingBack"
                progressing = (
                    False,
                    "RolledBack",
                    f"revision {rev} was rolled back to {stable}: {verdict.reason}",
                )
            elif verdict.action == "promote":
                for target in spec.targets:
                    run(rev, target, counts[target.name])
                if available(rev, counts):
                    remove(stable)
                    actions.append(
                        Event(
                            "Normal",
                            "Promoted",
                            f"revision {rev} promoted over {stable}: {verdict.reason}",
                        )
                    )
                    stable = rev
                    phase = "Ready"
                    progressing = (False, "Promoted", f"revision {rev} promoted")
                else:
                    phase = "Progressing"
                    progressing = (True, "Promoting", f"revision {rev}: scaling to 100%")
                    for target in spec.targets:
                        run(stable, target, counts[target.name])
            else:
                if verdict.action == "advance":
                    actions.append(
                        Event("Normal", "CanaryAdvanced", f"revision {rev}: {verdict.reason}")
                    )
                for target in spec.targets:
                    n = counts[target.name]
                    keep, new = canary.split(max(n, 2), verdict.weight) if n else (0, 0)
                    if surge_blocked(target):
                        keep = max(0, n - new)
                    run(stable, target, keep)
                    run(rev, target, new)
                phase = "Progressing"
                progressing = (
                    True,
                    "Canary",
                    f"revision {rev} at {verdict.weight}%: {verdict.reason}",
                )

    if progressing is not None:
        condition("Progressing", *progressing)
    canary_rev = rev if phase == "Progressing" and stable != rev else ""

    # Availability of what serves now (the stable revision, or the one being deployed).
    serving = stable or (rev if phase == "Deploying" else "")
    serving_revs = {r for r in (serving, canary_rev) if r}
    target_status, ready_total, desired_total, unavailable = _target_status(
        spec, observed, serving_revs, rev, scale_notes, stamp, state.targets
    )
    unplaceable = {t: m for t, m in observed.unschedulable.items() if t in wanted_targets}
    if unplaceable:
        condition(
            "Available",
            False,
            "Unschedulable",
            "; ".join(f"target {t}: {m}" for t, m in sorted(unplaceable.items())),
        )
    elif unavailable:
        condition("Available", False, "ReplicasUnavailable", "; ".join(unavailable))
    elif serving:
        condition(
            "Available", True, "ReplicasAvailable", f"{ready_total}/{desired_total} replicas ready"
        )
    else:
        condition("Available", False, "NotDeployed", "no revision deployed yet")
    if phase == "Ready" and (unavailable or unplaceable):
        phase = "Degraded"
    degraded = phase == "Degraded"
    condition(
        "Degraded",
        degraded,
        "ReplicasUnavailable" if degraded else "AsExpected",
        "; ".join(unavailable) if degraded else "",
    )
    metrics = _metrics_condition(observed)
    if metrics is not None:
        condition("MetricsAvailable", *metrics)
    ready = phase == "Ready"
    if ready:
        condition("Ready", True, "Ready", f"revision {stable} serves on every target")
    else:
        cond = {c["type"]: c for c in conditions}
        why = (
            cond.get("Compressed", {})
            if phase in ("Failed", "Compressing")
            else cond.get("Progressing", {})
            if phase in ("Progressing", "RollingBack")
            else cond.get("Available", {})
        )
        condition("Ready", False, str(why.get("reason") or phase), str(why.get("message") or phase))
    # kstatus (Flux's health checks, `kubectl wait --for=condition=Stalled`): a failed revision
    # waits for a spec change, not for time, so say so rather than leave GitOps tools waiting
    # for their timeout. The previous stable revision, if any, keeps serving meanwhile.
    if phase == "Failed":
        failed = {c["type"]: c for c in conditions}.get("Compressed", {})
        condition(
            "Stalled",
            True,
            str(failed.get("reason") or "CompressionFailed"),
            f"{failed.get('message') or 'compression failed'}; needs a spec change",
        )
    else:
        condition("Stalled", False, "AsExpected", "")

    if phase != state.phase:
        actions.append(
            Event(
                "Warning" if phase in ("Failed", "Degraded", "RollingBack") else "Normal",
                "PhaseChanged",
                f"phase {state.phase} -> {phase}",
            )
        )
    own: dict[str, Any] = {}
    if rollout.canary_revision:
        own["canary"] = rollout.to_dict()
    if scalers:
        own["scalers"] = {k: v for k, v in scalers.items() if k in wanted_targets}
    new_state = replace(
        state,
        phase=phase,
        stable_revision=stable,
        canary_revision=canary_rev,
        revisions=revisions,
        conditions=tuple(conditions),
        targets=tuple(target_status),
        ready_replicas=f"{ready_total}/{desired_total}",
        last_rollback=last_rollback,
        rollout=own,
        p95_latency_ms=_worst(observed.p95),
    )
    return new_state, actions


def _no_data(detail: str) -> Reading:
    return Reading(Outcome.INCONCLUSIVE, None, None, detail)


def _worst(readings: Mapping[str, Reading]) -> float | None:
    values = [r.value for r in readings.values() if r.has_value and r.value is not None]
    return round(max(values), 3) if values else None


def _metrics_condition(observed: Observed) -> tuple[bool, str, str] | None:
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


def _replicas(low: int, high: int, current: int | None) -> int:
    """Keep what the autoscaler chose, clipped to the spec's bounds; start at the minimum."""
    if current is None:
        return low
    return max(low, min(high, current))


def _target_status(
    spec: EdgeModelSpec,
    observed: Observed,
    serving: set[str],
    desired_rev: str,
    decisions: Mapping[str, autoscaler.Decision],
    stamp: str,
    previous: tuple[Mapping[str, Any], ...],
) -> tuple[list[dict[str, Any]], int, int, list[str]]:
    rows: list[dict[str, Any]] = []
    ready_total = desired_total = 0
    unavailable: list[str] = []
    before = {str(row.get("name")): row for row in previous}
    for target in spec.targets:
        deps = [
            d for d in observed.deployments if d.target == target.name and d.revision in serving
        ]
        replicas = sum(d.replicas for d in deps) if deps else target.replicas.min
        ready = min(sum(d.ready for d in deps), replicas)
        if serving:
            ready_total += ready
        desired_total += replicas
        row: dict[str, Any] = {
            "name": target.name,
            "arch": target.arch,
            "accelerator": target.accelerator,
            "revision": ",".join(sorted(serving)) or desired_rev,
            "replicas": replicas,
            "readyReplicas": ready,
        }
        p95 = observed.p95.get(target.name)
        if p95 is not None and p95.has_value:
            row["p95LatencyMs"] = round(float(p95.value or 0.0), 3)
        errors = observed.errors.get(target.name)
        if errors is not None and errors.has_value:
            row["errorRate"] = round(float(errors.value or 0.0), 5)
        decision = decisions.get(target.name)
        old = before.get(target.name, {})
        if decision is not None and decision.action != "hold":
            row.update(
                lastScaleDecision=f"{decision.action} to {decision.replicas}",
                lastScaleReason=decision.reason[:512],
                lastScaleTime=stamp,
            )
        else:
            for key in ("lastScaleDecision", "lastScaleReason", "lastScaleTime"):
                if old.get(key):
                    row[key] = old[key]
            if decision is not None and not old.get("lastScaleDecision"):
                row.update(lastScaleDecision="hold", lastScaleReason=decision.reason[:512])
        message = observed.unschedulable.get(target.name)
        if message:
            row["message"] = message
        if serving and ready < target.replicas.min:
            unavailable.append(f"target {target.name}: {ready}/{target.replicas.min} ready")
        rows.append(row)
    return rows, ready_total, desired_total, unavailable


def _compressed_message(variant: str, record: Mapping[str, Any]) -> str:
    parts = [f"variant {variant}: artifact {str(record.get('artifactDigest', ''))[:12]}"]
    if record.get("ratio") is not None:
        parts.append(f"size ratio {record['ratio']:.3f}")
    accuracy = record.get("accuracy") or {}
    if isinstance(accuracy, Mapping) and accuracy.get("agreement") is not None:
        parts.append(f"agreement {accuracy['agreement']}")
    return ", ".join(parts)


def _artifacts_message(rev: str, artifacts: Mapping[str, Mapping[str, Any]]) -> str:
    return f"revision {rev}: " + "; ".join(
        _compressed_message(variant, record) for variant, record in sorted(artifacts.items())
    )

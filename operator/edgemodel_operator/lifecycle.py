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
from typing import Any

from edgemodel_operator import builders
from edgemodel_operator.api import EdgeModelSpec
from edgemodel_operator.conditions import set_condition
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
        }
        if self.last_rollback:
            out["lastRollback"] = dict(self.last_rollback)
        if self.rollout:
            out["rollout"] = dict(self.rollout)
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
    state: State, desired: Desired, observed: Observed, now: str
) -> tuple[State, list[Action]]:
    """The next state and the actions that move the cluster toward `desired`."""
    spec, rev, settings = desired.spec, desired.revision, desired.settings
    actions: list[Action] = []
    revisions = state.revisions
    conditions = list(state.conditions)

    def condition(kind: str, status: bool, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = set_condition(
            conditions, kind, status, reason, message, now, desired.generation
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
                rev, variant, observed.artifacts[key], "passed", "found in the artifact store", now
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
            record = _record(rev, variant, job.summary, "passed", "", now)
            revisions = _upsert(revisions, record)
            artifacts[variant] = record
            actions.append(Event("Normal", "Compressed", _compressed_message(variant, record)))
        elif job.failed or (job.succeeded and not job.summary):
            result = "gate-failed" if job.gate_failed else "failed"
            message = job.failure or "compression Job failed without a message"
            revisions = _upsert(revisions, _record(rev, variant, job.summary, result, message, now))
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

    def keep_running(revision: str) -> None:
        """Re-apply a revision's Deployments (replicas, selectors and resources follow the spec)."""
        for target in spec.targets:
            dep = by_target_rev.get((target.name, revision))
            if dep is None or not dep.artifact_sha256:
                continue
            replicas = _replicas(target.replicas.min, target.replicas.upper, dep.replicas)
            actions.append(
                Apply(
                    builders.runtime_deployment(
                        desired.name,
                        desired.namespace,
                        desired.uid,
                        spec,
                        target,
                        revision,
                        dep.artifact_sha256,
                        replicas,
                        settings,
                    )
                )
            )

    phase = state.phase
    if failures:
        phase = "Failed"
        reason = "AccuracyGateFailed" if gate_failed else "CompressionFailed"
        condition("Compressed", False, reason, f"revision {rev}: " + "; ".join(failures))
        condition("Progressing", False, reason, f"revision {rev} cannot be deployed")
        if stable and stable != rev:
            keep_running(stable)
    elif compressing or len(artifacts) < len(variants(spec)):
        phase = "Compressing"
        what = ", ".join(compressing) or "waiting for the artifact store"
        condition("Compressed", False, "Compressing", f"revision {rev}: compressing {what}")
        condition("Progressing", True, "Compressing", f"revision {rev} is being compressed")
        if stable and stable != rev:
            keep_running(stable)
    else:
        condition("Compressed", True, "ArtifactsReady", _artifacts_message(rev, artifacts))
        # 2. deploy the desired revision on every target
        all_available = True
        for target in spec.targets:
            variant = variant_of(target)
            sha = str(artifacts[variant]["artifactDigest"])
            current = by_target_rev.get((target.name, rev))
            replicas = _replicas(
                target.replicas.min, target.replicas.upper, current.replicas if current else None
            )
            actions.append(
                Apply(
                    builders.runtime_deployment(
                        desired.name,
                        desired.namespace,
                        desired.uid,
                        spec,
                        target,
                        rev,
                        sha,
                        replicas,
                        settings,
                    )
                )
            )
            if current is None or not current.fully_available or current.replicas != replicas:
                all_available = False
        if all_available:
            if stable != rev:
                actions.append(
                    Event(
                        "Normal",
                        "RevisionStable",
                        f"revision {rev} is available on every target"
                        + (f"; replacing {stable}" if stable else ""),
                    )
                )
            stable = rev
            for dep in observed.deployments:
                if dep.revision != rev and dep.target in wanted_targets:
                    actions.append(Delete("apps/v1", "Deployment", desired.namespace, dep.name))
            phase = "Ready"
            condition("Progressing", False, "RevisionStable", f"revision {rev} is stable")
        else:
            phase = "Deploying"
            condition(
                "Progressing",
                True,
                "Deploying",
                f"revision {rev}: waiting for every target to be available",
            )
            if stable and stable != rev:
                keep_running(stable)

    # 3. availability of what serves now (the stable revision, or the one being deployed)
    serving = stable or (rev if phase == "Deploying" else "")
    target_status, ready_total, desired_total, unavailable = _target_status(
        spec, observed, serving, rev
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
    ready = phase == "Ready"
    if ready:
        condition("Ready", True, "Ready", f"revision {stable} serves on every target")
    else:
        cond = {c["type"]: c for c in conditions}
        why = (
            cond.get("Compressed", {})
            if phase in ("Failed", "Compressing")
            else cond.get("Available", {})
        )
        condition("Ready", False, str(why.get("reason") or phase), str(why.get("message") or phase))

    if phase != state.phase:
        actions.append(
            Event(
                "Warning" if phase in ("Failed", "Degraded") else "Normal",
                "PhaseChanged",
                f"phase {state.phase} -> {phase}",
            )
        )
    new_state = replace(
        state,
        phase=phase,
        stable_revision=stable,
        revisions=revisions,
        conditions=tuple(conditions),
        targets=tuple(target_status),
        ready_replicas=f"{ready_total}/{desired_total}",
    )
    return new_state, actions


def _replicas(low: int, high: int, current: int | None) -> int:
    """Keep what the autoscaler chose, clipped to the spec's bounds; start at the minimum."""
    if current is None:
        return low
    return max(low, min(high, current))


def _target_status(
    spec: EdgeModelSpec, observed: Observed, serving: str, desired_rev: str
) -> tuple[list[dict[str, Any]], int, int, list[str]]:
    rows: list[dict[str, Any]] = []
    ready_total = desired_total = 0
    unavailable: list[str] = []
    for target in spec.targets:
        deps = [d for d in observed.deployments if d.target == target.name]
        serving_dep = next((d for d in deps if d.revision == serving), None)
        ready = sum(d.ready for d in deps)
        replicas = serving_dep.replicas if serving_dep else target.replicas.min
        ready_total += min(ready, replicas) if serving_dep else 0
        desired_total += replicas
        row: dict[str, Any] = {
            "name": target.name,
            "arch": target.arch,
            "accelerator": target.accelerator,
            "revision": serving or desired_rev,
            "replicas": replicas,
            "readyReplicas": serving_dep.ready if serving_dep else 0,
        }
        message = observed.unschedulable.get(target.name)
        if message:
            row["message"] = message
        if serving_dep is not None and serving_dep.ready < target.replicas.min:
            unavailable.append(
                f"target {target.name}: {serving_dep.ready}/{target.replicas.min} ready"
            )
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

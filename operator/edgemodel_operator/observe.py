"""Owns turning raw API objects into the lifecycle's observations (pure functions).

The handler lists Jobs, Pods, Deployments and Services; these functions read what matters
out of them — a Job's outcome and the report its publish step left in its termination
message, a Deployment's availability, a pod the scheduler could not place — so the decision
in lifecycle/ never touches a raw API dict.

It also decides, purely, which SLO readings a pass needs (`readings_needed`), so the handler
only runs the queries a `ReadingsPlan` names and hands back one typed `Readings` value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edgemodel_operator import labels
from edgemodel_operator.canary import RolloutState
from edgemodel_operator.errors import EXIT_GATE_FAILED
from edgemodel_operator.lifecycle import DeploymentObs, Desired, JobObs, State
from edgemodel_operator.lifecycle.compression import ATTEMPT_ANNOTATION
from edgemodel_operator.readings import Reading
from edgemodel_operator.records import check_record

GATE_FAILED_EXIT = EXIT_GATE_FAILED  # `edgemodel compress`: the accuracy gate refused


def _conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {c.get("type", ""): c for c in (obj.get("status") or {}).get("conditions") or []}


def _terminated(statuses: Sequence[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    for status in statuses:
        if status.get("name") == name:
            state = status.get("state") or {}
            last = status.get("lastState") or {}
            return state.get("terminated") or last.get("terminated")
    return None


def _last_lines(text: str, lines: int = 3, limit: int = 600) -> str:
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept)[-limit:]


def publish_summary(
    message: str, before: dict[str, Any] | None
) -> tuple[dict[str, Any] | None, str]:
    """The publish step's termination message as a summary, and what is wrong with it.

    Not JSON or not an object: `before` stands (the message is logs, not a summary). A summary
    with a wrongly typed field (`records.check_record`) is dropped, with the field named.
    """
    try:
        parsed = json.loads(message)
    except ValueError:
        return before, ""
    if not isinstance(parsed, dict):
        return before, ""
    problem = check_record(parsed).problem
    return (None, problem) if problem else (parsed, "")


def job_observation(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> JobObs:
    """A compression Job's outcome, with the report or the reason it failed."""
    job_labels = (job.get("metadata") or {}).get("labels") or {}
    conditions = _conditions(job)
    complete = (conditions.get("Complete") or {}).get("status") == "True"
    failed = (conditions.get("Failed") or {}).get("status") == "True"
    summary: dict[str, Any] | None = None
    malformed = ""
    failure = ""
    gate_failed = False
    ordered = sorted(pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp", ""))
    for pod in ordered:
        status = pod.get("status") or {}
        publish = _terminated(status.get("containerStatuses") or [], "publish")
        if publish and publish.get("exitCode") == 0 and publish.get("message"):
            summary, malformed = publish_summary(publish["message"], summary)
        compress = _terminated(status.get("initContainerStatuses") or [], "compress")
        if compress and compress.get("exitCode") not in (None, 0):
            code = compress.get("exitCode")
            gate_failed = gate_failed or code == GATE_FAILED_EXIT
            failure = f"compress exited {code}: {_last_lines(compress.get('message') or '')}"
        elif publish and publish.get("exitCode") not in (None, 0):
            tail = _last_lines(publish.get("message") or "")
            failure = f"publish exited {publish.get('exitCode')}: {tail}"
        elif status.get("reason") == "Evicted":
            # The kubelet evicted the pod (node pressure): no container said why.
            failure = f"Evicted: {_last_lines(status.get('message') or '')}".strip(": ")
    if malformed and summary is None:
        # A publish that found the store's record (write-once) reports it: not trusted blindly.
        failure = failure or f"publish reported a malformed record: {malformed}"
    if failed and not failure:
        cond = conditions.get("Failed") or {}
        failure = f"{cond.get('reason', 'Failed')}: {cond.get('message', '')}".strip(": ")
    elif failed:
        reason = (conditions.get("Failed") or {}).get("reason")
        if reason and reason not in ("PodFailurePolicy", "BackoffLimitExceeded"):
            failure = f"{reason}; {failure}"
    annotations = (job.get("metadata") or {}).get("annotations") or {}
    attempt = str(annotations.get(ATTEMPT_ANNOTATION) or "1")
    return JobObs(
        name=(job.get("metadata") or {}).get("name", ""),
        revision=job_labels.get(labels.REVISION, ""),
        variant=job_labels.get(labels.VARIANT, ""),
        active=bool((job.get("status") or {}).get("active")),
        succeeded=complete,
        failed=failed,
        summary=summary,
        failure=failure,
        gate_failed=gate_failed,
        attempt=int(attempt) if attempt.isdigit() and int(attempt) > 0 else 1,
    )


def deployment_observation(dep: Mapping[str, Any]) -> DeploymentObs:
    meta = dep.get("metadata") or {}
    dep_labels = meta.get("labels") or {}
    status = dep.get("status") or {}
    spec = dep.get("spec") or {}
    return DeploymentObs(
        name=meta.get("name", ""),
        revision=dep_labels.get(labels.REVISION, ""),
        target=dep_labels.get(labels.TARGET, ""),
        replicas=int(spec.get("replicas", 1)),
        ready=int(status.get("readyReplicas") or 0),
        available=int(status.get("availableReplicas") or 0),
        updated=int(status.get("updatedReplicas") or 0),
        current=int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0),
        artifact_sha256=(meta.get("annotations") or {}).get(labels.ARTIFACT_SHA256, ""),
        spec_hash=(meta.get("annotations") or {}).get(labels.SPEC_HASH, ""),
    )


def unschedulable_targets(pods: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """target -> the scheduler's message, for runtime pods it could not place."""
    out: dict[str, str] = {}
    for pod in pods:
        if (pod.get("spec") or {}).get("nodeName"):
            continue
        scheduled = _conditions(pod).get("PodScheduled") or {}
        if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
            target = ((pod.get("metadata") or {}).get("labels") or {}).get(labels.TARGET)
            if target:
                out[target] = str(scheduled.get("message", "unschedulable"))
    return out


# ------------------------------------------------------------------ SLO readings


@dataclass(frozen=True)
class ReadingsPlan:
    """Which SLO readings one pass needs; `readings_needed` decides it, the handler queries it.

    `current`: p95 and error rate of what serves each target now (autoscaler, status), over
    `window_s`. `canary_vs`: the stable revision the canary is analysed against (empty: no
    analysis). `guard`: the promoted revision is checked during its post-promotion guard.
    Analysis and guard look back `analysis_window_s`.
    """

    current: bool = False
    window_s: int = 0
    canary_vs: str = ""
    guard: bool = False
    analysis_window_s: int = 0


@dataclass(frozen=True)
class Readings:
    """The SLO readings of one pass, as the lifecycle's `Observed` takes them."""

    p95: Mapping[str, Reading] = field(default_factory=dict)
    errors: Mapping[str, Reading] = field(default_factory=dict)
    # share of requests shed at the in-flight cap, per target (autoscaled specs only)
    shed: Mapping[str, Reading] = field(default_factory=dict)
    analysis: Reading | None = None
    guard: Reading | None = None


def readings_needed(desired: Desired, state: State, now: datetime) -> ReadingsPlan:
    """The readings this pass needs (pure): none without an SLO; the current ones with it;
    a canary analysis while a revision other than the stable one rolls out (and has not
    been rolled back); the guard check while the just-promoted revision is under guard."""
    spec = desired.spec
    if spec.slo is None:
        return ReadingsPlan()
    rev, stable = desired.revision, state.stable_revision
    rollout = RolloutState.from_dict(state.rollout.get("canary"))
    analysing = bool(stable) and stable != rev and rollout.rolled_back_at is None
    guarding = (
        stable == rev
        and rollout.canary_revision == rev
        and rollout.guard_active(now.timestamp(), spec.rollout.post_promotion_guard_seconds)
    )
    return ReadingsPlan(
        current=True,
        window_s=max(10, spec.autoscaling.interval_seconds),
        canary_vs=stable if analysing else "",
        guard=guarding,
        analysis_window_s=max(10, spec.rollout.analysis_interval_seconds),
    )

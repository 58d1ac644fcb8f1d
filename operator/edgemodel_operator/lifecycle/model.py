"""Owns the lifecycle's inputs and outputs: what was desired and observed, what status keeps,
and the actions a pass asks the handler to carry out.

Plain frozen data, no behaviour beyond (de)serialising status: the handler builds `Desired`
and `Observed`, `transition` returns a new `State` and a list of `Action`s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgemodel_operator.api import EdgeModelSpec, Phase
from edgemodel_operator.providers import ProviderFallback
from edgemodel_operator.readings import Reading
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
    attempt: int = 1  # which try of this revision and variant (annotation edgemodel.dev/attempt)


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
    # target -> share of its requests shed at the in-flight cap (autoscaled specs only)
    shed: Mapping[str, Reading] = field(default_factory=dict)
    # the canary checked against the SLO and the stable baseline, over all targets
    analysis: Reading | None = None
    # the newly promoted revision against the SLO, during the post-promotion guard
    guard: Reading | None = None
    # target -> the execution provider its GPU server fell back to (read off its pods)
    provider_fallbacks: Mapping[str, ProviderFallback] = field(default_factory=dict)
    # artifact key -> what was wrong with the store's record for it, "" when the lookup found
    # a usable record or none; only the keys looked up this pass (see `record_condition`)
    record_checks: Mapping[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------ state


@dataclass(frozen=True)
class State:
    """What status keeps because it cannot be re-observed (principle 3), plus the summary."""

    phase: Phase = Phase.PENDING
    stable_revision: str = ""
    canary_revision: str = ""
    revisions: tuple[Mapping[str, Any], ...] = ()
    conditions: tuple[Mapping[str, Any], ...] = ()
    targets: tuple[Mapping[str, Any], ...] = ()
    ready_replicas: str = ""
    last_rollback: Mapping[str, Any] | None = None
    rollout: Mapping[str, Any] = field(default_factory=dict)
    p95_latency_ms: float | None = None

    def __post_init__(self) -> None:
        # A phase given as its string (status, tests) is the same phase.
        if not isinstance(self.phase, Phase):
            object.__setattr__(self, "phase", Phase.parse(self.phase))

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> State:
        return cls(
            phase=Phase.parse(status.get("phase") or "Pending"),
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
            "phase": self.phase.value,
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


# ------------------------------------------------------------------ actions


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


@dataclass(frozen=True)
class Requeue:
    """Look at this EdgeModel again after this long, unless a watch event comes first.

    Every pass ends with exactly one: the phase's safety-net poll, shortened to the SLO loop's
    interval and to the end of a compression retry's backoff.
    """

    after_seconds: float
    why: str


Action = Apply | Delete | Event | Requeue

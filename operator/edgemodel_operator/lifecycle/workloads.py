"""Owns the diff from wanted replicas to actions: which Deployments and Services to apply or
delete so the cluster runs what a rollout strategy wants.

Strategies only say "revision R runs N replicas on target T" and "revision R goes"; this
module turns that into server-side applies of runtime Deployments (skipped when the one
observed was stamped with the same spec hash: most passes change nothing) and deletions,
plus the housekeeping every pass does: a Service per target from the start, and removal of
whatever a target dropped from the spec left behind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgemodel_operator import builders
from edgemodel_operator.api import Target
from edgemodel_operator.builders import SPEC_HASH
from edgemodel_operator.lifecycle.compression import find
from edgemodel_operator.lifecycle.model import (
    Action,
    Apply,
    Delete,
    DeploymentObs,
    Desired,
    Event,
    Observed,
)
from edgemodel_operator.revision import variant_of


@dataclass(frozen=True)
class World:
    """One pass's Deployments indexed by (target, revision), with the artifacts status knows."""

    desired: Desired
    observed: Observed
    revisions: tuple[Mapping[str, Any], ...]
    counts: Mapping[str, int]

    def deployment(self, target: str, revision: str) -> DeploymentObs | None:
        for dep in self.observed.deployments:
            if (dep.target, dep.revision) == (target, revision):
                return dep
        return None

    def available(self, revision: str) -> bool:
        """Every target with replicas wanted runs `revision` fully available at that count."""
        for target in self.desired.spec.targets:
            want = self.counts.get(target.name, 0)
            if want == 0:
                continue
            dep = self.deployment(target.name, revision)
            if dep is None or not dep.fully_available or dep.replicas != want:
                return False
        return True

    def sha_for(self, revision: str, target: Target) -> str:
        """The artifact `revision` serves on `target`: from status, else from its Deployment."""
        record = find(self.revisions, revision, variant_of(target))
        if record is not None and record.get("artifactDigest"):
            return str(record["artifactDigest"])
        dep = self.deployment(target.name, revision)
        return dep.artifact_sha256 if dep is not None else ""

    def surge_blocked(self, stable: str, target: Target) -> tuple[bool, Event | None]:
        """Whether the new revision's pods found no room beside the old ones (a node's only
        GPU, say): then the old revision of that target gives its place up (replace instead
        of surge), with an Event saying so while it still has replicas to give."""
        rev = self.desired.revision
        unschedulable = self.observed.unschedulable
        new_dep = self.deployment(target.name, rev)
        if target.name not in unschedulable or new_dep is None or rev == stable:
            return False, None
        old_dep = self.deployment(target.name, stable) if stable else None
        if old_dep is None or old_dep.replicas <= 0:
            return True, None
        return True, Event(
            "Normal",
            "ReplacingInPlace",
            f"target {target.name}: no room for revision {rev} beside {stable} "
            f"({unschedulable[target.name]}); replacing in place",
        )


@dataclass
class Wanted:
    """What the strategies want: replicas per (revision, target), and revisions to remove."""

    replicas: dict[tuple[str, str], int] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)

    def run(self, revision: str, target: Target, replicas: int) -> None:
        self.replicas[(revision, target.name)] = replicas

    def run_all(self, revision: str, world: World) -> None:
        """`revision` on every target at the pass's replica counts."""
        for target in world.desired.spec.targets:
            self.run(revision, target, world.counts[target.name])

    def remove(self, revision: str) -> None:
        if revision not in self.removed:
            self.removed.append(revision)


def diff(world: World, wanted: Wanted) -> list[Action]:
    """The applies and deletions that make the cluster run `wanted`."""
    d = world.desired
    targets = {t.name: t for t in d.spec.targets}
    actions: list[Action] = []
    for (revision, name), replicas in wanted.replicas.items():
        target = targets[name]
        sha = world.sha_for(revision, target)
        if revision in wanted.removed or not sha:
            continue
        manifest = builders.runtime_deployment(
            d.name, d.namespace, d.uid, d.spec, target, revision, sha, replicas, d.settings
        )
        seen = world.deployment(name, revision)
        if seen is not None and seen.spec_hash == manifest["metadata"]["annotations"][SPEC_HASH]:
            continue  # already as wanted: skip the write (most passes change nothing)
        actions.append(Apply(manifest))
    for revision in wanted.removed:
        actions.extend(
            Delete("apps/v1", "Deployment", d.namespace, dep.name)
            for dep in world.observed.deployments
            if dep.revision == revision and dep.target in targets
        )
    return actions


def housekeeping(desired: Desired, observed: Observed) -> list[Action]:
    """Targets removed from the spec go, whatever revision they run; Services exist from the
    start, so clients can resolve them before the first revision is up."""
    wanted = {t.name for t in desired.spec.targets}
    ns = desired.namespace
    actions: list[Action] = [
        Delete("apps/v1", "Deployment", ns, dep.name)
        for dep in observed.deployments
        if dep.target not in wanted
    ]
    services = {builders.service_name(desired.name, t) for t in wanted}
    actions.extend(Delete("v1", "Service", ns, svc) for svc in observed.services - services)
    actions.extend(
        Apply(builders.target_service(desired.name, ns, desired.uid, target))
        for target in desired.spec.targets
        if builders.service_name(desired.name, target.name) not in observed.services
    )
    return actions

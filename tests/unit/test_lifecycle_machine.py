"""The lifecycle as a declared state machine: every phase against every class of observation.

Each world is status as the operator left it in one phase (with what it remembers: artifact
records, the stable revision, the canary's state) plus the Deployments that phase runs. Each
class of observation is one thing the cluster may report on the next pass. Every pass may
only take an edge `phases.EDGES` declares (within a generation) or land in `phases.ENTRY`
(on a new generation); every declared edge is taken by some pass (none is declared for
nothing); terminal phases stay put until the generation changes; and every pass says when
to look again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pytest

from edgemodel_operator.builders import artifact_key, deployment_name
from edgemodel_operator.lifecycle import (
    EDGES,
    ENTRY,
    TERMINAL,
    Apply,
    DeploymentObs,
    Desired,
    JobObs,
    Observed,
    Phase,
    Requeue,
    State,
    allowed,
    transition,
)
from edgemodel_operator.lifecycle.phases import REQUEUE_SECONDS
from edgemodel_operator.readings import Outcome, Reading
from edgemodel_operator.revision import variants
from tests.unit.test_lifecycle import NOW, SHA, desired, passed_records, spec, summary

OLD = "r0000000000"
SERVICES = frozenset({"digits-arm", "digits-gpu"})
SLO_SPEC = spec(
    slo={"latencyP95Ms": 20},
    rollout={"steps": [50, 100], "analysisIntervalSeconds": 10, "failureThreshold": 1},
)
OK = Reading(Outcome.SUCCESSFUL, 5.0, 20.0, "p95 5ms <= 20ms")
BAD = Reading(Outcome.FAILED, 80.0, 20.0, "p95 80ms > 20ms")
NO_DATA = Reading(Outcome.INCONCLUSIVE, None, 20.0, "no data")
DOWN = Reading(Outcome.ERROR, None, None, "connection refused")
UNPLACED = {"gpu": "0/6 nodes are available: 1 Insufficient nvidia.com/gpu"}


def deps(d: Desired, revision: str, ready: bool, replicas: int | None = None) -> list[Any]:
    out = []
    for target in d.spec.targets:
        count = target.replicas.min if replicas is None else replicas
        up = count if ready else 0
        name = deployment_name("digits", target.name, revision)
        out.append(DeploymentObs(name, revision, target.name, count, up, up, count, True, SHA))
    return out


def old_records(d: Desired) -> tuple[dict[str, Any], ...]:
    return tuple({**r, "revision": OLD} for r in passed_records(d))


def failed_record(d: Desired, variant: str, **extra: Any) -> dict[str, Any]:
    record = {
        "revision": d.revision,
        "variant": variant,
        "result": "gate-failed",
        "message": "compress exited 3: agreement 0.41 < 0.98",
        "failure": "permanent",
        "attempts": 1,
        "generation": d.generation,
    }
    return {**record, **extra}


@dataclass(frozen=True)
class World:
    """Status in one phase, and the Deployments that phase runs."""

    desired: Desired
    state: State
    running: tuple[DeploymentObs, ...]


def _canary_rollout(d: Desired, **extra: Any) -> dict[str, Any]:
    start = (NOW - timedelta(seconds=5)).timestamp()
    return {
        "canary": {
            "canaryRevision": d.revision,
            "previousStable": OLD,
            "stepIndex": 0,
            "stepStartedAt": start,
            "lastAnalysisAt": start,
            **extra,
        }
    }


def pending() -> World:
    return World(desired(), State(), ())


def pending_status_lost() -> World:
    # Status was lost (restored from a backup without it): the revision already runs.
    d = desired()
    return World(d, State(), tuple(deps(d, d.revision, True)))


def compressing_replacement() -> World:
    # No SLO: the revision replaces the stable one once compressed; one variant is done and
    # its Deployments already run.
    d = desired()
    arm = passed_records(d)[0]
    state = State(phase=Phase.COMPRESSING, stable_revision=OLD, revisions=(*old_records(d), arm))
    return World(d, state, tuple(deps(d, OLD, True) + deps(d, d.revision, True)))


def compressing_first() -> World:
    d = desired()
    return World(d, State(phase=Phase.COMPRESSING), ())


def compressing() -> World:
    d = desired(SLO_SPEC)
    state = State(phase=Phase.COMPRESSING, stable_revision=OLD, revisions=old_records(d))
    return World(d, state, tuple(deps(d, OLD, True)))


def compressing_retrying() -> World:
    d = desired()
    retry_at = (NOW + timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
    transient = {
        **failed_record(d, "arm64"),
        "result": "failed",
        "failure": "transient",
        "message": "compress exited 2: https://models.example.com/m.onnx: cannot connect",
        "retryAt": retry_at,
    }
    state = State(phase=Phase.COMPRESSING, revisions=(transient,))
    return World(d, state, ())


def deploying() -> World:
    d = desired()
    state = State(
        phase=Phase.DEPLOYING, stable_revision=OLD, revisions=old_records(d) + passed_records(d)
    )
    return World(d, state, tuple(deps(d, OLD, True) + deps(d, d.revision, False)))


def progressing() -> World:
    d = desired(SLO_SPEC)
    state = State(
        phase=Phase.PROGRESSING,
        stable_revision=OLD,
        canary_revision=d.revision,
        revisions=old_records(d) + passed_records(d),
        rollout=_canary_rollout(d),
    )
    return World(d, state, tuple(deps(d, OLD, True) + deps(d, d.revision, True, 1)))


def progressing_last_step() -> World:
    d = desired(SLO_SPEC)
    state = State(
        phase=Phase.PROGRESSING,
        stable_revision=OLD,
        canary_revision=d.revision,
        revisions=old_records(d) + passed_records(d),
        rollout=_canary_rollout(d, stepIndex=1),
    )
    return World(d, state, tuple(deps(d, OLD, True, 0) + deps(d, d.revision, True)))


def progressing_stalling() -> World:
    # One analysis short of both limits (defaults: 20 without data, 10 unreachable).
    d = desired(SLO_SPEC)
    world = progressing()
    rollout = _canary_rollout(d, inconclusiveChecks=19, errorChecks=9)
    return replace(world, state=replace(world.state, rollout=rollout))


def ready() -> World:
    d = desired()
    state = State(phase=Phase.READY, stable_revision=d.revision, revisions=passed_records(d))
    return World(d, state, tuple(deps(d, d.revision, True)))


def ready_guarded() -> World:
    d = desired(SLO_SPEC)
    promoted = (NOW - timedelta(seconds=20)).timestamp()
    state = State(
        phase=Phase.READY,
        stable_revision=d.revision,
        revisions=old_records(d) + passed_records(d),
        rollout=_canary_rollout(d, stepIndex=1, promotedAt=promoted, lastAnalysisAt=promoted),
    )
    return World(d, state, tuple(deps(d, d.revision, True)))


def degraded() -> World:
    # Freshly promoted, and a replica short.
    world = ready_guarded()
    state = replace(world.state, phase=Phase.DEGRADED)
    return World(world.desired, state, tuple(deps(world.desired, world.desired.revision, False)))


def rolling_back() -> World:
    d = desired(SLO_SPEC)
    at = (NOW - timedelta(seconds=20)).timestamp()
    state = State(
        phase=Phase.ROLLING_BACK,
        stable_revision=d.revision,
        revisions=old_records(d) + passed_records(d),
        last_rollback={"from": d.revision, "to": OLD, "reason": "guard", "time": "x"},
        rollout=_canary_rollout(d, stepIndex=1, promotedAt=at, rolledBackAt=at),
    )
    return World(d, state, tuple(deps(d, d.revision, True) + deps(d, OLD, False)))


def failed_gate() -> World:
    d = desired()
    records = (failed_record(d, "arm64"), passed_records(d)[1])
    return World(d, State(phase=Phase.FAILED, revisions=records), ())


def failed_stalled() -> World:
    d = desired(SLO_SPEC)
    stalled = {
        "stalledAt": NOW.timestamp() - 30,
        "stalledGeneration": d.generation,
        "stalledReason": "AnalysisInconclusive",
        "stalledMessage": "canary: 20 analyses in a row without data",
    }
    state = State(
        phase=Phase.FAILED,
        stable_revision=OLD,
        revisions=old_records(d) + passed_records(d),
        rollout=_canary_rollout(d, **stalled),
    )
    return World(d, state, tuple(deps(d, OLD, True)))


WORLDS: dict[str, Callable[[], World]] = {
    "pending": pending,
    "pending-status-lost": pending_status_lost,
    "compressing-first": compressing_first,
    "compressing": compressing,
    "compressing-replacement": compressing_replacement,
    "compressing-retrying": compressing_retrying,
    "deploying": deploying,
    "progressing": progressing,
    "progressing-last-step": progressing_last_step,
    "progressing-stalling": progressing_stalling,
    "ready": ready,
    "ready-guarded": ready_guarded,
    "degraded": degraded,
    "rolling-back": rolling_back,
    "failed-gate": failed_gate,
    "failed-stalled": failed_stalled,
}


# ------------------------------------------------------------------ observations


def _jobs(w: World, **kind: Any) -> Observed:
    d = w.desired
    jobs = [JobObs(f"digits-c-{d.revision}-{v}", d.revision, v, **kind) for v in variants(d.spec)]
    return Observed(jobs=jobs, deployments=list(w.running), services=SERVICES)


def _with(w: World, **fields: Any) -> Observed:
    return Observed(deployments=list(w.running), services=SERVICES, **fields)


def _revision(w: World, ready: bool) -> Observed:
    d = w.desired
    others = [dep for dep in w.running if dep.revision != d.revision]
    return Observed(deployments=others + deps(d, d.revision, ready), services=SERVICES)


def _previous(w: World) -> Observed:
    d = w.desired
    others = [dep for dep in w.running if dep.revision != OLD]
    return Observed(deployments=others + deps(d, OLD, True), services=SERVICES)


def _stable_lost(w: World) -> Observed:
    lost = [replace(dep, ready=0, available=0) for dep in w.running]
    return Observed(deployments=lost, services=SERVICES)


def _readings(w: World, reading: Reading) -> Observed:
    return _with(w, analysis=reading, guard=reading, p95={"arm": reading, "gpu": reading})


OBSERVATIONS: dict[str, Callable[[World], Observed]] = {
    "nothing-new": _with,
    "store-down": lambda w: _with(w, store_ready=False),
    "jobs-active": lambda w: _jobs(w, active=True),
    "jobs-succeeded": lambda w: _jobs(w, succeeded=True, summary=summary("arm64")),
    "jobs-failed-transient": lambda w: _jobs(
        w, failed=True, failure="compress exited 2: https://m/x.onnx: HTTP 503 Unavailable"
    ),
    "jobs-failed-permanent": lambda w: _jobs(
        w, failed=True, failure="compress exited 2: not an ONNX model"
    ),
    "jobs-gate-failed": lambda w: _jobs(
        w, failed=True, gate_failed=True, failure="compress exited 3: agreement 0.4"
    ),
    "artifacts-in-store": lambda w: _with(
        w,
        artifacts={
            artifact_key(w.desired.revision, v): summary(v) for v in variants(w.desired.spec)
        },
    ),
    "revision-available": lambda w: _revision(w, True),
    "revision-unavailable": lambda w: _revision(w, False),
    "previous-available": _previous,
    "serving-lost-replicas": _stable_lost,
    "unschedulable": lambda w: _with(w, unschedulable=UNPLACED),
    "metrics-ok": lambda w: _readings(w, OK),
    "metrics-failed": lambda w: _readings(w, BAD),
    "metrics-no-data": lambda w: _readings(w, NO_DATA),
    "metrics-error": lambda w: _readings(w, DOWN),
    # Two things at once, as a pass may see them.
    "jobs-succeeded+unschedulable": lambda w: replace(
        _jobs(w, succeeded=True, summary=summary("arm64")), unschedulable=UNPLACED
    ),
    "revision-available+unschedulable": lambda w: replace(
        _revision(w, True), unschedulable=UNPLACED
    ),
    "previous-available+unschedulable": lambda w: replace(_previous(w), unschedulable=UNPLACED),
    "metrics-ok+unschedulable": lambda w: replace(_readings(w, OK), unschedulable=UNPLACED),
}

CASES = [(w, o) for w in WORLDS for o in OBSERVATIONS]


def run(world: World, observation: str, later: float = 10.0) -> tuple[State, list[Any]]:
    observed = OBSERVATIONS[observation](world)
    return transition(world.state, world.desired, observed, NOW + timedelta(seconds=later))


@pytest.mark.parametrize(("world", "observation"), CASES)
def test_a_pass_takes_only_declared_edges(world: str, observation: str) -> None:
    w = WORLDS[world]()
    state, actions = run(w, observation)
    before = w.state.phase
    assert allowed(before, state.phase, new_generation=False), (
        f"{before} -> {state.phase} on {observation} is not a declared edge"
    )
    # The phase is written as the CRD's string, whatever the enum.
    assert state.to_status(3)["phase"] == state.phase.value
    # Every pass ends by saying when to look again, and only once.
    requeues = [a for a in actions if isinstance(a, Requeue)]
    assert len(requeues) == 1 and actions[-1] is requeues[0]
    assert 0 < requeues[0].after_seconds <= REQUEUE_SECONDS[state.phase]


@pytest.mark.parametrize(("world", "observation"), CASES)
def test_a_new_generation_re_enters_the_machine(world: str, observation: str) -> None:
    w = WORLDS[world]()
    newer = replace(w, desired=replace(w.desired, generation=w.desired.generation + 1))
    state, _ = run(newer, observation)
    assert allowed(w.state.phase, state.phase, new_generation=True)
    assert state.phase in ENTRY and state.phase is not Phase.PENDING


def test_every_declared_edge_is_taken() -> None:
    # An edge declared but never taken would be a phase change the machine promises and no
    # observation causes.
    taken = set()
    for make in WORLDS.values():
        for observation in OBSERVATIONS:
            w = make()
            taken.add((w.state.phase, run(w, observation)[0].phase))
    declared = {(a, b) for a, targets in EDGES.items() for b in targets}
    assert declared - taken == set()


@pytest.mark.parametrize("world", ["failed-gate", "failed-stalled"])
@pytest.mark.parametrize("observation", list(OBSERVATIONS))
def test_terminal_phases_stay_until_the_generation_changes(world: str, observation: str) -> None:
    w = WORLDS[world]()
    assert w.state.phase in TERMINAL
    state, actions = run(w, observation, later=3600.0)
    assert state.phase is Phase.FAILED
    conditions = {c["type"]: c for c in state.conditions}
    assert conditions["Stalled"]["status"] == "True"
    assert conditions["Stalled"]["message"].endswith("needs a spec change")
    assert conditions["Ready"]["status"] == "False"
    # Nothing new is tried for the failed revision: no compression Job, no canary Deployment.
    for action in actions:
        if isinstance(action, Apply):
            labels = action.manifest["metadata"].get("labels") or {}
            assert action.manifest["kind"] != "Job"
            assert labels.get("edgemodel.dev/revision") != w.desired.revision or (
                world == "failed-gate"
            )
    # And a second pass over the same observation changes nothing more.
    again, _ = transition(state, w.desired, OBSERVATIONS[observation](w), NOW)
    assert again.phase is Phase.FAILED


def test_every_phase_has_edges_and_only_failed_is_terminal() -> None:
    assert set(EDGES) == set(Phase)
    assert {Phase.FAILED} == TERMINAL
    assert EDGES[Phase.FAILED] == {Phase.FAILED}
    # Nothing ever goes back to Pending: that is only where an EdgeModel without status starts.
    assert all(Phase.PENDING not in targets for targets in EDGES.values())


def test_phases_are_the_crd_and_api_contract() -> None:
    import yaml

    from edgemodel_operator import api
    from tests.unit.test_api_types import CRD

    schema = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    enum = schema["properties"]["status"]["properties"]["phase"]["enum"]
    assert Phase is api.Phase and [p.value for p in Phase] == enum
    assert State.from_status({"phase": "Ready"}).phase is Phase.READY
    assert State.from_status({"phase": "Bogus"}).phase is Phase.PENDING
    assert yaml.safe_dump({"phase": State(phase=Phase.ROLLING_BACK).to_status(1)["phase"]}) == (
        "phase: RollingBack\n"
    )

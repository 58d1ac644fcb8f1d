"""Failure semantics, declared as edges: what fails for good, what is tried again, and when.

A source or infrastructure failure (cannot connect, timeout, 5xx, an evicted or timed-out
Job) is transient: the revision stays Compressing and gets a new Job after a backoff that
doubles per attempt (capped), and at once on a new generation; the attempt count lives in
status, the operator's only memory across restarts. A failed accuracy gate or an invalid
model is permanent for the revision: Failed and Stalled until the spec's next generation,
which re-evaluates it. A canary whose analysis keeps finding no data (or no Prometheus) is
held, but only up to the spec's limits: then the rollout is Failed and Stalled with that
reason, and the stable revision serves alone until the next generation.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from edgemodel_operator.api import SpecError, parse_spec
from edgemodel_operator.lifecycle import (
    Apply,
    Delete,
    Desired,
    Event,
    JobObs,
    Observed,
    Phase,
    Requeue,
    State,
    transition,
)
from edgemodel_operator.lifecycle.compression import ATTEMPT_ANNOTATION
from edgemodel_operator.lifecycle.failures import (
    BACKOFF_CAP_SECONDS,
    FailureKind,
    backoff_seconds,
    classify,
)
from edgemodel_operator.observe import job_observation
from edgemodel_operator.readings import Outcome, Reading
from edgemodel_operator.revision import revision_of
from edgemodel_operator.settings import Settings
from tests.unit.test_lifecycle import NOW, SHA, desired, passed_records, spec, summary
from tests.unit.test_lifecycle_machine import OLD, SERVICES, deps, old_records

UNREACHABLE = (
    "compress exited 2: https://models.example.com/m.onnx: cannot connect "
    "([Errno -2] Name or service not known)"
)
ONE_TARGET = spec(targets=[{"name": "cpu", "arch": "amd64"}])


def one(raw: dict[str, Any] | None = None, generation: int = 3) -> Desired:
    parsed = parse_spec(raw or ONE_TARGET)
    return Desired("digits", "ns", "uid-1", generation, parsed, revision_of(parsed), Settings())


def failed_job(d: Desired, failure: str, attempt: int = 1, gate: bool = False) -> JobObs:
    name = f"digits-c-{d.revision}-amd64"
    return JobObs(
        name, d.revision, "amd64", failed=True, failure=failure, gate_failed=gate, attempt=attempt
    )


def jobs_applied(actions: list[Any]) -> list[dict[str, Any]]:
    return [
        dict(a.manifest) for a in actions if isinstance(a, Apply) and a.manifest["kind"] == "Job"
    ]


def jobs_deleted(actions: list[Any]) -> list[str]:
    return [a.name for a in actions if isinstance(a, Delete) and a.kind == "Job"]


def conditions(state: State) -> dict[str, dict[str, Any]]:
    return {c["type"]: dict(c) for c in state.conditions}


def requeue(actions: list[Any]) -> float:
    return next(a.after_seconds for a in actions if isinstance(a, Requeue))


def restarted(state: State, generation: int = 3) -> State:
    """The state as a restarted operator reads it back from status (JSON and all)."""
    return State.from_status(json.loads(json.dumps(state.to_status(generation))))


# ------------------------------------------------------------------ classification


@pytest.mark.parametrize(
    ("failure", "gate", "kind"),
    [
        (UNREACHABLE, False, FailureKind.TRANSIENT),
        ("compress exited 2: https://m/x.onnx: fetch failed (timed out)", False, "transient"),
        ("compress exited 2: https://m/x.onnx: HTTP 503 Service Unavailable", False, "transient"),
        ("compress exited 2: https://m/x.onnx: HTTP 429 Too Many Requests", False, "transient"),
        ("DeadlineExceeded; Job was active longer than specified deadline", False, "transient"),
        ("Evicted: The node was low on resource: memory.", False, "transient"),
        ("publish exited 1: artifact store at http://store: cannot connect", False, "transient"),
        ("compress exited 2: https://m/x.onnx: HTTP 404 Not Found", False, "permanent"),
        ("compress exited 2: m.onnx: sha256 mismatch: expected aa, got bb", False, "permanent"),
        ("compress exited 2: not a valid ONNX model: protobuf parse error", False, "permanent"),
        ("compress exited 1: out of memory", False, "permanent"),
        ("compress exited 3: agreement 0.41 < required 0.99", True, "permanent"),
        ("", False, "permanent"),
    ],
)
def test_failures_are_transient_only_when_the_source_or_infrastructure_failed(
    failure: str, gate: bool, kind: str
) -> None:
    assert classify(failure, gate) == kind


def test_backoff_doubles_per_attempt_up_to_a_cap() -> None:
    waits = [backoff_seconds(n) for n in range(1, 12)]
    assert waits[:4] == [10.0, 20.0, 40.0, 80.0]
    assert all(a <= b for a, b in itertools.pairwise(waits))
    assert max(waits) == BACKOFF_CAP_SECONDS == waits[-1]


# ------------------------------------------------------------------ transient failures


def test_an_unreachable_model_uri_is_retried_not_failed() -> None:
    d = one()
    state, actions = transition(State(), d, Observed(jobs=[failed_job(d, UNREACHABLE)]), NOW)
    assert state.phase is Phase.COMPRESSING
    compressed = conditions(state)["Compressed"]
    assert (compressed["status"], compressed["reason"]) == ("False", "CompressionRetrying")
    assert "cannot connect" in compressed["message"] and "attempt 2 in 10s" in compressed["message"]
    assert conditions(state)["Stalled"]["status"] == "False"
    (record,) = state.revisions
    assert (record["failure"], record["attempts"], record["generation"]) == ("transient", 1, 3)
    assert record["retryAt"] == (NOW + timedelta(seconds=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    warning = next(a for a in actions if isinstance(a, Event) and a.reason == "CompressionFailed")
    assert warning.type == "Warning" and "transient: attempt 2 in 10s" in warning.message
    # Nothing tried yet, but the operator looks again when the backoff ends.
    assert jobs_applied(actions) == [] and jobs_deleted(actions) == []
    assert requeue(actions) == 10.0


def test_a_transient_failure_is_retried_after_its_backoff_with_the_attempt_counted() -> None:
    d = one()
    first = failed_job(d, UNREACHABLE)
    state, _ = transition(State(), d, Observed(jobs=[first]), NOW)
    # Within the backoff, across an operator restart: wait, and say how long.
    waiting, actions = transition(
        restarted(state), d, Observed(jobs=[first]), NOW + timedelta(seconds=4)
    )
    assert waiting.phase is Phase.COMPRESSING and jobs_deleted(actions) == []
    assert requeue(actions) == pytest.approx(6.0)
    # Due: the failed Job gives up its name, then the next attempt is asked for.
    due = NOW + timedelta(seconds=11)
    cleared, actions = transition(restarted(waiting), d, Observed(jobs=[first]), due)
    assert jobs_deleted(actions) == [first.name] and jobs_applied(actions) == []
    assert cleared.phase is Phase.COMPRESSING
    retried, actions = transition(restarted(cleared), d, Observed(), due)
    (job,) = jobs_applied(actions)
    assert job["metadata"]["annotations"][ATTEMPT_ANNOTATION] == "2"
    assert any(isinstance(a, Event) and a.reason == "CompressionRetried" for a in actions)
    # The second attempt fails the same way: attempt 2 recorded, the wait doubles.
    second = failed_job(d, UNREACHABLE, attempt=2)
    again, actions = transition(restarted(retried), d, Observed(jobs=[second]), due)
    (record,) = again.revisions
    assert (record["attempts"], again.phase) == (2, Phase.COMPRESSING)
    assert record["retryAt"] == (due + timedelta(seconds=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert requeue(actions) == 10.0  # Compressing's own poll comes sooner
    # And the third attempt succeeds: the revision deploys.
    third = JobObs(first.name, d.revision, "amd64", succeeded=True, summary=summary("amd64"))
    third = replace(third, attempt=3)
    done, _ = transition(restarted(again), d, Observed(jobs=[third]), due + timedelta(minutes=1))
    assert done.phase is Phase.DEPLOYING
    assert conditions(done)["Compressed"]["status"] == "True"


def test_fixing_the_uri_retries_at_once_on_the_new_generation() -> None:
    # The user's story: the URI was wrong; they fix it (same model sha256, so the same
    # revision, but a new generation) and do not wait out any backoff.
    d = one()
    state, _ = transition(State(), d, Observed(jobs=[failed_job(d, UNREACHABLE)]), NOW)
    fixed_uri = "https://models.example.com/ok.onnx"
    fixed_raw = {**ONE_TARGET, "model": {"uri": fixed_uri, "sha256": SHA}}
    fixed = one(fixed_raw, generation=4)
    assert fixed.revision == d.revision
    soon = NOW + timedelta(seconds=1)
    cleared, actions = transition(state, fixed, Observed(jobs=[failed_job(d, UNREACHABLE)]), soon)
    assert jobs_deleted(actions) == [failed_job(d, UNREACHABLE).name]
    _, actions = transition(cleared, fixed, Observed(), soon)
    (job,) = jobs_applied(actions)
    assert fixed_uri in json.dumps(job)


def test_a_transient_failure_recorded_by_an_older_operator_is_retried() -> None:
    # Status written before failures had kinds: the message tells.
    d = one()
    old = {"revision": d.revision, "variant": "amd64", "result": "failed", "message": UNREACHABLE}
    state, actions = transition(State(phase=Phase.FAILED, revisions=(old,)), d, Observed(), NOW)
    assert state.phase is Phase.COMPRESSING
    assert len(jobs_applied(actions)) == 1


def test_the_stable_revision_keeps_serving_while_a_new_one_retries() -> None:
    d = desired()
    base = State(phase=Phase.READY, stable_revision=OLD, revisions=old_records(d))
    jobs = [
        JobObs(f"digits-c-{d.revision}-{v}", d.revision, v, failed=True, failure=UNREACHABLE)
        for v in ("arm64", "gpu")
    ]
    observed = Observed(jobs=jobs, deployments=deps(d, OLD, True), services=SERVICES)
    state, actions = transition(base, d, observed, NOW)
    assert state.phase is Phase.COMPRESSING and state.stable_revision == OLD
    assert not [a for a in actions if isinstance(a, Delete) and a.kind == "Deployment"]
    assert conditions(state)["Available"]["status"] == "True"


# ------------------------------------------------------------------ permanent failures


@pytest.mark.parametrize(
    ("failure", "gate", "reason"),
    [
        ("compress exited 3: agreement 0.41 < required 0.99", True, "AccuracyGateFailed"),
        ("compress exited 2: not a valid ONNX model", False, "CompressionFailed"),
    ],
)
def test_a_permanent_failure_fails_the_revision_until_a_new_generation(
    failure: str, gate: bool, reason: str
) -> None:
    d = one()
    job = failed_job(d, failure, gate=gate)
    state, actions = transition(State(), d, Observed(jobs=[job]), NOW)
    assert state.phase is Phase.FAILED
    stalled = conditions(state)["Stalled"]
    assert (stalled["status"], stalled["reason"]) == ("True", reason)
    assert state.revisions[0]["failure"] == "permanent"
    # Time alone changes nothing: no retry, however long one waits (or restarts).
    later = NOW + timedelta(days=1)
    same, actions = transition(restarted(state), d, Observed(jobs=[job]), later)
    assert same.phase is Phase.FAILED
    assert jobs_applied(actions) == [] and jobs_deleted(actions) == []
    assert requeue(actions) == 300.0
    # A new generation re-evaluates: the old Job goes, a new attempt follows.
    newer = replace(d, generation=4)
    cleared, actions = transition(same, newer, Observed(jobs=[job]), later)
    assert cleared.phase is Phase.COMPRESSING and jobs_deleted(actions) == [job.name]
    assert conditions(cleared)["Stalled"]["status"] == "False"
    retried, actions = transition(cleared, newer, Observed(), later)
    (new_job,) = jobs_applied(actions)
    assert new_job["metadata"]["annotations"][ATTEMPT_ANNOTATION] == "2"
    # ... and if it fails the same way, the revision is Failed again, for this generation.
    again, _ = transition(retried, newer, Observed(jobs=[replace(job, attempt=2)]), later)
    assert again.phase is Phase.FAILED
    assert again.revisions[0]["generation"] == 4


# ------------------------------------------------------------------ canary analysis limits


LIMITS_SPEC = spec(
    slo={"latencyP95Ms": 20},
    rollout={
        "steps": [50, 100],
        "analysisIntervalSeconds": 10,
        "inconclusiveLimit": 3,
        "errorLimit": 2,
    },
)
OK = Reading(Outcome.SUCCESSFUL, 5.0, 20.0, "p95 5ms <= 20ms")
NO_DATA = Reading(Outcome.INCONCLUSIVE, None, 20.0, "no data: no latency samples in window")
DOWN = Reading(Outcome.ERROR, None, None, "Prometheus at http://prom unreachable")


def canary_pass(state: State, d: Desired, reading: Reading, at: int) -> tuple[State, list[Any]]:
    running = deps(d, OLD, True) + deps(d, d.revision, True, 1)
    observed = Observed(deployments=running, services=SERVICES, analysis=reading)
    return transition(state, d, observed, NOW + timedelta(seconds=at))


def canary_start() -> tuple[State, Desired]:
    d = desired(LIMITS_SPEC)
    base = State(
        phase=Phase.READY, stable_revision=OLD, revisions=old_records(d) + passed_records(d)
    )
    state, _ = canary_pass(base, d, OK, 0)
    assert state.phase is Phase.PROGRESSING
    return state, d


@pytest.mark.parametrize(
    ("reading", "limit", "reason"),
    [(NO_DATA, 3, "AnalysisInconclusive"), (DOWN, 2, "AnalysisErrors")],
)
def test_a_canary_without_data_is_held_then_stalled_at_the_limit(
    reading: Reading, limit: int, reason: str
) -> None:
    state, d = canary_start()
    for i in range(1, limit):
        state, actions = canary_pass(restarted(state), d, reading, 10 * i)
        assert state.phase is Phase.PROGRESSING, i  # held, not yet stalled
    state, actions = canary_pass(restarted(state), d, reading, 10 * limit)
    assert state.phase is Phase.FAILED
    stalled = conditions(state)["Stalled"]
    assert (stalled["status"], stalled["reason"]) == ("True", reason)
    assert f"revision {OLD} keeps serving" in stalled["message"]
    assert any(isinstance(a, Event) and a.reason == "RolloutStalled" for a in actions)
    # The canary's replicas go; the stable revision runs every replica.
    gone = {a.name for a in actions if isinstance(a, Delete) and a.kind == "Deployment"}
    assert gone == {dep.name for dep in deps(d, d.revision, True)}
    assert state.stable_revision == OLD and state.canary_revision == ""
    # Stalled stays stalled, whatever the metrics say now ...
    later, _ = canary_pass(restarted(state), d, OK, 10 * limit + 60)
    assert later.phase is Phase.FAILED
    # ... until a new generation starts the canary again.
    newer = replace(d, generation=d.generation + 1)
    restarted_canary, actions = canary_pass(restarted(later), newer, OK, 10 * limit + 70)
    assert restarted_canary.phase is Phase.PROGRESSING
    assert any(isinstance(a, Event) and a.reason == "CanaryStarted" for a in actions)
    assert "stalledAt" not in restarted_canary.rollout["canary"]


def test_an_analysis_with_data_resets_the_count() -> None:
    state, d = canary_start()
    readings = [NO_DATA, NO_DATA, OK, NO_DATA, NO_DATA]  # never 3 in a row
    for i, reading in enumerate(readings, start=1):
        state, _ = canary_pass(state, d, reading, 10 * i)
        assert state.phase is not Phase.FAILED
    assert state.rollout["canary"]["inconclusiveChecks"] == 2


def test_the_limits_are_bounded_in_the_spec() -> None:
    defaults = parse_spec(spec()).rollout
    assert (defaults.inconclusive_limit, defaults.error_limit) == (20, 10)
    with pytest.raises(SpecError, match=r"rollout\.inconclusiveLimit"):
        parse_spec(spec(rollout={"inconclusiveLimit": 0}))
    with pytest.raises(SpecError, match=r"rollout\.errorLimit"):
        parse_spec(spec(rollout={"errorLimit": 1001}))


# ------------------------------------------------------------------ what observe reads


def _job(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "digits-c-r1-amd64",
            "labels": {"edgemodel.dev/revision": "r1", "edgemodel.dev/variant": "amd64"},
            "annotations": annotations or {},
        },
        "status": {
            "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]
        },
    }


def test_observe_reads_the_attempt_and_an_eviction() -> None:
    evicted = {
        "metadata": {"labels": {"job-name": "digits-c-r1-amd64"}},
        "status": {
            "phase": "Failed",
            "reason": "Evicted",
            "message": "The node was low on memory.",
        },
    }
    job = job_observation(_job({ATTEMPT_ANNOTATION: "4"}), [evicted])
    assert job.attempt == 4 and job.failed
    assert job.failure.startswith("Evicted")
    assert classify(job.failure, job.gate_failed) is FailureKind.TRANSIENT
    # A Job from before attempts were counted (or a hand-edited annotation) is attempt 1.
    assert job_observation(_job(), []).attempt == 1
    assert job_observation(_job({ATTEMPT_ANNOTATION: "x"}), []).attempt == 1

"""A malformed artifact record is a condition naming the field, never an exception.

The operator type-checks every record it reads from the store (`check_record`; the shapes are in
test_security_artifact_store.py). What a pass does with the outcome: a malformed record is not
trusted (the revision is compressed as if the store held nothing), `ArtifactRecordValid` turns
False naming the artifact and the field, and it clears once a lookup finds usable records or
none. EdgeModels that never met a malformed record do not carry the condition. A compression
Job's publish summary, which repeats the store's record when one is already there, gets the
same check: a malformed one fails the Job naming the field. (The lookup against a real store:
tests/integration/artifacts/test_malformed_records.py.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from edgemodel_operator import observe
from edgemodel_operator.builders import artifact_key
from edgemodel_operator.lifecycle import Observed, State, transition
from edgemodel_operator.lifecycle.status import RECORD_CONDITION, record_condition
from edgemodel_operator.revision import variants
from tests.unit.test_lifecycle import NOW, applied, desired, summary

PROBLEM = "field sizeBytes: expected a non-negative integer"


def _condition(state: State) -> Mapping[str, Any] | None:
    return next((c for c in state.conditions if c.get("type") == RECORD_CONDITION), None)


def test_a_malformed_record_is_not_trusted_and_names_the_field() -> None:
    d = desired()
    arm, gpu = (artifact_key(d.revision, v) for v in variants(d.spec))
    # The store holds a usable record for the gpu variant and a malformed one for arm64.
    observed = Observed(artifacts={gpu: summary("gpu")}, record_checks={arm: PROBLEM, gpu: ""})
    state, actions = transition(State(), d, observed, NOW)
    jobs = applied(actions, "Job")
    assert [j["metadata"]["labels"]["edgemodel.dev/variant"] for j in jobs] == ["arm64"]
    condition = _condition(state)
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("False", "MalformedRecord")
    assert f"record {arm}: {PROBLEM}" in condition["message"]
    assert gpu not in condition["message"]


def test_the_condition_clears_when_a_lookup_finds_a_usable_record() -> None:
    d = desired()
    keys = [artifact_key(d.revision, v) for v in variants(d.spec)]
    bad, _ = transition(State(), d, Observed(record_checks={keys[0]: PROBLEM}), NOW)
    found = {k: summary(v) for k, v in zip(keys, variants(d.spec), strict=True)}
    clean, actions = transition(
        bad, d, Observed(artifacts=found, record_checks=dict.fromkeys(keys, "")), NOW
    )
    assert applied(actions, "Job") == []
    condition = _condition(clean)
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("True", "RecordsValid")


def test_a_pass_that_looks_nothing_up_leaves_the_condition_as_it_was() -> None:
    d = desired()
    key = artifact_key(d.revision, "arm64")
    bad, _ = transition(State(), d, Observed(record_checks={key: PROBLEM}), NOW)
    later, _ = transition(bad, d, Observed(), NOW)
    assert _condition(later) == _condition(bad)


def test_an_edgemodel_that_never_met_a_malformed_record_does_not_carry_the_condition() -> None:
    d = desired()
    checks = {artifact_key(d.revision, v): "" for v in variants(d.spec)}
    state, _ = transition(State(), d, Observed(record_checks=checks), NOW)
    assert _condition(state) is None


def test_every_malformed_record_is_named_in_key_order() -> None:
    verdict = record_condition(
        {"r1-gpu": "field ratio: expected a number", "r1-arm64": PROBLEM}, False
    )
    assert verdict is not None
    status, reason, message = verdict
    assert (status, reason) == (False, "MalformedRecord")
    assert message.index("r1-arm64") < message.index("r1-gpu")
    assert "field ratio" in message and "sizeBytes" in message


# --- the same record, repeated by a compression Job -------------------------------------------


def _publish_pod(message: str) -> dict[str, Any]:
    terminated = {"exitCode": 0, "message": message}
    return {
        "metadata": {"creationTimestamp": "2026-11-25T12:00:00Z", "labels": {}},
        "status": {"containerStatuses": [{"name": "publish", "state": {"terminated": terminated}}]},
    }


def _completed_job(d: Any, variant: str) -> dict[str, Any]:
    labels = {"edgemodel.dev/revision": d.revision, "edgemodel.dev/variant": variant}
    return {
        "metadata": {"name": f"digits-{variant}", "labels": labels},
        "status": {"conditions": [{"type": "Complete", "status": "True"}]},
    }


def test_a_job_that_reports_a_malformed_stored_record_fails_naming_the_field() -> None:
    """Records are write-once: a Job's publish that finds one reports the stored record as its
    summary. A malformed one must not reach the lifecycle's conversions (an exception in every
    pass): the Job fails, for good, with the field named."""
    d = desired()
    forged = {"artifactSha256": "a" * 64, "sizeBytes": "1e99", "ratio": 0.3}
    job = observe.job_observation(_completed_job(d, "arm64"), [_publish_pod(json.dumps(forged))])
    assert job.summary is None and job.succeeded
    assert job.failure == f"publish reported a malformed record: {PROBLEM}"
    state, _ = transition(State(), d, Observed(jobs=[job]), NOW)
    (record,) = [r for r in state.revisions if r["variant"] == "arm64"]
    assert (record["result"], record["failure"]) == ("failed", "permanent")
    assert "sizeBytes" in record["message"] and "artifactDigest" not in record


def test_a_well_formed_job_summary_is_kept_whole() -> None:
    d = desired()
    published = {**summary("arm64"), "wireRatio": 0.3, "target": "arm"}
    job = observe.job_observation(_completed_job(d, "arm64"), [_publish_pod(json.dumps(published))])
    assert job.summary == published and job.failure == ""

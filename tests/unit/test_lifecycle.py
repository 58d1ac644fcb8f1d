"""The EdgeModel lifecycle state machine, against every combination of observations.

`transition(state, desired, observed, now)` is pure, so each case builds the observations by
hand: compression Jobs in every state, the artifact store up or down, Deployments available
or not, a previous stable revision or none. Invariants hold in every combination: the
lifecycle only moves on what it observed, never deletes the serving revision before its
successor is available, and re-issues what is missing (idempotent actions).
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from edgemodel_operator.api import parse_spec
from edgemodel_operator.builders import artifact_key, deployment_name, service_name
from edgemodel_operator.lifecycle import (
    Apply,
    Delete,
    DeploymentObs,
    Desired,
    Event,
    JobObs,
    Observed,
    State,
    transition,
)
from edgemodel_operator.metrics import Outcome, Reading, classify_shed
from edgemodel_operator.revision import revision_of, variants
from edgemodel_operator.settings import Settings

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SHA = "a" * 64


def spec(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "model": {"uri": "https://models.example.com/m.onnx", "sha256": SHA},
        "targets": [
            {"name": "arm", "arch": "arm64", "replicas": {"min": 2, "max": 4}},
            {"name": "gpu", "arch": "amd64", "accelerator": "nvidia-gpu"},
        ],
    }
    raw.update(overrides)
    return raw


def desired(raw: dict[str, Any] | None = None) -> Desired:
    parsed = parse_spec(raw or spec())
    return Desired("digits", "ns", "uid-1", 3, parsed, revision_of(parsed), Settings())


def summary(variant: str) -> dict[str, Any]:
    return {
        "artifactSha256": (variant[0] * 64)[:64].replace("g", "c"),
        "sizeBytes": 1000,
        "ratio": 0.26,
        "accuracy": {"agreement": 0.99},
        "mode": "dynamic-int8",
    }


def job(d: Desired, variant: str, kind: str) -> JobObs:
    name = f"digits-c-{d.revision}-{variant}"
    if kind == "active":
        return JobObs(name, d.revision, variant, active=True)
    if kind == "succeeded":
        return JobObs(name, d.revision, variant, succeeded=True, summary=summary(variant))
    if kind == "failed":
        return JobObs(
            name, d.revision, variant, failed=True, failure="compress exited 1: out of memory"
        )
    return JobObs(
        name,
        d.revision,
        variant,
        failed=True,
        gate_failed=True,
        failure="compress exited 3: agreement 0.41 < 0.98",
    )


def deployments(
    d: Desired, revision: str, available: bool, replicas: dict[str, int] | None = None
) -> list[DeploymentObs]:
    out = []
    for target in d.spec.targets:
        count = (replicas or {}).get(target.name, target.replicas.min)
        ready = count if available else 0
        out.append(
            DeploymentObs(
                deployment_name("digits", target.name, revision),
                revision,
                target.name,
                count,
                ready,
                ready,
                count,
                True,
                SHA,
            )
        )
    return out


def applied(actions: list[Any], kind: str) -> list[dict[str, Any]]:
    return [
        dict(a.manifest) for a in actions if isinstance(a, Apply) and a.manifest["kind"] == kind
    ]


def deleted(actions: list[Any], kind: str) -> list[str]:
    return [a.name for a in actions if isinstance(a, Delete) and a.kind == kind]


def passed_records(d: Desired) -> tuple[dict[str, Any], ...]:
    return tuple(
        {"revision": d.revision, "variant": v, "result": "passed", "artifactDigest": SHA}
        for v in variants(d.spec)
    )


# ------------------------------------------------------------------ compression


def test_new_model_starts_one_compression_job_per_variant() -> None:
    d = desired()
    state, actions = transition(State(), d, Observed(), NOW)
    jobs = applied(actions, "Job")
    assert sorted(j["metadata"]["labels"]["edgemodel.dev/variant"] for j in jobs) == [
        "arm64",
        "gpu",
    ]
    assert state.phase == "Compressing"
    assert {c["type"]: c["status"] for c in state.conditions}["Ready"] == "False"
    assert any(isinstance(a, Event) and a.reason == "PhaseChanged" for a in actions)
    # Services come first so clients can resolve them before the first revision is up.
    assert sorted(s["metadata"]["name"] for s in applied(actions, "Service")) == [
        "digits-arm",
        "digits-gpu",
    ]


def test_gpu_variant_compresses_to_fp16_when_dynamic_int8_is_asked() -> None:
    d = desired()
    _, actions = transition(State(), d, Observed(), NOW)
    gpu_job = next(
        j
        for j in applied(actions, "Job")
        if j["metadata"]["labels"]["edgemodel.dev/variant"] == "gpu"
    )
    args = gpu_job["spec"]["template"]["spec"]["initContainers"][0]["args"]
    assert args[args.index("--mode") + 1] == "fp16"
    assert "CPU-only" in gpu_job["metadata"]["annotations"]["edgemodel.dev/compression-note"]


def test_no_job_while_the_artifact_store_is_down() -> None:
    state, actions = transition(State(), desired(), Observed(store_ready=False), NOW)
    assert applied(actions, "Job") == []
    assert state.phase == "Compressing"


def test_artifact_already_in_the_store_skips_compression() -> None:
    d = desired()
    found = {artifact_key(d.revision, v): summary(v) for v in variants(d.spec)}
    state, actions = transition(State(), d, Observed(artifacts=found), NOW)
    assert applied(actions, "Job") == []
    assert len(applied(actions, "Deployment")) == 2
    assert {r["message"] for r in state.revisions} == {"found in the artifact store"}


JOB_STATES = ["none", "active", "succeeded", "failed", "gate-failed"]


@pytest.mark.parametrize(("arm_job", "gpu_job"), list(itertools.product(JOB_STATES, JOB_STATES)))
@pytest.mark.parametrize("store_ready", [True, False])
def test_compression_outcomes(arm_job: str, gpu_job: str, store_ready: bool) -> None:
    d = desired()
    jobs = [job(d, v, k) for v, k in (("arm64", arm_job), ("gpu", gpu_job)) if k != "none"]
    state, actions = transition(State(), d, Observed(jobs=jobs, store_ready=store_ready), NOW)
    kinds = {arm_job, gpu_job}
    conditions = {c["type"]: c for c in state.conditions}
    created = {j["metadata"]["labels"]["edgemodel.dev/variant"] for j in applied(actions, "Job")}
    missing = {v for v, k in (("arm64", arm_job), ("gpu", gpu_job)) if k == "none"}
    if kinds & {"failed", "gate-failed"}:
        assert state.phase == "Failed"
        assert conditions["Compressed"]["status"] == "False"
        reason = "AccuracyGateFailed" if "gate-failed" in kinds else "CompressionFailed"
        assert conditions["Compressed"]["reason"] == reason
        assert "revision" in conditions["Compressed"]["message"]
        assert applied(actions, "Deployment") == []
    elif kinds == {"succeeded"}:
        assert state.phase == "Deploying"
        assert conditions["Compressed"]["status"] == "True"
        assert len(applied(actions, "Deployment")) == 2
        assert {r["result"] for r in state.revisions} == {"passed"}
    else:
        assert state.phase == "Compressing"
        assert applied(actions, "Deployment") == []
    # Jobs are requested exactly for the variants that have none, and only when the store is up.
    assert created == (missing if store_ready else set())
    assert conditions["Ready"]["status"] == "False"
    # kstatus: only a failure is Stalled (it waits for a spec change, not for time).
    stalled = conditions["Stalled"]
    if state.phase == "Failed":
        assert stalled["status"] == "True"
        assert stalled["reason"] == conditions["Compressed"]["reason"]
        assert stalled["message"].endswith("needs a spec change")
    else:
        assert (stalled["status"], stalled["reason"]) == ("False", "AsExpected")


def test_failed_compression_keeps_the_figures_and_is_not_retried() -> None:
    d = desired()
    jobs = [job(d, "arm64", "gate-failed"), job(d, "gpu", "succeeded")]
    state, _ = transition(State(), d, Observed(jobs=jobs), NOW)
    assert (
        "agreement 0.41 < 0.98" in {c["type"]: c for c in state.conditions}["Compressed"]["message"]
    )
    # The Job was garbage-collected (TTL): the failure stays, no new Job is created.
    again, actions = transition(state, d, Observed(jobs=[]), NOW)
    assert again.phase == "Failed"
    assert [
        j
        for j in applied(actions, "Job")
        if j["metadata"]["labels"]["edgemodel.dev/variant"] == "arm64"
    ] == []


# ------------------------------------------------------------------ deployment


@pytest.mark.parametrize("available", [True, False])
@pytest.mark.parametrize("has_stable", [True, False])
def test_deploy_and_promote(available: bool, has_stable: bool) -> None:
    d = desired()
    old = "r0000000000"
    base = State(
        revisions=passed_records(d),
        stable_revision=old if has_stable else "",
        phase="Ready" if has_stable else "Compressing",
    )
    deps = deployments(d, d.revision, available) + (deployments(d, old, True) if has_stable else [])
    state, actions = transition(
        base,
        d,
        Observed(
            deployments=deps,
            services=frozenset({service_name("digits", "arm"), service_name("digits", "gpu")}),
        ),
        NOW,
    )
    if available:
        assert state.phase == "Ready" and state.stable_revision == d.revision
        statuses = {c["type"]: c["status"] for c in state.conditions}
        assert (statuses["Ready"], statuses["Stalled"]) == ("True", "False")
        expected_gone = (
            {deployment_name("digits", t, old) for t in ("arm", "gpu")} if has_stable else set()
        )
        assert set(deleted(actions, "Deployment")) == expected_gone
        assert state.ready_replicas == "3/3"
    else:
        assert state.phase == "Deploying"
        # The serving revision is never removed before its successor is available.
        assert deleted(actions, "Deployment") == []
        assert state.stable_revision == (old if has_stable else "")
    assert applied(actions, "Service") == []  # already there


def test_replicas_chosen_by_the_autoscaler_are_kept_within_bounds() -> None:
    d = desired()
    deps = deployments(d, d.revision, True, replicas={"arm": 9, "gpu": 1})
    _, actions = transition(State(revisions=passed_records(d)), d, Observed(deployments=deps), NOW)
    replicas = {
        m["metadata"]["labels"]["edgemodel.dev/target"]: m["spec"]["replicas"]
        for m in applied(actions, "Deployment")
    }
    assert replicas == {"arm": 4, "gpu": 1}


def test_removed_target_is_deleted() -> None:
    d = desired(spec(targets=[{"name": "arm", "arch": "arm64"}]))
    stale = DeploymentObs(
        deployment_name("digits", "gpu", d.revision), d.revision, "gpu", 1, 1, 1, 1, True, SHA
    )
    _, actions = transition(
        State(revisions=passed_records(d)),
        d,
        Observed(deployments=[stale], services=frozenset({"digits-gpu", "digits-arm"})),
        NOW,
    )
    assert deleted(actions, "Deployment") == [stale.name]
    assert deleted(actions, "Service") == ["digits-gpu"]


def test_unschedulable_target_names_what_is_missing() -> None:
    d = desired()
    deps = deployments(d, d.revision, False)
    message = "no node has labels kubernetes.io/arch=arm64 (0/6 nodes match)"
    state, _ = transition(
        State(revisions=passed_records(d)),
        d,
        Observed(deployments=deps, unschedulable={"arm": message}),
        NOW,
    )
    available = {c["type"]: c for c in state.conditions}["Available"]
    assert available["status"] == "False" and available["reason"] == "Unschedulable"
    assert message in available["message"]
    assert next(t for t in state.targets if t["name"] == "arm")["message"] == message


def test_stable_revision_losing_replicas_is_degraded() -> None:
    d = desired()
    deps = deployments(d, d.revision, True)
    deps[0] = DeploymentObs(deps[0].name, d.revision, "arm", 2, 1, 1, 2, True, SHA)
    state, actions = transition(
        State(revisions=passed_records(d), stable_revision=d.revision, phase="Ready"),
        d,
        Observed(deployments=deps),
        NOW,
    )
    assert state.phase in ("Degraded", "Deploying")
    assert {c["type"]: c["status"] for c in state.conditions}["Ready"] == "False"
    assert deleted(actions, "Deployment") == []


def test_steady_state_is_a_fixed_point() -> None:
    d = desired()
    obs = Observed(
        deployments=deployments(d, d.revision, True),
        services=frozenset({"digits-arm", "digits-gpu"}),
    )
    first, _ = transition(State(revisions=passed_records(d)), d, obs, NOW)
    second, actions = transition(first, d, obs, NOW + timedelta(minutes=5))
    assert second == first  # transition times only move when a status flips
    assert not [a for a in actions if isinstance(a, (Delete, Event))]


def test_revision_ignores_replicas_and_selectors_but_not_compression() -> None:
    base = parse_spec(spec())
    scaled = parse_spec(
        spec(
            targets=[
                {
                    "name": "arm",
                    "arch": "arm64",
                    "replicas": {"min": 5, "max": 9},
                    "nodeSelector": {"topology.kubernetes.io/zone": "site-1"},
                },
                {"name": "gpu", "arch": "amd64", "accelerator": "nvidia-gpu"},
            ]
        )
    )
    recompressed = parse_spec(spec(compression={"quantization": "fp16"}))
    assert revision_of(base) == revision_of(scaled)
    assert revision_of(base) != revision_of(recompressed)


# ------------------------------------------------------------------ the SLO loop


SLO_SPEC = spec(
    slo={"latencyP95Ms": 20},
    autoscaling={"enabled": True, "intervalSeconds": 10, "stabilizationSeconds": 30},
    rollout={"steps": [25, 50, 100], "analysisIntervalSeconds": 10, "failureThreshold": 2},
)
OK = Reading(Outcome.SUCCESSFUL, 5.0, 20.0, "p95 5ms <= 20ms")
BAD = Reading(Outcome.FAILED, 80.0, 20.0, "p95 80ms > 20ms")
DOWN = Reading(Outcome.ERROR, None, None, "connection refused")


def canary_world(
    d: Desired, old: str, weights: dict[str, tuple[int, int]] | None = None
) -> list[DeploymentObs]:
    out = []
    for target in d.spec.targets:
        keep, new = (weights or {}).get(target.name, (target.replicas.min, 0))
        out.append(
            DeploymentObs(
                deployment_name("digits", target.name, old),
                old,
                target.name,
                keep,
                keep,
                keep,
                keep,
                True,
                SHA,
            )
        )
        if new:
            out.append(
                DeploymentObs(
                    deployment_name("digits", target.name, d.revision),
                    d.revision,
                    target.name,
                    new,
                    new,
                    new,
                    new,
                    True,
                    SHA,
                )
            )
    return out


def rollout_pass(
    state: State, d: Desired, old: str, analysis: Reading, at: datetime, p95: Reading = OK
) -> tuple[State, list[Any]]:
    deps = canary_world(d, old)
    return transition(
        state,
        d,
        Observed(
            deployments=deps,
            services=frozenset({"digits-arm", "digits-gpu"}),
            analysis=analysis,
            p95={"arm": p95, "gpu": p95},
        ),
        at,
    )


def start_canary() -> tuple[State, Desired, str]:
    d = desired(SLO_SPEC)
    old = "r0000000000"
    records = passed_records(d) + tuple({**r, "revision": old} for r in passed_records(d))
    return State(revisions=records, stable_revision=old, phase="Ready"), d, old


def test_new_revision_with_an_slo_starts_as_a_canary_beside_stable() -> None:
    state, d, old = start_canary()
    state, actions = rollout_pass(state, d, old, OK, NOW)
    assert state.phase == "Progressing" and state.canary_revision == d.revision
    assert state.stable_revision == old
    replicas = {
        (
            m["metadata"]["labels"]["edgemodel.dev/revision"],
            m["metadata"]["labels"]["edgemodel.dev/target"],
        ): m["spec"]["replicas"]
        for m in applied(actions, "Deployment")
    }
    assert replicas[(old, "arm")] + replicas[(d.revision, "arm")] == 2
    assert replicas[(d.revision, "arm")] >= 1
    assert any(isinstance(a, Event) and a.reason == "CanaryStarted" for a in actions)
    assert state.rollout["canary"]["canaryRevision"] == d.revision


def test_failing_canary_rolls_back_within_the_threshold() -> None:
    state, d, old = start_canary()
    state, _ = rollout_pass(state, d, old, BAD, NOW)
    seen_rollback_at = None
    for i in range(1, 5):
        state, actions = rollout_pass(state, d, old, BAD, NOW + timedelta(seconds=10 * i))
        if any(isinstance(a, Event) and a.reason == "RolledBack" for a in actions):
            seen_rollback_at = i
            assert (
                set(deleted(actions, "Deployment")) == set()
            )  # canary had no Deployment observed yet
            break
    assert seen_rollback_at == 2  # failureThreshold 2: two analyses one interval apart
    assert state.last_rollback and state.last_rollback["from"] == d.revision
    assert state.last_rollback["to"] == old
    assert state.stable_revision == old and state.phase == "Ready"
    # The rolled-back revision stays rolled back until the spec changes.
    again, actions = rollout_pass(state, d, old, OK, NOW + timedelta(minutes=5))
    assert again.stable_revision == old and again.canary_revision == ""
    assert [
        m
        for m in applied(actions, "Deployment")
        if m["metadata"]["labels"]["edgemodel.dev/revision"] == d.revision
    ] == []
    assert {c["type"]: c for c in again.conditions}["Progressing"]["reason"] == "RolledBack"


def test_healthy_canary_is_promoted_through_every_step() -> None:
    state, d, old = start_canary()
    weights_seen = []
    promoted = False
    for i in range(0, 12):
        state, actions = rollout_pass(state, d, old, OK, NOW + timedelta(seconds=10 * i))
        weights_seen.append(state.rollout["canary"]["stepIndex"])
        if any(isinstance(a, Event) and a.reason == "Promoted" for a in actions) or state.rollout[
            "canary"
        ].get("promotedAt"):
            promoted = True
            break
    assert promoted
    assert sorted(set(weights_seen)) == [0, 1, 2]


def test_prometheus_down_holds_the_rollout_and_says_so() -> None:
    state, d, old = start_canary()
    for i in range(6):
        state, actions = rollout_pass(
            state, d, old, DOWN, NOW + timedelta(seconds=10 * i), p95=DOWN
        )
        assert not any(
            isinstance(a, Event) and a.reason in ("RolledBack", "Promoted", "ScaledDown")
            for a in actions
        )
    metrics = {c["type"]: c for c in state.conditions}["MetricsAvailable"]
    assert metrics["status"] == "False" and metrics["reason"] == "PrometheusUnreachable"
    assert state.rollout["canary"]["stepIndex"] == 0 and state.phase == "Progressing"


def test_autoscaler_scales_a_stable_target_up_with_a_reason() -> None:
    d = desired(SLO_SPEC)
    deps = deployments(d, d.revision, True)
    slow = Reading(Outcome.FAILED, 60.0, 20.0, "p95 60ms")
    state, actions = transition(
        State(revisions=passed_records(d), stable_revision=d.revision, phase="Ready"),
        d,
        Observed(
            deployments=deps,
            services=frozenset({"digits-arm", "digits-gpu"}),
            p95={"arm": slow, "gpu": OK},
        ),
        NOW,
    )
    replicas = {
        m["metadata"]["labels"]["edgemodel.dev/target"]: m["spec"]["replicas"]
        for m in applied(actions, "Deployment")
    }
    assert replicas["arm"] > 2 and replicas["gpu"] == 1
    scaled = [a for a in actions if isinstance(a, Event) and a.reason == "ScaledUp"]
    assert len(scaled) == 1 and "target arm" in scaled[0].message
    row = next(t for t in state.targets if t["name"] == "arm")
    assert row["lastScaleDecision"].startswith("up to") and "p95" in row["lastScaleReason"]
    assert state.rollout["scalers"]["arm"]["lastScaleUpAt"] == NOW.timestamp()
    assert state.p95_latency_ms == 60.0
    # Each target's row says which SLO line its p95 was held to (`edgemodel status` shows it).
    assert (row["p95LatencyMs"], row["latencySloMs"]) == (60.0, 20.0)


def test_a_target_refusing_requests_scales_up_though_its_p95_is_fine() -> None:
    """Saturation: the arm target sheds 30 % of its requests at the in-flight cap; the p95 of
    those it serves is far under the SLO. The gpu target sheds a little, under the line: no
    scale-up, and its low p95 does not scale it down while it refuses anything."""
    d = desired(SLO_SPEC)
    deps = deployments(d, d.revision, True)
    fast = Reading(Outcome.SUCCESSFUL, 2.0, 20.0, "p95 2ms")
    state, actions = transition(
        State(
            revisions=passed_records(d),
            stable_revision=d.revision,
            phase="Ready",
            rollout={"scalers": {"gpu": {"belowSince": NOW.timestamp() - 3600}}},
        ),
        d,
        Observed(
            deployments=deps,
            services=frozenset({"digits-arm", "digits-gpu"}),
            p95={"arm": fast, "gpu": fast},
            shed={"arm": classify_shed(0.3, 0.01), "gpu": classify_shed(0.004, 0.01)},
        ),
        NOW,
    )
    rows = {t["name"]: t for t in state.targets}
    assert rows["arm"]["lastScaleDecision"] == "up to 3"
    assert "shed 30.0% of requests > 1.0%" in rows["arm"]["lastScaleReason"]
    assert (rows["arm"]["shedFraction"], rows["gpu"]["shedFraction"]) == (0.3, 0.004)
    assert rows["gpu"]["lastScaleDecision"] == "hold"
    assert "but 0.4% of requests shed: not scaling down" in rows["gpu"]["lastScaleReason"]
    assert "belowSince" not in state.rollout["scalers"]["gpu"]  # refusing is never "low"
    scaled = [a for a in actions if isinstance(a, Event) and a.reason.startswith("Scaled")]
    assert [(a.reason, "target arm" in a.message) for a in scaled] == [("ScaledUp", True)]


def test_post_promotion_guard_rolls_back_to_the_previous_artifact() -> None:
    state, d, old = start_canary()
    promoted_state = replace(
        state,
        stable_revision=d.revision,
        phase="Ready",
        rollout={
            "canary": {
                "canaryRevision": d.revision,
                "previousStable": old,
                "stepIndex": 2,
                "promotedAt": NOW.timestamp(),
                "lastAnalysisAt": NOW.timestamp(),
                "failedChecks": 0,
            }
        },
    )
    deps = deployments(d, d.revision, True)
    rolled = False
    for i in range(1, 5):
        promoted_state, actions = transition(
            promoted_state,
            d,
            Observed(
                deployments=deps,
                services=frozenset({"digits-arm", "digits-gpu"}),
                guard=BAD,
                p95={"arm": BAD, "gpu": BAD},
            ),
            NOW + timedelta(seconds=10 * i),
        )
        if any(isinstance(a, Event) and a.reason == "RolledBack" for a in actions):
            rolled = True
            restored = {
                m["metadata"]["labels"]["edgemodel.dev/revision"]
                for m in applied(actions, "Deployment")
            }
            assert old in restored
            break
    assert rolled and promoted_state.last_rollback and promoted_state.last_rollback["to"] == old


def test_no_room_for_a_surge_replaces_the_target_in_place() -> None:
    # One GPU node with one GPU: the new revision's gpu pod cannot run beside the old one.
    d = desired()
    old = "r0000000000"
    records = passed_records(d) + tuple({**r, "revision": old} for r in passed_records(d))
    deps = deployments(d, old, True) + deployments(d, d.revision, False)
    state, actions = transition(
        State(revisions=records, stable_revision=old, phase="Ready"),
        d,
        Observed(
            deployments=deps,
            services=frozenset({"digits-arm", "digits-gpu"}),
            unschedulable={"gpu": "0/6 nodes are available: 1 Insufficient nvidia.com/gpu"},
        ),
        NOW,
    )
    replicas = {
        (
            m["metadata"]["labels"]["edgemodel.dev/revision"],
            m["metadata"]["labels"]["edgemodel.dev/target"],
        ): m["spec"]["replicas"]
        for m in applied(actions, "Deployment")
    }
    assert replicas[(old, "gpu")] == 0 and replicas[(old, "arm")] == 2
    assert any(isinstance(a, Event) and a.reason == "ReplacingInPlace" for a in actions)
    assert state.stable_revision == old and state.phase == "Deploying"


def test_a_deployment_already_as_wanted_is_not_written_again() -> None:
    d = desired()
    obs = Observed(
        deployments=deployments(d, d.revision, True),
        services=frozenset({"digits-arm", "digits-gpu"}),
    )
    _, actions = transition(State(revisions=passed_records(d)), d, obs, NOW)
    written = {
        m["metadata"]["name"]: m["metadata"]["annotations"]["edgemodel.dev/spec-hash"]
        for m in applied(actions, "Deployment")
    }
    assert len(written) == 2
    same = Observed(
        deployments=[replace(o, spec_hash=written[o.name]) for o in obs.deployments],
        services=obs.services,
    )
    _, again = transition(State(revisions=passed_records(d)), d, same, NOW)
    assert applied(again, "Deployment") == []

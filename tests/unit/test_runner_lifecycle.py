"""The pod runner's kubelet decisions: what to start when (init order, restart policies,
back-off), the pod phase over every combination of container states, the rendered status,
and the probe thresholds."""

from __future__ import annotations

import itertools

import pytest

from edgemodel_sandbox.runner import lifecycle
from edgemodel_sandbox.runner.lifecycle import (
    RUNNING,
    TERMINATED,
    ProbeTracker,
    Record,
    Terminated,
)

POLICIES = ("Always", "OnFailure", "Never")
NOW = 1_800_000_000.0


def waiting(name: str, init: bool = False, ran: bool = False) -> Record:
    return Record(name, "img", init=init, ever_ran=ran)


def running(name: str, init: bool = False) -> Record:
    return Record(name, "img", init=init, state=RUNNING, started_at=NOW - 5, ever_ran=True)


def exited(name: str, code: int, init: bool = False, restarts: int = 0, ago: float = 100) -> Record:
    return Record(
        name,
        "img",
        init=init,
        state=TERMINATED,
        terminated=Terminated(
            code, "Completed" if code == 0 else "Error", "", NOW - 200, NOW - ago
        ),
        restart_count=restarts,
        ever_ran=True,
    )


def records(*items: Record) -> dict[str, Record]:
    return {r.name: r for r in items}


@pytest.mark.parametrize(
    ("count", "delay"), [(0, 0), (1, 10), (2, 20), (3, 40), (5, 160), (6, 300), (50, 300)]
)
def test_backoff(count: int, delay: float) -> None:
    assert lifecycle.backoff(count) == delay


# ------------------------------------------------------------------ decide


@pytest.mark.parametrize("policy", POLICIES)
def test_init_containers_start_one_at_a_time_in_order(policy: str) -> None:
    recs = records(waiting("i1", True), waiting("i2", True), waiting("c"))
    assert lifecycle.decide(policy, ["i1", "i2"], ["c"], recs, NOW).start == ["i1"]
    recs["i1"] = running("i1", True)
    assert lifecycle.decide(policy, ["i1", "i2"], ["c"], recs, NOW).start == []
    recs["i1"] = exited("i1", 0, True)
    assert lifecycle.decide(policy, ["i1", "i2"], ["c"], recs, NOW).start == ["i2"]
    recs["i2"] = exited("i2", 0, True)
    assert lifecycle.decide(policy, ["i1", "i2"], ["c"], recs, NOW).start == ["c"]


@pytest.mark.parametrize("policy", POLICIES)
def test_failed_init_container(policy: str) -> None:
    recs = records(exited("i", 1, True, ago=100), waiting("c"))
    decision = lifecycle.decide(policy, ["i"], ["c"], recs, NOW)
    if policy == "Never":
        assert decision.init_failed and decision.start == []
    else:
        assert decision.start == ["i"] and not decision.init_failed


def test_unrunnable_init_container_blocks_the_rest() -> None:
    blocked = Record("i", "busybox", init=True, runnable=False)
    recs = records(blocked, waiting("c"))
    assert lifecycle.decide("Always", ["i"], ["c"], recs, NOW).start == []


def test_unrunnable_container_is_skipped_not_blocking() -> None:
    recs = records(Record("a", "busybox", runnable=False), waiting("b"))
    assert lifecycle.decide("Always", [], ["a", "b"], recs, NOW).start == ["b"]


@pytest.mark.parametrize(
    ("policy", "code", "restarts"),
    list(itertools.product(POLICIES, (0, 1), (0, 1, 3))),
)
def test_restart_policy_and_backoff(policy: str, code: int, restarts: int) -> None:
    should = policy == "Always" or (policy == "OnFailure" and code != 0)
    delay = lifecycle.backoff(restarts)
    # Just after the exit: only the immediate first restart is due.
    recs = records(exited("c", code, restarts=restarts, ago=1))
    decision = lifecycle.decide(policy, [], ["c"], recs, NOW)
    assert decision.start == (["c"] if should and delay <= 1 else [])
    if should and delay > 1:
        assert decision.wake_at == pytest.approx(NOW - 1 + delay)
    if not should:
        assert decision.wake_at is None
    # Long after: due whenever the policy restarts.
    recs = records(exited("c", code, restarts=restarts, ago=1000))
    assert lifecycle.decide(policy, [], ["c"], recs, NOW).start == (["c"] if should else [])


def test_waiting_adopted_container_starts_at_once() -> None:
    recs = records(waiting("c", ran=True), running("d"))
    assert lifecycle.decide("Always", [], ["c", "d"], recs, NOW).start == ["c"]


# ------------------------------------------------------------------ phase

STATES = {
    "waiting": waiting,
    "running": running,
    "ok": lambda n: exited(n, 0),
    "failed": lambda n: exited(n, 1),
    "restarting": lambda n: waiting(n, ran=True),
}


def expected_phase(policy: str, states: tuple[str, ...]) -> str:
    """The kubelet's getPhase, written out independently."""
    if "waiting" in states:
        return "Pending"
    if "running" in states:
        return "Running"
    if policy == "Always":
        return "Running"
    if all(s == "ok" for s in states):
        return "Succeeded"
    if policy == "Never":
        return "Failed"
    return "Running"


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("states", list(itertools.product(STATES, repeat=2)))
def test_phase_over_every_pair_of_container_states(policy: str, states: tuple[str, ...]) -> None:
    names = ["a", "b"]
    recs = {n: STATES[s](n) for n, s in zip(names, states, strict=True)}
    assert lifecycle.pod_phase(policy, [], names, recs) == expected_phase(policy, states)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("init_state", ["waiting", "running", "ok", "failed"])
def test_phase_while_initializing(policy: str, init_state: str) -> None:
    recs = {"i": STATES[init_state]("i"), "c": running("c")}
    recs["i"].init = True
    if init_state != "ok":
        recs["c"] = waiting("c")
    phase = lifecycle.pod_phase(policy, ["i"], ["c"], recs)
    if init_state == "ok":
        assert phase == "Running"
    elif init_state == "failed" and policy == "Never":
        assert phase == "Failed"
    else:
        assert phase == "Pending"


# ------------------------------------------------------------------ status


def status(policy: str, recs: dict[str, Record], init: list[str] | None = None, **kw: object):  # type: ignore[no-untyped-def]
    init = init or []
    names = [n for n in recs if n not in init]
    return lifecycle.pod_status(
        policy=policy,
        init_names=init,
        names=names,
        records=recs,
        pod_ip="10.200.0.9",
        start_time=NOW - 60,
        previous_conditions=kw.get("previous", []),  # type: ignore[arg-type]
        now=NOW,
    )


def conditions(result: dict[str, object]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in result["conditions"]}  # type: ignore[attr-defined, index]


def test_running_ready_pod_status() -> None:
    rec = running("c")
    rec.ready = rec.started = True
    rec.container_id = "sandbox://x"
    result = status("Always", records(rec))
    assert result["phase"] == "Running"
    assert result["podIP"] == "10.200.0.9" and result["podIPs"] == [{"ip": "10.200.0.9"}]
    assert result["hostIP"] == "127.0.0.1" and result["hostIPs"] == [{"ip": "127.0.0.1"}]
    assert result["startTime"] == lifecycle.rfc3339(NOW - 60)
    assert conditions(result) == {
        "PodScheduled": "True",
        "Initialized": "True",
        "ContainersReady": "True",
        "Ready": "True",
    }
    (entry,) = result["containerStatuses"]
    assert entry == {
        "name": "c",
        "image": "img",
        "imageID": "sandbox://img",
        "ready": True,
        "started": True,
        "restartCount": 0,
        "state": {"running": {"startedAt": lifecycle.rfc3339(NOW - 5)}},
        "lastState": {},
        "containerID": "sandbox://x",
    }
    assert "initContainerStatuses" not in result


def test_unready_and_initializing_conditions_name_the_containers() -> None:
    recs = records(running("i", True), waiting("a"), waiting("b"))
    result = status("Always", recs, init=["i"])
    by_type = {c["type"]: c for c in result["conditions"]}
    assert by_type["Initialized"]["status"] == "False"
    assert by_type["Initialized"]["message"] == "containers with incomplete status: [i]"
    assert by_type["Ready"]["message"] == "containers with unready status: [a b]"
    assert by_type["Ready"]["reason"] == "ContainersNotReady"
    assert result["initContainerStatuses"][0]["state"] == {
        "running": {"startedAt": lifecycle.rfc3339(NOW - 5)}
    }
    assert result["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}


def test_completed_pod_reports_terminated_with_reason_and_pod_completed() -> None:
    rec = exited("c", 0)
    rec.terminated.message = "done"  # type: ignore[union-attr]
    result = status("Never", records(rec))
    assert result["phase"] == "Succeeded"
    by_type = {c["type"]: c for c in result["conditions"]}
    assert by_type["Ready"]["status"] == "False" and by_type["Ready"]["reason"] == "PodCompleted"
    terminated = result["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
    assert terminated["message"] == "done"


def test_crash_loop_shows_waiting_with_last_state() -> None:
    rec = exited("c", 1, restarts=2, ago=1)
    result = status("Always", records(rec))
    entry = result["containerStatuses"][0]
    assert entry["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert entry["lastState"]["terminated"]["exitCode"] == 1
    assert entry["restartCount"] == 2
    assert result["phase"] == "Running"


def test_unrunnable_waiting_reason_and_message() -> None:
    rec = Record("c", "busybox", reason="ImageNotRunnableInSandbox", message="why", runnable=False)
    result = status("Always", records(rec))
    assert result["containerStatuses"][0]["state"] == {
        "waiting": {"reason": "ImageNotRunnableInSandbox", "message": "why"}
    }
    assert result["phase"] == "Pending"


def test_transition_times_are_kept_and_foreign_conditions_survive() -> None:
    rec = running("c")
    before = "2026-01-01T00:00:00Z"
    previous = [
        {"type": "Ready", "status": "False", "lastTransitionTime": before},
        {"type": "Initialized", "status": "True", "lastTransitionTime": before},
        {"type": "DisruptionTarget", "status": "True", "lastTransitionTime": before},
    ]
    result = status("Always", records(rec), previous=previous)
    by_type = {c["type"]: c for c in result["conditions"]}
    assert by_type["Ready"]["lastTransitionTime"] == before  # unchanged status
    assert by_type["Initialized"]["lastTransitionTime"] == before
    assert by_type["DisruptionTarget"] == previous[2]
    rec.ready = True
    result = status("Always", records(rec), previous=previous)
    by_type = {c["type"]: c for c in result["conditions"]}
    assert by_type["Ready"]["lastTransitionTime"] == lifecycle.rfc3339(NOW)  # it changed


def test_status_is_deterministic_for_unchanged_records() -> None:
    recs = records(exited("c", 1, restarts=3, ago=5))
    assert status("Always", recs) == status("Always", recs)


# ------------------------------------------------------------------ probes


def tracker(**kw: float) -> ProbeTracker:
    options = {
        "initial_delay": 5.0,
        "period": 2.0,
        "failure_threshold": 3,
        "success_threshold": 1,
        "started_at": NOW,
    }
    options.update(kw)
    return ProbeTracker(**options)  # type: ignore[arg-type]


def test_probe_waits_for_its_initial_delay_then_its_period() -> None:
    probe = tracker()
    assert not probe.due(NOW + 4.9) and probe.due(NOW + 5)
    probe.observe(True, NOW + 5)
    assert probe.passing and probe.next_at == NOW + 7


def test_probe_flips_only_on_thresholds() -> None:
    probe = tracker(success_threshold=2, failure_threshold=2)
    probe.observe(True, NOW)
    assert not probe.passing
    probe.observe(True, NOW)
    assert probe.passing
    probe.observe(False, NOW)
    assert probe.passing and not probe.failed
    probe.observe(True, NOW)  # a success resets the failure count
    probe.observe(False, NOW)
    assert probe.passing
    probe.observe(False, NOW)
    assert not probe.passing and probe.failed


def test_liveness_starts_passing() -> None:
    probe = ProbeTracker(0, 1, 1, 1, NOW, initial=True)
    assert probe.passing
    probe.observe(False, NOW)
    assert probe.failed and not probe.passing

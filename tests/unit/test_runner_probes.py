"""The pod runner's probes: their kinds, what a result means for the container record, and
the schedule of one pod's probes, driven by a fake clock and scripted results.

Real HTTP, TCP and exec attempts are in test_runner_termination.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from edgemodel_sandbox.runner import plan
from edgemodel_sandbox.runner.lifecycle import RUNNING, Record
from edgemodel_sandbox.runner.probes import (
    CHECK_ORDER,
    ProbeKind,
    Prober,
    ProbeRole,
    Verdict,
    applies,
    judge,
    run_probe,
    tracker_for,
)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Script:
    """Probe results by probe path, and the attempts made."""

    def __init__(self) -> None:
        self.results: dict[str, bool] = {}
        self.attempts: list[str] = []

    def __call__(self, probe: plan.Probe, env: Mapping[str, str], cwd: str) -> bool:
        self.attempts.append(probe.path)
        return self.results.get(probe.path, False)


def probe(path: str, **timing: Any) -> plan.Probe:
    return plan.Probe(kind="http", host="10.0.0.1", port=80, path=path, **timing)


def container(**probes: Any) -> plan.ContainerPlan:
    return plan.ContainerPlan(name="c", image="i", init=False, cwd="/tmp", **probes)


def running(started: bool) -> Record:
    return Record("c", "i", state=RUNNING, started=started, ready=False)


def test_every_kind_the_plan_produces_is_known() -> None:
    assert {k.value for k in ProbeKind} == {"http", "tcp", "exec"}
    assert ProbeKind.of(plan.Probe(kind="tcp")) is ProbeKind.TCP


def test_an_unknown_kind_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match="'grpc' is not one of"):
        run_probe(plan.Probe(kind="grpc"), {}, "/")


def test_startup_probes_run_until_started_the_others_after() -> None:
    assert applies(ProbeRole.STARTUP, running(started=False))
    assert not applies(ProbeRole.STARTUP, running(started=True))
    for role in (ProbeRole.READINESS, ProbeRole.LIVENESS):
        assert applies(role, running(started=True))
        assert not applies(role, running(started=False))
    assert CHECK_ORDER[0] is ProbeRole.STARTUP


def test_only_liveness_passes_before_its_first_result() -> None:
    for role in ProbeRole:
        tracker = tracker_for(probe("/"), role, 0.0)
        assert tracker.passing is (role is ProbeRole.LIVENESS)


@pytest.mark.parametrize(
    ("role", "passing", "failures", "has_readiness", "verdict"),
    [
        (ProbeRole.STARTUP, True, 0, True, Verdict(started=True, ready=False, arm_others=True)),
        (ProbeRole.STARTUP, True, 0, False, Verdict(started=True, ready=True, arm_others=True)),
        (ProbeRole.STARTUP, False, 1, False, Verdict()),
        (ProbeRole.STARTUP, False, 3, False, Verdict(ready=False, restart=True)),
        (ProbeRole.READINESS, True, 0, True, Verdict(ready=True)),
        (ProbeRole.READINESS, False, 3, True, Verdict(ready=False)),
        (ProbeRole.LIVENESS, True, 2, False, Verdict()),
        (ProbeRole.LIVENESS, False, 3, False, Verdict(ready=False, restart=True)),
    ],
)
def test_what_a_result_means(
    role: ProbeRole, passing: bool, failures: int, has_readiness: bool, verdict: Verdict
) -> None:
    tracker = tracker_for(probe("/", failure_threshold=3), role, 0.0)
    tracker.passing, tracker.failures = passing, failures
    assert judge(role, tracker, has_readiness) == verdict


def test_a_verdict_changes_only_what_it_names() -> None:
    record = running(started=True)
    record.ready = True
    Verdict().apply(record)
    assert record.started and record.ready
    Verdict(ready=False).apply(record)
    assert record.started and not record.ready


def test_startup_success_starts_the_container_and_arms_the_others_from_then() -> None:
    clock, script = Clock(), Script()
    prober = Prober(run=script, clock=clock)
    plan_ = container(
        startup=probe("/start", period=1),
        readiness=probe("/ready", initial_delay=5),
        liveness=probe("/live", initial_delay=7),
    )
    record = running(started=False)
    prober.arm("c", plan_, clock.now)
    script.results["/start"] = True
    clock.now += 60
    found = prober.check("c", plan_, record)
    assert record.started and not record.ready
    assert script.attempts == ["/start"]  # the others wait out their delays from now
    assert found.restart is None and found.next_at == clock.now + 1
    readiness = prober.tracker("c", ProbeRole.READINESS)
    assert readiness is not None and readiness.next_at == clock.now + 5
    clock.now += 5
    script.results["/ready"] = True
    prober.check("c", plan_, record)
    assert record.ready and script.attempts == ["/start", "/ready"]


def test_readiness_follows_its_thresholds() -> None:
    clock, script = Clock(), Script()
    prober = Prober(run=script, clock=clock)
    plan_ = container(readiness=probe("/ready", period=1, failure_threshold=2))
    record = running(started=True)
    prober.arm("c", plan_, clock.now)
    script.results["/ready"] = True
    prober.check("c", plan_, record)
    assert record.ready
    script.results["/ready"] = False
    clock.now += 1
    prober.check("c", plan_, record)
    assert record.ready  # one failure of two
    clock.now += 1
    prober.check("c", plan_, record)
    assert not record.ready


def test_liveness_past_its_threshold_asks_for_a_restart() -> None:
    clock, script = Clock(), Script()
    prober = Prober(run=script, clock=clock)
    plan_ = container(liveness=probe("/live", period=2, failure_threshold=2))
    record = running(started=True)
    record.ready = True
    prober.arm("c", plan_, clock.now)
    assert prober.check("c", plan_, record).restart is None
    clock.now += 1
    prober.check("c", plan_, record)
    assert script.attempts == ["/live"]  # not due yet
    clock.now += 1
    found = prober.check("c", plan_, record)
    assert found.restart is ProbeRole.LIVENESS and not record.ready


def test_disarmed_containers_are_not_probed() -> None:
    clock, script = Clock(), Script()
    prober = Prober(run=script, clock=clock)
    plan_ = container(liveness=probe("/live"))
    prober.arm("c", plan_, clock.now)
    prober.disarm("c")
    found = prober.check("c", plan_, running(started=True))
    assert script.attempts == [] and found.next_at == float("inf")


def test_a_new_run_starts_a_fresh_schedule() -> None:
    clock, script = Clock(), Script()
    prober = Prober(run=script, clock=clock)
    plan_ = container(liveness=probe("/live", initial_delay=3, failure_threshold=1))
    prober.arm("c", plan_, clock.now)
    clock.now += 3
    assert prober.check("c", plan_, running(started=True)).restart is ProbeRole.LIVENESS
    prober.arm("c", plan_, clock.now)
    tracker = prober.tracker("c", ProbeRole.LIVENESS)
    assert tracker is not None and tracker.passing and tracker.failures == 0
    assert tracker.next_at == clock.now + 3

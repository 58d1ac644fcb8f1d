"""Owns the container records' transitions, as pure functions of what happened and when.

A record (`lifecycle.Record`) is created waiting, may adopt the runs of an earlier runner
(from the pod's status: a container that ran counts a restart when it runs again), is marked
runnable or not by the launch plan, and moves through `begin_run` -> `mark_running` (or
`fail_start`) -> `end_run` for every run. `lifecycle` decides and renders from the records;
the supervisor calls these on the events its units report (docs/architecture.md, "The pod
runner").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgemodel_operator.timestamps import parse_rfc3339
from edgemodel_sandbox.runner import lifecycle, plan
from edgemodel_sandbox.runner.lifecycle import Record, Terminated
from edgemodel_sandbox.runner.processes import Exit


def parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return parse_rfc3339(text).timestamp()
    except ValueError:
        return None


# ------------------------------------------------------------------ records (pure)


def new_records(spec: Mapping[str, Any]) -> dict[str, Record]:
    """A waiting record per container, init containers first."""
    records: dict[str, Record] = {}
    for container in spec.get("initContainers") or []:
        name = container["name"]
        records[name] = Record(name, str(container.get("image", "")), init=True)
    for container in spec.get("containers") or []:
        name = container["name"]
        records[name] = Record(name, str(container.get("image", "")))
    return records


def adopt(records: Mapping[str, Record], status: Mapping[str, Any], now: float) -> None:
    """Carry restart counts over from a previous runner: a run it had becomes a restart."""
    previous = [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]
    for entry in previous:
        record = records.get(str(entry.get("name")))
        if record is None:
            continue
        state = entry.get("state") or {}
        ran = (
            "running" in state
            or "terminated" in state
            or bool((entry.get("lastState") or {}).get("terminated"))
        )
        if not ran:
            continue
        started = parse_time((state.get("running") or {}).get("startedAt")) or now
        # `begin_run` counts the restart: a container that ran before starts again.
        record.restart_count = int(entry.get("restartCount") or 0)
        record.ever_ran = True
        record.last = Terminated(
            exit_code=255,
            reason="Unknown",
            message="the sandbox's pod runner restarted",
            started_at=started,
            finished_at=now,
        )


def apply_plan(records: Mapping[str, Record], pod_plan: plan.PodPlan) -> None:
    """Mark the waiting containers the plan cannot start, and why; clear those it now can."""
    for container_plan in (*pod_plan.init_containers, *pod_plan.containers):
        record = records[container_plan.name]
        if record.state != lifecycle.WAITING:
            continue
        record.runnable = container_plan.runnable
        record.reason = container_plan.waiting_reason or "ContainerCreating"
        record.message = container_plan.waiting_message


def begin_run(record: Record, now: float, uid: str) -> None:
    """A new run is about to start: the last run moves to lastState, a rerun is a restart."""
    if record.ever_ran:
        record.restart_count += 1
        record.last = record.terminated or record.last
    record.terminated = None
    record.ever_ran = True
    record.started_at = now
    record.container_id = f"sandbox://{uid[:8]}-{record.name}-{record.restart_count}"


def fail_start(record: Record, message: str, now: float) -> None:
    """The run could not be spawned: it ends at once, as the kubelet's StartError."""
    record.state = lifecycle.TERMINATED
    record.terminated = Terminated(128, "StartError", message, now, now)


def mark_running(record: Record, container_plan: plan.ContainerPlan) -> None:
    """The run's process is up: started unless a startup probe says so later, ready unless
    a readiness probe says so later (an init container is never ready while it runs)."""
    record.state = lifecycle.RUNNING
    record.reason = record.message = ""
    record.started = container_plan.startup is None
    record.ready = record.started and container_plan.readiness is None and not record.init


def end_run(record: Record, ended: Exit, now: float) -> None:
    """The run's process exited: terminated with its code and message."""
    record.state = lifecycle.TERMINATED
    record.terminated = Terminated(
        exit_code=ended.exit_code,
        reason="Completed" if ended.exit_code == 0 else "Error",
        message=ended.message,
        started_at=record.started_at or now,
        finished_at=now,
        container_id=record.container_id,
    )
    record.started = False
    record.ready = record.init and ended.exit_code == 0

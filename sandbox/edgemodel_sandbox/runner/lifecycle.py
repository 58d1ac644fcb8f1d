"""Owns the kubelet's decisions, as pure functions of container records and the clock.

`decide` says which containers to start now (init containers in order to completion, then
the rest; restarts per restartPolicy with the kubelet's back-off) and when to look again;
`pod_status` renders the records as the pod's status (phase, conditions, container
statuses) exactly as the kubelet reports them. The supervisor owns the records and does
the I/O; nothing here reads a clock, a process or the API.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgemodel_operator.timestamps import rfc3339

BACKOFF_INITIAL = 10.0
BACKOFF_MAX = 300.0
WAITING = "waiting"
RUNNING = "running"
TERMINATED = "terminated"
OWN_CONDITIONS = ("PodScheduled", "Initialized", "ContainersReady", "Ready")


@dataclass
class Terminated:
    """One finished run of a container."""

    exit_code: int
    reason: str
    message: str
    started_at: float
    finished_at: float
    container_id: str = ""

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": rfc3339(self.started_at),
            "finishedAt": rfc3339(self.finished_at),
        }
        if self.message:
            out["message"] = self.message
        if self.container_id:
            out["containerID"] = self.container_id
        return out


@dataclass
class Record:
    """What the runner knows of one container: its current run and its history."""

    name: str
    image: str
    init: bool = False
    state: str = WAITING
    reason: str = "ContainerCreating"  # while waiting
    message: str = ""  # while waiting
    started_at: float | None = None  # of the current run
    terminated: Terminated | None = None  # the current run, once it ended
    last: Terminated | None = None  # the run before, for lastState
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    container_id: str = ""
    runnable: bool = True
    ever_ran: bool = False


@dataclass
class Decision:
    """What to do now, and when to look again at the latest (None: on the next event)."""

    start: list[str] = field(default_factory=list)
    wake_at: float | None = None
    init_failed: bool = False


def backoff(restart_count: int) -> float:
    """Delay before restarting a container that has restarted `restart_count` times.

    As the kubelet: the first restart is immediate, then 10 s, 20 s, 40 s ... up to 5 min.
    """
    if restart_count <= 0:
        return 0.0
    return float(min(BACKOFF_INITIAL * 2.0 ** (restart_count - 1), BACKOFF_MAX))


def will_restart(policy: str, record: Record, init: bool = False) -> bool:
    """Whether a terminated container is going to run again under `policy`."""
    if record.state != TERMINATED or record.terminated is None:
        return False
    failed = record.terminated.exit_code != 0
    if init:
        # Init containers rerun on failure unless the pod may never restart anything.
        return failed and policy != "Never"
    return policy == "Always" or (policy == "OnFailure" and failed)


def restart_due(record: Record) -> float:
    assert record.terminated is not None
    return record.terminated.finished_at + backoff(record.restart_count)


def init_done(records: Mapping[str, Record], init_names: Sequence[str]) -> bool:
    return all(_succeeded(records[name]) for name in init_names)


def _succeeded(record: Record) -> bool:
    return (
        record.state == TERMINATED
        and record.terminated is not None
        and record.terminated.exit_code == 0
    )


def _due(record: Record, now: float, decision: Decision) -> bool:
    due = restart_due(record)
    if now >= due:
        return True
    decision.wake_at = due if decision.wake_at is None else min(decision.wake_at, due)
    return False


def decide(
    policy: str,
    init_names: Sequence[str],
    names: Sequence[str],
    records: Mapping[str, Record],
    now: float,
) -> Decision:
    """Which containers to start at `now`."""
    decision = Decision()
    for name in init_names:
        record = records[name]
        if _succeeded(record):
            continue
        if record.state == RUNNING or not record.runnable:
            return decision
        if record.state == WAITING:
            decision.start.append(name)
            return decision
        if not will_restart(policy, record, init=True):
            decision.init_failed = True
            return decision
        if _due(record, now, decision):
            decision.start.append(name)
        return decision
    for name in names:
        record = records[name]
        if not record.runnable:
            continue
        restart = will_restart(policy, record) and _due(record, now, decision)
        if record.state == WAITING or restart:
            decision.start.append(name)
    return decision


# ------------------------------------------------------------------ status


def pod_phase(
    policy: str,
    init_names: Sequence[str],
    names: Sequence[str],
    records: Mapping[str, Record],
) -> str:
    """The kubelet's getPhase over the records."""
    for name in init_names:
        record = records[name]
        if _succeeded(record):
            continue
        if record.state == TERMINATED and not will_restart(policy, record, init=True):
            return "Failed"
        return "Pending"
    return _phase_of_containers(policy, [records[name] for name in names])


def _phase_of_containers(policy: str, records: Sequence[Record]) -> str:
    """getPhase once the init containers are done: from the regular containers' states."""
    waiting = running = stopped = succeeded = 0
    for record in records:
        if record.state == RUNNING:
            running += 1
        elif record.state == TERMINATED:
            stopped += 1
            succeeded += int(_succeeded(record))
        elif record.ever_ran:
            stopped += 1  # waiting to be restarted (adopted after a runner restart)
        else:
            waiting += 1
    if waiting or not (running or stopped):
        return "Pending"
    if running or policy == "Always":
        return "Running"
    if stopped == succeeded:
        return "Succeeded"
    return "Failed" if policy == "Never" else "Running"


def container_status(record: Record, policy: str, now: float) -> dict[str, Any]:
    state: dict[str, Any]
    last = record.last
    if record.state == RUNNING and record.started_at is not None:
        state = {"running": {"startedAt": rfc3339(record.started_at)}}
    elif record.state == TERMINATED and record.terminated is not None:
        if will_restart(policy, record, init=record.init) and backoff(record.restart_count) > 0:
            # As the kubelet between a crash and the restart: waiting, last run in lastState.
            state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": (
                        f"back-off {backoff(record.restart_count):.0f}s restarting failed "
                        f"container={record.name}"
                    ),
                }
            }
            last = record.terminated
        else:
            state = {"terminated": record.terminated.to_api()}
    else:
        waiting: dict[str, Any] = {"reason": record.reason}
        if record.message:
            waiting["message"] = record.message
        state = {"waiting": waiting}
    out: dict[str, Any] = {
        "name": record.name,
        "image": record.image,
        "imageID": f"sandbox://{record.image}",
        "ready": record.ready,
        "started": record.started,
        "restartCount": record.restart_count,
        "state": state,
        "lastState": {"terminated": last.to_api()} if last is not None else {},
    }
    if record.container_id:
        out["containerID"] = record.container_id
    return out


def _condition(
    kind: str,
    ok: bool,
    previous: Mapping[str, Mapping[str, Any]],
    now: float,
    *,
    reason: str = "",
    message: str = "",
) -> dict[str, Any]:
    status = "True" if ok else "False"
    before = previous.get(kind) or {}
    since = before.get("lastTransitionTime") if before.get("status") == status else None
    out: dict[str, Any] = {
        "type": kind,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": since or rfc3339(now),
    }
    if not ok and reason:
        out["reason"] = reason
        out["message"] = message
    return out


def pod_status(
    *,
    policy: str,
    init_names: Sequence[str],
    names: Sequence[str],
    records: Mapping[str, Record],
    pod_ip: str,
    start_time: float,
    previous_conditions: Sequence[Mapping[str, Any]],
    now: float,
) -> dict[str, Any]:
    """The pod's status as the kubelet would write it (a full replacement of its lists)."""
    phase = pod_phase(policy, init_names, names, records)
    previous = {str(c.get("type")): c for c in previous_conditions}
    initialized = init_done(records, init_names)
    incomplete = [n for n in init_names if not _succeeded(records[n])]
    unready = [n for n in names if not records[n].ready]
    terminal = phase in ("Succeeded", "Failed")
    conditions = [
        c for c in previous_conditions if c.get("type") not in OWN_CONDITIONS
    ]  # others' conditions (DisruptionTarget, readiness gates) are kept as they are
    conditions += [
        _condition("PodScheduled", True, previous, now),
        _condition(
            "Initialized",
            initialized,
            previous,
            now,
            reason="ContainersNotInitialized",
            message=f"containers with incomplete status: [{' '.join(incomplete)}]",
        ),
    ]
    ready_reason = "PodCompleted" if terminal else "ContainersNotReady"
    ready_message = "" if terminal else f"containers with unready status: [{' '.join(unready)}]"
    all_ready = initialized and not unready and not terminal
    conditions += [
        _condition(
            "ContainersReady",
            all_ready,
            previous,
            now,
            reason=ready_reason,
            message=ready_message,
        ),
        _condition("Ready", all_ready, previous, now, reason=ready_reason, message=ready_message),
    ]
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": rfc3339(start_time),
        "containerStatuses": [container_status(records[n], policy, now) for n in names],
    }
    if init_names:
        status["initContainerStatuses"] = [
            container_status(records[n], policy, now) for n in init_names
        ]
    return status


# ------------------------------------------------------------------ probes


@dataclass
class ProbeTracker:
    """One probe's schedule and verdict: thresholds of consecutive results, as the kubelet.

    `passing` starts at `initial` (False for readiness and startup, True for liveness) and
    flips only after `success_threshold` successes or `failure_threshold` failures in a row.
    """

    initial_delay: float
    period: float
    failure_threshold: int
    success_threshold: int
    started_at: float
    initial: bool = False
    successes: int = 0
    failures: int = 0
    passing: bool = False
    next_at: float = 0.0

    def __post_init__(self) -> None:
        self.passing = self.initial
        self.next_at = self.started_at + self.initial_delay

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def observe(self, ok: bool, now: float) -> None:
        if ok:
            self.successes += 1
            self.failures = 0
            if self.successes >= max(1, self.success_threshold):
                self.passing = True
        else:
            self.failures += 1
            self.successes = 0
            if self.failures >= max(1, self.failure_threshold):
                self.passing = False
        self.next_at = now + max(self.period, 0.1)

    @property
    def failed(self) -> bool:
        """The failure threshold is reached (a liveness or startup probe kills on this)."""
        return self.failures >= max(1, self.failure_threshold)

"""Owns container probes: running one attempt, scheduling them, and what a result means.

A probe has a kind (`ProbeKind`: how it checks, HTTP GET, TCP connect or a command) and a
role (`ProbeRole`: startup, readiness or liveness). `run_probe` is the only part that talks
to a process; `judge` is the pure rule turning a tracker's verdict into changes of the
container record, as the kubelet applies them: a passing startup probe marks the container
started (and arms the other probes from then), readiness sets `ready`, and a startup or
liveness probe past its failure threshold asks for a restart. `Prober` keeps the schedules
(`lifecycle.ProbeTracker`) of one pod's containers (docs/architecture.md, "The pod runner").
"""

from __future__ import annotations

import enum
import http.client
import logging
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from edgemodel_sandbox.runner import plan
from edgemodel_sandbox.runner.lifecycle import ProbeTracker, Record

log = logging.getLogger("edgemodel.runner")


class ProbeKind(enum.Enum):
    """How a probe checks the container (gRPC probes are refused earlier, by `plan`)."""

    HTTP = "http"
    TCP = "tcp"
    EXEC = "exec"

    @classmethod
    def of(cls, probe: plan.Probe) -> ProbeKind:
        try:
            return cls(probe.kind)
        except ValueError:
            raise ValueError(
                f"probe kind {probe.kind!r} is not one of {[k.value for k in cls]}"
            ) from None


class ProbeRole(enum.Enum):
    """What a probe decides: when the container started, whether it serves, whether it lives."""

    STARTUP = "startup"
    READINESS = "readiness"
    LIVENESS = "liveness"

    @property
    def passing_at_start(self) -> bool:
        """A liveness probe counts as passing until it fails; the others until they pass."""
        return self is ProbeRole.LIVENESS


# The order probes of one container are looked at in, as the kubelet's workers would.
CHECK_ORDER = (ProbeRole.STARTUP, ProbeRole.LIVENESS, ProbeRole.READINESS)

ProbeRunner = Callable[[plan.Probe, Mapping[str, str], str], bool]
Clock = Callable[[], float]


def probe_of(container_plan: plan.ContainerPlan, role: ProbeRole) -> plan.Probe | None:
    return {
        ProbeRole.STARTUP: container_plan.startup,
        ProbeRole.READINESS: container_plan.readiness,
        ProbeRole.LIVENESS: container_plan.liveness,
    }[role]


# ------------------------------------------------------------------ one attempt


def _http(probe: plan.Probe) -> bool:
    connection: http.client.HTTPConnection
    if probe.scheme.upper() == "HTTPS":
        context = ssl._create_unverified_context()  # the kubelet skips verification too
        connection = http.client.HTTPSConnection(
            probe.host, probe.port, timeout=probe.timeout, context=context
        )
    else:
        connection = http.client.HTTPConnection(probe.host, probe.port, timeout=probe.timeout)
    try:
        connection.request("GET", probe.path, headers=dict(probe.headers))
        status = connection.getresponse().status
    finally:
        connection.close()
    return 200 <= status < 400


def _tcp(probe: plan.Probe) -> bool:
    with socket.create_connection((probe.host, probe.port), timeout=probe.timeout):
        return True


def _exec(probe: plan.Probe, env: Mapping[str, str], cwd: str) -> bool:
    result = subprocess.run(
        list(probe.command),
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=probe.timeout,
        check=False,
    )
    return result.returncode == 0


def run_probe(probe: plan.Probe, env: Mapping[str, str], cwd: str) -> bool:
    """One probe attempt against the live process; True on success."""
    kind = ProbeKind.of(probe)
    try:
        if kind is ProbeKind.HTTP:
            return _http(probe)
        if kind is ProbeKind.TCP:
            return _tcp(probe)
        return _exec(probe, env, cwd)
    except (OSError, http.client.HTTPException, subprocess.SubprocessError):
        return False


# ------------------------------------------------------------------ result -> record


@dataclass(frozen=True)
class Verdict:
    """What a probe result changes: record fields (None: unchanged), and what to do next."""

    started: bool | None = None
    ready: bool | None = None
    restart: bool = False
    arm_others: bool = False  # startup passed: readiness and liveness begin their delays

    def apply(self, record: Record) -> None:
        if self.started is not None:
            record.started = self.started
        if self.ready is not None:
            record.ready = self.ready


def applies(role: ProbeRole, record: Record) -> bool:
    """Startup probes run until the container started; the others only after."""
    return (role is ProbeRole.STARTUP) != record.started


def judge(role: ProbeRole, tracker: ProbeTracker, has_readiness: bool) -> Verdict:
    """What a probe's tracker, just after observing a result, means for its container."""
    if role is ProbeRole.STARTUP and tracker.passing:
        return Verdict(started=True, ready=not has_readiness, arm_others=True)
    if role is ProbeRole.READINESS:
        return Verdict(ready=tracker.passing)
    if tracker.failed:
        return Verdict(ready=False, restart=True)
    return Verdict()


def tracker_for(probe: plan.Probe, role: ProbeRole, now: float) -> ProbeTracker:
    return ProbeTracker(
        initial_delay=probe.initial_delay,
        period=probe.period,
        failure_threshold=probe.failure_threshold,
        success_threshold=probe.success_threshold,
        started_at=now,
        initial=role.passing_at_start,
    )


# ------------------------------------------------------------------ one pod's schedules


@dataclass(frozen=True)
class Round:
    """What one pass over a container's due probes found."""

    next_at: float  # when one of its probes is due next (inf: none is scheduled)
    restart: ProbeRole | None = None  # the probe that failed past its threshold


class Prober:
    """The probe schedules of one pod's containers, and running the due ones.

    `run` (one attempt) and `clock` are injected so the schedule can be tested without
    processes or waiting.
    """

    def __init__(self, run: ProbeRunner = run_probe, clock: Clock = time.time) -> None:
        self._run = run
        self._clock = clock
        self._lock = threading.Lock()
        self._trackers: dict[tuple[str, ProbeRole], ProbeTracker] = {}

    def arm(self, name: str, container_plan: plan.ContainerPlan, now: float) -> None:
        """A new run of `name` started at `now`: fresh schedules for its probes."""
        with self._lock:
            for role in ProbeRole:
                self._trackers.pop((name, role), None)
                probe = probe_of(container_plan, role)
                if probe is not None:
                    self._trackers[(name, role)] = tracker_for(probe, role, now)

    def disarm(self, name: str) -> None:
        with self._lock:
            for role in ProbeRole:
                self._trackers.pop((name, role), None)

    def tracker(self, name: str, role: ProbeRole) -> ProbeTracker | None:
        with self._lock:
            return self._trackers.get((name, role))

    def check(self, name: str, container_plan: plan.ContainerPlan, record: Record) -> Round:
        """Run the container's due probes and apply their verdicts to its record."""
        next_at = float("inf")
        for role in CHECK_ORDER:
            probe = probe_of(container_plan, role)
            tracker = self.tracker(name, role)
            if probe is None or tracker is None or not applies(role, record):
                continue
            if tracker.due(self._clock()):
                ok = self._run(probe, container_plan.env, container_plan.cwd)
                tracker.observe(ok, self._clock())
                verdict = judge(role, tracker, container_plan.readiness is not None)
                verdict.apply(record)
                if verdict.arm_others:
                    self._arm_after_startup(name)
                if verdict.restart:
                    return Round(next_at, restart=role)
            next_at = min(next_at, tracker.next_at)
        return Round(next_at)

    def _arm_after_startup(self, name: str) -> None:
        now = self._clock()
        for role in (ProbeRole.READINESS, ProbeRole.LIVENESS):
            later = self.tracker(name, role)
            if later is not None:
                later.next_at = now + later.initial_delay

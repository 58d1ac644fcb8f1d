"""Owns one pod's life on this machine: the coordinator of the runner's units for that pod.

A `PodWorker` is one thread per pod. It sleeps until something happens (a pod update from
the watch, a process exit, a probe or back-off deadline), asks `lifecycle.decide` what to
start, and hands the work to its units, each owning its own state:

- `credentials.PodCredentials`: the ConfigMaps, Secrets and service-account token it reads;
- `volumes.PodVolumes`: its volume folders (claims waited for until bound);
- `processes.Containers`: its container processes, their logs and termination messages;
- `probes.Prober`: its probe schedules, and what their results mean for the records;
- `statuswriter.StatusWriter`: the one writer of its status (once per turn, deduplicated)
  and of the confirmation of its deletion;
- `services.ServiceResolver`: Service names in a container's command line -> endpoints.

The container records (`lifecycle.Record`) are the worker thread's alone; `records` holds
the pure functions that change them on a start, an exit or an adoption. Only three things cross
threads: the latest pod (under a lock), the wake-up event and the gone flag
(docs/architecture.md, "The pod runner").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgemodel_sandbox.runner import dns, lifecycle, plan
from edgemodel_sandbox.runner.credentials import Objects, PodCredentials
from edgemodel_sandbox.runner.ipam import Allocator
from edgemodel_sandbox.runner.kube import SyncKube
from edgemodel_sandbox.runner.lifecycle import Record
from edgemodel_sandbox.runner.probes import Prober
from edgemodel_sandbox.runner.processes import Containers, Launch, ProcessTable, SpawnError
from edgemodel_sandbox.runner.records import (
    adopt,
    apply_plan,
    begin_run,
    end_run,
    fail_start,
    mark_running,
    new_records,
    parse_time,
)
from edgemodel_sandbox.runner.services import ServiceResolver
from edgemodel_sandbox.runner.statuswriter import StatusWriter, Written
from edgemodel_sandbox.runner.volumes import PodVolumes

log = logging.getLogger("edgemodel.runner")

IDLE_RECHECK = 30.0
CONFIG_RETRY = 2.0
CLAIM_RETRY = 2.0
HOST_NETWORK_IP = "127.0.0.1"  # the node's address, as for host-network pods


@dataclass
class Context:
    """What every worker shares: the API client, the IP pool, folders and the process table."""

    kube: SyncKube
    ipam: Allocator
    state: Path
    python: str
    triton: plan.Triton | None
    base_env: Mapping[str, str]
    shutdown: threading.Event = field(default_factory=threading.Event)
    dns_timeout: float = 60.0
    netns_path: str | None = None  # the pod network namespace (None: the host's)
    processes: ProcessTable = field(default_factory=ProcessTable)

    def stop_all(self, grace: float) -> None:
        """SIGTERM every container's process group, then SIGKILL what is left after `grace`."""
        self.processes.stop_all(grace)


# ------------------------------------------------------------------ the worker


class PodWorker:
    """Plays the kubelet for one pod, on its own thread, by coordinating its units.

    The watch thread calls `update`, `gone` and `wake`; process waiter threads call the
    wake-up. Everything else (records, plan, units) is touched by the worker thread only.
    """

    def __init__(self, ctx: Context, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        self.uid = str(meta["uid"])
        self.namespace = str(meta["namespace"])
        self.name = str(meta["name"])
        self._ctx = ctx
        self._pod = pod
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._gone = threading.Event()
        self._deleted = False
        self.records: dict[str, Record] = {}
        self.plan: plan.PodPlan | None = None
        self.pod_ip = ""
        self.start_time = time.time()
        self._config_retry_at = 0.0
        self._volume_dirs: dict[str, str] = {}
        self._containers = Containers(ctx.processes, self._wake.set)
        self._prober = Prober()
        self._status = StatusWriter(ctx.kube, pod)
        self._credentials = PodCredentials(ctx.kube, self.namespace, self.pod_dir, ctx.base_env)
        self._volumes = PodVolumes(ctx.kube, self.namespace, self.pod_dir, ctx.state / "nodes")
        self._services = ServiceResolver(
            ctx.kube, ctx.dns_timeout, self._stopping, ctx.shutdown.wait
        )
        self._thread = threading.Thread(
            target=self._main, name=f"pod {self.namespace}/{self.name}", daemon=True
        )

    # ------------------------------------------------------------ called by the watch

    def start(self) -> None:
        self._thread.start()

    def update(self, pod: dict[str, Any]) -> None:
        with self._lock:
            self._pod = pod
        self._wake.set()

    def gone(self) -> None:
        self._gone.set()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ------------------------------------------------------------ state

    @property
    def pod_dir(self) -> Path:
        return self._ctx.state / "pods" / f"{self.namespace}_{self.name}_{self.uid}"

    def _current(self) -> dict[str, Any]:
        with self._lock:
            return self._pod

    def _stopping(self) -> bool:
        pod = self._current()
        return (
            self._gone.is_set()
            or self._ctx.shutdown.is_set()
            or bool((pod.get("metadata") or {}).get("deletionTimestamp"))
        )

    def _container_plan(self, name: str) -> plan.ContainerPlan:
        assert self.plan is not None
        for container_plan in (*self.plan.init_containers, *self.plan.containers):
            if container_plan.name == name:
                return container_plan
        raise KeyError(name)

    # ------------------------------------------------------------ the loop

    def _main(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("pod worker failed pod=%s/%s", self.namespace, self.name)
        finally:
            if not self._ctx.shutdown.is_set():
                self._containers.kill_all(0.0)
            if self._gone.is_set():
                self._ctx.ipam.release(self.uid)
                self._volumes.remove()

    def _run(self) -> None:
        pod = self._current()
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            # Finished before this runner saw it (e.g. across a runner restart): only the
            # deletion is left to confirm.
            self._wait_for_deletion()
            return
        self._begin(pod)
        self.plan = self._prepare()
        if self.plan is None:
            self._wait_for_deletion()
            return
        apply_plan(self.records, self.plan)
        log.info("pod started pod=%s/%s ip=%s", self.namespace, self.name, self.pod_ip)
        self._loop()

    def _begin(self, pod: Mapping[str, Any]) -> None:
        """Address, records (adopted from an earlier runner's status) and a first status."""
        status = pod.get("status") or {}
        spec = pod.get("spec") or {}
        if spec.get("hostNetwork"):
            self.pod_ip = HOST_NETWORK_IP
        else:
            self.pod_ip = self._ctx.ipam.allocate(self.uid, status.get("podIP"))
        self.start_time = parse_time(status.get("startTime")) or time.time()
        self._status.adopt(status)
        self.records = new_records(spec)
        adopt(self.records, status, time.time())
        self._publish()

    def _loop(self) -> None:
        while not (self._ctx.shutdown.is_set() or self._gone.is_set()):
            pod = self._current()
            if (pod.get("metadata") or {}).get("deletionTimestamp"):
                self._terminate(pod)
                self._wait_for_deletion()
                return
            now = time.time()
            self._reap(now)
            wake_at = self._step(now)
            self._publish()
            timeout = None if wake_at is None else max(0.05, wake_at - time.time())
            self._wake.wait(timeout)
            self._wake.clear()

    def _step(self, now: float) -> float | None:
        """Start what is due and run due probes; the next deadline (None: only on events)."""
        assert self.plan is not None
        init_names = [c.name for c in self.plan.init_containers]
        names = [c.name for c in self.plan.containers]
        phase = lifecycle.pod_phase(self.plan.restart_policy, init_names, names, self.records)
        if phase in ("Succeeded", "Failed"):
            return None
        retry_at = self._retry_config(now)
        decision = lifecycle.decide(self.plan.restart_policy, init_names, names, self.records, now)
        for name in decision.start:
            if self._stopping():
                return now
            self._start(name)
        deadlines = [t for t in (decision.wake_at, retry_at) if t is not None]
        deadlines.append(self._run_probes())
        if self._containers:
            deadlines.append(time.time() + IDLE_RECHECK)
        return min(deadlines) if deadlines else None

    def _wait_for_deletion(self) -> None:
        """Idle until the pod is gone; confirm a graceful deletion once it is asked for."""
        while not (self._gone.is_set() or self._ctx.shutdown.is_set()):
            pod = self._current()
            deleting = bool((pod.get("metadata") or {}).get("deletionTimestamp"))
            if deleting and not self._deleted:
                self._terminate(pod)
            # A deletion not yet confirmed (API error) or not yet final is looked at again.
            self._wake.wait(IDLE_RECHECK if deleting else None)
            self._wake.clear()

    # ------------------------------------------------------------ preparation

    def _prepare(self) -> plan.PodPlan | None:
        """Objects, volumes and the launch plan; waits (bounded only by deletion) for claims."""
        pod = self._current()
        objects = self._credentials.fetch(pod)
        while True:
            placement = self._volumes.place(pod, objects)
            if not placement.pending:
                break
            message = (
                f"waiting for PersistentVolumeClaims to be bound: {', '.join(placement.pending)}"
            )
            for record in self.records.values():
                record.message = message
            self._publish()
            self._wake.wait(CLAIM_RETRY)
            self._wake.clear()
            if self._stopping():
                return None
            pod = self._current()
        for record in self.records.values():
            record.message = ""
        self._volume_dirs = placement.dirs
        return self._plan(pod, objects)

    def _plan(self, pod: Mapping[str, Any], objects: Objects) -> plan.PodPlan:
        return plan.plan_pod(
            pod,
            pod_ip=self.pod_ip,
            volume_dirs=self._volume_dirs,
            objects=objects,
            layout=plan.Layout(
                pod_dir=str(self.pod_dir),
                python=self._ctx.python,
                triton=self._ctx.triton,
                base_env=self._ctx.base_env,
            ),
        )

    def _retry_config(self, now: float) -> float | None:
        """Plan again while a ConfigMap or Secret a container needs is missing, as the kubelet
        keeps retrying; the time of the next attempt (None: nothing is missing)."""
        if not any(r.reason == plan.CONFIG_ERROR for r in self.records.values()):
            return None
        if now >= self._config_retry_at:
            pod = self._current()
            self.plan = self._plan(pod, self._credentials.fetch(pod))
            apply_plan(self.records, self.plan)
            self._config_retry_at = now + CONFIG_RETRY
        return self._config_retry_at

    # ------------------------------------------------------------ containers

    def _resolve(self, container_plan: plan.ContainerPlan) -> dict[dns.ServiceRef, str]:
        if not container_plan.services:
            return {}
        return self._services.resolve(container_plan.services, f"{self.namespace}/{self.name}")

    def _launch(
        self,
        container_plan: plan.ContainerPlan,
        record: Record,
        resolved: Mapping[dns.ServiceRef, str],
    ) -> Launch:
        """The command line with Services resolved, the pod's KUBECONFIG, this run's log."""
        env = {k: dns.substitute(v, resolved) for k, v in container_plan.env.items()}
        if self._credentials.kubeconfig.exists():
            env.setdefault("KUBECONFIG", str(self._credentials.kubeconfig))
        name = container_plan.name
        return Launch(
            name=name,
            argv=[dns.substitute(word, resolved) for word in container_plan.argv],
            env=env,
            cwd=container_plan.cwd,
            log_file=self.pod_dir / "logs" / name / f"{record.restart_count}.log",
            termination_file=Path(container_plan.termination_file),
            fallback_to_logs=container_plan.fallback_to_logs,
            netns=self._ctx.netns_path if self.pod_ip != HOST_NETWORK_IP else None,
        )

    def _start(self, name: str) -> None:
        container_plan = self._container_plan(name)
        record = self.records[name]
        resolved = self._resolve(container_plan)
        now = time.time()
        begin_run(record, now, self.uid)
        run = self._launch(container_plan, record, resolved)
        Containers.prepare(run)
        try:
            pid = self._containers.start(run)
        except SpawnError as exc:
            fail_start(record, str(exc), now)
            return
        mark_running(record, container_plan)
        self._prober.arm(name, container_plan, now)
        log.info(
            "container started pod=%s/%s container=%s pid=%d restart=%d",
            self.namespace,
            self.name,
            name,
            pid,
            record.restart_count,
        )

    def _reap(self, now: float) -> None:
        for ended in self._containers.reap():
            end_run(self.records[ended.name], ended, now)
            self._prober.disarm(ended.name)
            log.info(
                "container exited pod=%s/%s container=%s code=%d",
                self.namespace,
                self.name,
                ended.name,
                ended.exit_code,
            )

    def _run_probes(self) -> float:
        """Run every due probe; the time the next one is due (or far ahead)."""
        assert self.plan is not None
        next_at = time.time() + IDLE_RECHECK
        for name in self._containers.running():
            found = self._prober.check(name, self._container_plan(name), self.records[name])
            if found.restart is not None:
                log.info(
                    "%s probe failed, restarting pod=%s/%s container=%s",
                    found.restart.value,
                    self.namespace,
                    self.name,
                    name,
                )
                self._containers.stop(name, self.plan.grace_seconds)
                self._reap(time.time())
            next_at = min(next_at, found.next_at)
        return next_at

    # ------------------------------------------------------------ status and deletion

    def _publish(self) -> None:
        if self._gone.is_set() or self._ctx.shutdown.is_set():
            return
        written = self._status.publish(self._current(), self.records, self.pod_ip, self.start_time)
        if written is Written.GONE:
            self._gone.set()

    def _terminate(self, pod: Mapping[str, Any]) -> None:
        """Graceful deletion: SIGTERM, the grace period, SIGKILL, then confirm the deletion."""
        meta = pod.get("metadata") or {}
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        self._containers.kill_all(float(grace or 0))
        self._reap(time.time())
        if self._status.confirm_deletion():
            self._deleted = True
            log.info("pod deleted pod=%s/%s", self.namespace, self.name)

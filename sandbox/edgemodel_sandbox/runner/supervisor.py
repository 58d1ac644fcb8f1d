"""Owns one pod's life on this machine: its folders, processes, probes and status writes.

A `PodWorker` is one thread per pod. It sleeps until something happens (a pod update from
the watch, a process exit, a probe or back-off deadline), asks `lifecycle.decide` what to
start, runs probes, and writes the status `lifecycle.pod_status` renders whenever it
changes (a merge patch on pods/status). Container processes run in their own sessions, with
the parent-death signal set, and are registered with the runner so its exit stops them all.
"""

from __future__ import annotations

import calendar
import contextlib
import ctypes
import http.client
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from edgemodel_sandbox.runner import dns, lifecycle, network, plan
from edgemodel_sandbox.runner.ipam import Allocator
from edgemodel_sandbox.runner.kube import ApiError, Kube
from edgemodel_sandbox.runner.lifecycle import Record, Terminated

log = logging.getLogger("edgemodel.runner")

TERMINATION_MESSAGE_MAX = 4096
LOG_TAIL_BYTES = 2048
LOG_TAIL_LINES = 80
IDLE_RECHECK = 30.0
CONFIG_RETRY = 2.0
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the runner dies, even by SIGKILL, so does
    # the container, so no process outlives the sandbox.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass
class Context:
    """What every worker shares: the API client, the IP pool, folders and the process table."""

    kube: Kube
    ipam: Allocator
    state: Path
    python: str
    triton: plan.Triton | None
    base_env: Mapping[str, str]
    shutdown: threading.Event = field(default_factory=threading.Event)
    dns_timeout: float = 60.0
    netns_path: str | None = None  # the pod network namespace (None: the host's)
    _groups: set[int] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def register(self, pid: int) -> None:
        with self._lock:
            self._groups.add(pid)

    def unregister(self, pid: int) -> None:
        with self._lock:
            self._groups.discard(pid)

    def stop_all(self, grace: float) -> None:
        """SIGTERM every container's process group, then SIGKILL what is left after `grace`."""
        with self._lock:
            groups = list(self._groups)
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_group_alive(g) for g in groups):
            time.sleep(0.1)
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


def termination_message(file: Path, log_file: Path, exit_code: int, fallback_to_logs: bool) -> str:
    """The container's termination message, as the kubelet reads it."""
    try:
        with file.open("rb") as handle:
            message = handle.read(TERMINATION_MESSAGE_MAX).decode(errors="replace")
    except OSError:
        message = ""
    if message or not fallback_to_logs or exit_code == 0:
        return message
    try:
        with log_file.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - LOG_TAIL_BYTES))
            tail = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(tail.splitlines()[-LOG_TAIL_LINES:])


def run_probe(probe: plan.Probe, env: Mapping[str, str], cwd: str) -> bool:
    """One probe attempt against the live process; True on success."""
    try:
        if probe.kind == "tcp":
            with socket.create_connection((probe.host, probe.port), timeout=probe.timeout):
                return True
        if probe.kind == "http":
            connection: http.client.HTTPConnection
            if probe.scheme.upper() == "HTTPS":
                context = ssl._create_unverified_context()  # the kubelet skips verification too
                connection = http.client.HTTPSConnection(
                    probe.host, probe.port, timeout=probe.timeout, context=context
                )
            else:
                connection = http.client.HTTPConnection(
                    probe.host, probe.port, timeout=probe.timeout
                )
            try:
                connection.request("GET", probe.path, headers=dict(probe.headers))
                status = connection.getresponse().status
            finally:
                connection.close()
            return 200 <= status < 400
        if probe.kind == "exec":
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
    except (OSError, http.client.HTTPException, subprocess.SubprocessError):
        return False
    return False


class PodWorker:
    """Plays the kubelet for one pod, on its own thread."""

    def __init__(self, ctx: Context, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        self.uid = str(meta["uid"])
        self.namespace = str(meta["namespace"])
        self.name = str(meta["name"])
        self._ctx = ctx
        self._pod = pod
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._gone = False
        self._deleted = False
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, Path] = {}
        self._probes: dict[tuple[str, str], lifecycle.ProbeTracker] = {}
        self._published: dict[str, Any] | None = None
        self._conditions: list[dict[str, Any]] = []
        self.records: dict[str, Record] = {}
        self._volume_dirs: dict[str, str] = {}
        self._config_retry_at = 0.0
        self.plan: plan.PodPlan | None = None
        self.pod_ip = ""
        self.start_time = time.time()
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
        self._gone = True
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ------------------------------------------------------------ folders

    @property
    def pod_dir(self) -> Path:
        return self._ctx.state / "pods" / f"{self.namespace}_{self.name}_{self.uid}"

    def _current(self) -> dict[str, Any]:
        with self._lock:
            return self._pod

    def _api_path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"

    def _stopping(self) -> bool:
        pod = self._current()
        return (
            self._gone
            or self._ctx.shutdown.is_set()
            or bool((pod.get("metadata") or {}).get("deletionTimestamp"))
        )

    # ------------------------------------------------------------ the loop

    def _main(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("pod worker failed pod=%s/%s", self.namespace, self.name)
        finally:
            if not self._ctx.shutdown.is_set():
                self._kill_all(0.0)
            if self._gone:
                self._ctx.ipam.release(self.uid)
                shutil.rmtree(self.pod_dir / "volumes", ignore_errors=True)

    def _run(self) -> None:
        pod = self._current()
        status = pod.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            # Finished before this runner saw it (e.g. across a runner restart): only the
            # deletion is left to confirm.
            self._wait_for_deletion()
            return
        if (pod.get("spec") or {}).get("hostNetwork"):
            self.pod_ip = "127.0.0.1"  # the node's address, as for host-network pods
        else:
            self.pod_ip = self._ctx.ipam.allocate(self.uid, status.get("podIP"))
        self.start_time = parse_time(status.get("startTime")) or time.time()
        self._conditions = [
            c for c in status.get("conditions") or [] if c.get("type") in lifecycle.OWN_CONDITIONS
        ]
        spec = pod.get("spec") or {}
        for container in spec.get("initContainers") or []:
            self.records[container["name"]] = Record(
                container["name"], str(container.get("image", "")), init=True
            )
        for container in spec.get("containers") or []:
            self.records[container["name"]] = Record(
                container["name"], str(container.get("image", ""))
            )
        self._adopt(status)
        self._publish()
        self.plan = self._prepare()
        if self.plan is None:
            self._wait_for_deletion()
            return
        self._apply_plan()
        log.info("pod started pod=%s/%s ip=%s", self.namespace, self.name, self.pod_ip)
        while True:
            if self._ctx.shutdown.is_set() or self._gone:
                return
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
        if self._procs:
            deadlines.append(time.time() + IDLE_RECHECK)
        return min(deadlines) if deadlines else None

    def _wait_for_deletion(self) -> None:
        """Idle until the pod is gone; confirm a graceful deletion once it is asked for."""
        while not (self._gone or self._ctx.shutdown.is_set()):
            pod = self._current()
            deleting = bool((pod.get("metadata") or {}).get("deletionTimestamp"))
            if deleting and not self._deleted:
                self._terminate(pod)
            # A deletion not yet confirmed (API error) or not yet final is looked at again.
            self._wake.wait(IDLE_RECHECK if deleting else None)
            self._wake.clear()

    # ------------------------------------------------------------ adoption

    def _adopt(self, status: Mapping[str, Any]) -> None:
        """Carry restart counts over from a previous runner: a run it had becomes a restart."""
        previous = [
            *(status.get("initContainerStatuses") or []),
            *(status.get("containerStatuses") or []),
        ]
        now = time.time()
        for entry in previous:
            record = self.records.get(str(entry.get("name")))
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
            # `_start` counts the restart: a container that ran before starts again.
            record.restart_count = int(entry.get("restartCount") or 0)
            record.ever_ran = True
            record.last = Terminated(
                exit_code=255,
                reason="Unknown",
                message="the sandbox's pod runner restarted",
                started_at=started,
                finished_at=now,
            )

    # ------------------------------------------------------------ volumes

    def _prepare(self) -> plan.PodPlan | None:
        """Folders, volumes and the launch plan; waits (bounded only by deletion) for claims."""
        pod = self._current()
        node = str((pod.get("spec") or {}).get("nodeName", ""))
        objects = self._fetch_objects(pod)
        while True:
            sources = plan.volume_sources(
                pod, str(self.pod_dir), str(self._ctx.state / "nodes" / node), objects
            )
            volume_dirs: dict[str, str] = {}
            pending: list[str] = []
            for source in sources:
                if source.claim:
                    path = self._claim_path(source.claim)
                    if path is None:
                        pending.append(source.claim)
                        continue
                    volume_dirs[source.name] = path
                else:
                    volume_dirs[source.name] = source.host_path
                self._materialize(source, volume_dirs[source.name])
            if not pending:
                break
            message = f"waiting for PersistentVolumeClaims to be bound: {', '.join(pending)}"
            for record in self.records.values():
                record.message = message
            self._publish()
            self._wake.wait(2.0)
            self._wake.clear()
            if self._stopping():
                return None
            pod = self._current()
        for record in self.records.values():
            record.message = ""
        self._volume_dirs = volume_dirs
        return self._plan(pod, objects)

    def _plan(
        self, pod: Mapping[str, Any], objects: Mapping[tuple[str, str], Mapping[str, str]]
    ) -> plan.PodPlan:
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

    def _apply_plan(self) -> None:
        """Mark the containers the plan cannot start, and why; clear those it now can."""
        assert self.plan is not None
        for container_plan in (*self.plan.init_containers, *self.plan.containers):
            record = self.records[container_plan.name]
            if record.state != lifecycle.WAITING:
                continue
            record.runnable = container_plan.runnable
            record.reason = container_plan.waiting_reason or "ContainerCreating"
            record.message = container_plan.waiting_message

    def _retry_config(self, now: float) -> float | None:
        """Plan again while a ConfigMap or Secret a container needs is missing, as the kubelet
        keeps retrying; the time of the next attempt (None: nothing is missing)."""
        if not any(r.reason == plan.CONFIG_ERROR for r in self.records.values()):
            return None
        if now >= self._config_retry_at:
            pod = self._current()
            self.plan = self._plan(pod, self._fetch_objects(pod))
            self._apply_plan()
            self._config_retry_at = now + CONFIG_RETRY
        return self._config_retry_at

    def _fetch_objects(self, pod: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, str]]:
        import base64

        objects: dict[tuple[str, str], dict[str, str]] = {}
        for kind, name in plan.referenced_objects(pod):
            try:
                found = self._ctx.kube.get(f"/api/v1/namespaces/{self.namespace}/{kind}/{name}")
            except ApiError as exc:
                log.warning("reading %s/%s failed: %s", kind, name, exc)
                continue
            if found is None:
                continue
            data = {str(k): str(v) for k, v in (found.get("data") or {}).items()}
            if kind == "secrets":
                data = {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}
            objects[(kind, name)] = data
        if plan.wants_token(pod):
            token = self._token(pod)
            if token:
                objects[(plan.SERVICE_ACCOUNT_TOKEN, plan.service_account(pod))] = {"token": token}
                ca = objects.get(("configmaps", "kube-root-ca.crt"), {}).get("ca.crt", "")
                self._write_kubeconfig(token, ca)
        return objects

    @property
    def kubeconfig(self) -> Path:
        return self.pod_dir / "serviceaccount.kubeconfig"

    def _write_kubeconfig(self, token: str, ca: str) -> None:
        """The pod's in-cluster credentials as a kubeconfig (its KUBECONFIG).

        A container reads them from /var/run/secrets/kubernetes.io/serviceaccount; these
        processes share the host's filesystem, so the same token, CA and namespace, and the
        `kubernetes` Service's address from the environment, are handed over this way.
        """
        import base64
        import json as _json

        host = self._ctx.base_env.get("KUBERNETES_SERVICE_HOST", "10.96.0.1")
        port = self._ctx.base_env.get("KUBERNETES_SERVICE_PORT", "443")
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "in-cluster",
                    "cluster": {
                        "server": f"https://{host}:{port}",
                        "certificate-authority-data": base64.b64encode(ca.encode()).decode(),
                    },
                }
            ],
            "users": [{"name": "serviceaccount", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "in-cluster",
                    "context": {
                        "cluster": "in-cluster",
                        "user": "serviceaccount",
                        "namespace": self.namespace,
                    },
                }
            ],
            "current-context": "in-cluster",
        }
        self.pod_dir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig.write_text(_json.dumps(config))
        self.kubeconfig.chmod(0o600)

    def _token(self, pod: Mapping[str, Any]) -> str:
        """A token for the pod's service account, bound to the pod (the TokenRequest API)."""
        meta = pod.get("metadata") or {}
        account = plan.service_account(pod)
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": 86400,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta.get("name"),
                    "uid": meta.get("uid"),
                },
            },
        }
        try:
            found = self._ctx.kube.request(
                "POST",
                f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{account}/token",
                body=body,
            )
        except ApiError as exc:
            log.warning("no token for service account %s: %s", account, exc)
            return ""
        return str((found.get("status") or {}).get("token") or "")

    def _claim_path(self, claim: str) -> str | None:
        found = self._ctx.kube.get(
            f"/api/v1/namespaces/{self.namespace}/persistentvolumeclaims/{claim}"
        )
        if not found or (found.get("status") or {}).get("phase") != "Bound":
            return None
        volume_name = (found.get("spec") or {}).get("volumeName")
        volume = self._ctx.kube.get(f"/api/v1/persistentvolumes/{volume_name}")
        if volume is None:
            return None
        spec = volume.get("spec") or {}
        path = (spec.get("hostPath") or spec.get("local") or {}).get("path")
        return str(path) if path else None

    @staticmethod
    def _materialize(source: plan.VolumeSource, path: str) -> None:
        target = Path(path)
        if source.is_file:
            target.parent.mkdir(parents=True, exist_ok=True)
            return
        target.mkdir(parents=True, exist_ok=True)
        for relative, content in source.files.items():
            file = target / relative
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(content)

    # ------------------------------------------------------------ processes

    def _container_plan(self, name: str) -> plan.ContainerPlan:
        assert self.plan is not None
        for container_plan in (*self.plan.init_containers, *self.plan.containers):
            if container_plan.name == name:
                return container_plan
        raise KeyError(name)

    def _resolve_services(self, container_plan: plan.ContainerPlan) -> dict[dns.ServiceRef, str]:
        """A ready endpoint per Service the container names; waits for one, within bounds."""
        resolved: dict[dns.ServiceRef, str] = {}
        deadline = time.monotonic() + self._ctx.dns_timeout
        for ref in container_plan.services:
            while True:
                target = self._resolve_one(ref)
                if target is not None:
                    resolved[ref] = target
                    break
                if time.monotonic() > deadline or self._stopping():
                    log.warning(
                        "no ready endpoint pod=%s/%s service=%s.%s",
                        self.namespace,
                        self.name,
                        ref.name,
                        ref.namespace,
                    )
                    break
                # Not the pod's wake event: pod updates would turn this into a busy loop.
                self._ctx.shutdown.wait(1.0)
        return resolved

    def _resolve_one(self, ref: dns.ServiceRef) -> str | None:
        try:
            service = self._ctx.kube.get(f"/api/v1/namespaces/{ref.namespace}/services/{ref.name}")
            if service is None:
                return None
            slices = self._ctx.kube.request(
                "GET",
                f"/apis/discovery.k8s.io/v1/namespaces/{ref.namespace}/endpointslices",
                query={"labelSelector": f"kubernetes.io/service-name={ref.name}"},
            )
        except (ApiError, OSError) as exc:
            log.warning("service lookup failed service=%s error=%s", ref.name, exc)
            return None
        return dns.resolve(service, slices.get("items") or [], ref)

    def _start(self, name: str) -> None:
        container_plan = self._container_plan(name)
        record = self.records[name]
        resolved = self._resolve_services(container_plan) if container_plan.services else {}
        argv = [dns.substitute(word, resolved) for word in container_plan.argv]
        env = {k: dns.substitute(v, resolved) for k, v in container_plan.env.items()}
        if self.kubeconfig.exists():
            env.setdefault("KUBECONFIG", str(self.kubeconfig))
        if record.ever_ran:
            record.restart_count += 1
            record.last = record.terminated or record.last
        record.terminated = None
        log_dir = self.pod_dir / "logs" / name
        log_dir.mkdir(parents=True, exist_ok=True)
        log_file = log_dir / f"{record.restart_count}.log"
        self._logs[name] = log_file
        termination = Path(container_plan.termination_file)
        termination.parent.mkdir(parents=True, exist_ok=True)
        termination.write_bytes(b"")
        Path(container_plan.cwd).mkdir(parents=True, exist_ok=True)
        now = time.time()
        record.ever_ran = True
        record.started_at = now
        record.container_id = f"sandbox://{self.uid[:8]}-{name}-{record.restart_count}"
        handle: IO[bytes] = log_file.open("ab")
        try:
            process = subprocess.Popen(
                argv,
                env=env,
                cwd=container_plan.cwd,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=self._preexec(),  # noqa: PLW1509 - two syscalls, no locks taken
            )
        except OSError as exc:
            record.state = lifecycle.TERMINATED
            record.terminated = Terminated(128, "StartError", str(exc), now, now)
            return
        finally:
            handle.close()
        self._ctx.register(process.pid)
        self._procs[name] = process
        record.state = lifecycle.RUNNING
        record.reason = record.message = ""
        record.started = container_plan.startup is None
        record.ready = record.started and container_plan.readiness is None and not record.init
        for kind, probe, initial in (
            ("startup", container_plan.startup, False),
            ("readiness", container_plan.readiness, False),
            ("liveness", container_plan.liveness, True),
        ):
            self._probes.pop((name, kind), None)
            if probe is not None:
                self._probes[(name, kind)] = lifecycle.ProbeTracker(
                    initial_delay=probe.initial_delay,
                    period=probe.period,
                    failure_threshold=probe.failure_threshold,
                    success_threshold=probe.success_threshold,
                    started_at=now,
                    initial=initial,
                )
        threading.Thread(
            target=self._await_exit, args=(process,), name=f"wait {name}", daemon=True
        ).start()
        log.info(
            "container started pod=%s/%s container=%s pid=%d restart=%d",
            self.namespace,
            self.name,
            name,
            process.pid,
            record.restart_count,
        )

    def _preexec(self) -> Callable[[], None]:
        """Between fork and exec: die with the runner, and join the pod network namespace."""
        netns = self._ctx.netns_path if self.pod_ip != "127.0.0.1" else None

        def prepare() -> None:
            _die_with_parent()
            if netns is not None:
                network.enter(netns)

        return prepare

    def _await_exit(self, process: subprocess.Popen[bytes]) -> None:
        process.wait()
        self._ctx.unregister(process.pid)
        self._wake.set()

    def _reap(self, now: float) -> None:
        for name, process in list(self._procs.items()):
            code = process.poll()
            if code is None:
                continue
            del self._procs[name]
            # The kubelet tears the whole container down when its main process exits.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            exit_code = code if code >= 0 else 128 - code
            container_plan = self._container_plan(name)
            record = self.records[name]
            record.state = lifecycle.TERMINATED
            record.terminated = Terminated(
                exit_code=exit_code,
                reason="Completed" if exit_code == 0 else "Error",
                message=termination_message(
                    Path(container_plan.termination_file),
                    self._logs[name],
                    exit_code,
                    container_plan.fallback_to_logs,
                ),
                started_at=record.started_at or now,
                finished_at=now,
                container_id=record.container_id,
            )
            record.started = False
            record.ready = record.init and exit_code == 0
            for kind in ("startup", "readiness", "liveness"):
                self._probes.pop((name, kind), None)
            log.info(
                "container exited pod=%s/%s container=%s code=%d",
                self.namespace,
                self.name,
                name,
                exit_code,
            )

    def _stop_container(self, name: str, grace: float) -> None:
        process = self._procs.get(name)
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=max(grace, 0.0))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        # Children the container left in its session go with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    def _kill_all(self, grace: float) -> None:
        processes = list(self._procs.values())
        for process in processes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    # ------------------------------------------------------------ probes

    def _run_probes(self) -> float:
        """Run every due probe; the time the next one is due (or far ahead)."""
        assert self.plan is not None
        next_at = time.time() + IDLE_RECHECK
        for name in list(self._procs):
            container_plan = self._container_plan(name)
            record = self.records[name]
            for kind, probe in (
                ("startup", container_plan.startup),
                ("liveness", container_plan.liveness),
                ("readiness", container_plan.readiness),
            ):
                tracker = self._probes.get((name, kind))
                if probe is None or tracker is None:
                    continue
                if kind != "startup" and not record.started:
                    continue
                if kind == "startup" and record.started:
                    continue
                now = time.time()
                if tracker.due(now):
                    ok = run_probe(probe, container_plan.env, container_plan.cwd)
                    tracker.observe(ok, time.time())
                    if kind == "startup" and tracker.passing:
                        record.started = True
                        record.ready = container_plan.readiness is None
                        readiness = self._probes.get((name, "readiness"))
                        liveness = self._probes.get((name, "liveness"))
                        for later in (readiness, liveness):
                            if later is not None:
                                later.next_at = time.time() + later.initial_delay
                    elif kind == "readiness":
                        record.ready = tracker.passing
                    elif tracker.failed and kind in ("startup", "liveness"):
                        log.info(
                            "%s probe failed, restarting pod=%s/%s container=%s",
                            kind,
                            self.namespace,
                            self.name,
                            name,
                        )
                        record.ready = False
                        self._stop_container(name, self.plan.grace_seconds)
                        self._reap(time.time())
                        break
                next_at = min(next_at, tracker.next_at)
        return next_at

    # ------------------------------------------------------------ status and deletion

    def _publish(self) -> None:
        if self._gone or self._ctx.shutdown.is_set():
            return
        pod = self._current()
        spec = pod.get("spec") or {}
        init_names = [c["name"] for c in spec.get("initContainers") or []]
        names = [c["name"] for c in spec.get("containers") or []]
        policy = str(spec.get("restartPolicy") or "Always")
        foreign = [
            c
            for c in (pod.get("status") or {}).get("conditions") or []
            if c.get("type") not in lifecycle.OWN_CONDITIONS
        ]
        status = lifecycle.pod_status(
            policy=policy,
            init_names=init_names,
            names=names,
            records=self.records,
            pod_ip=self.pod_ip,
            start_time=self.start_time,
            previous_conditions=[*foreign, *self._conditions],
            now=time.time(),
        )
        if status == self._published:
            return
        try:
            self._ctx.kube.merge_patch(self._api_path() + "/status", {"status": status})
        except ApiError as exc:
            if exc.status == 404:
                self._gone = True
                return
            log.warning("status write failed pod=%s/%s: %s", self.namespace, self.name, exc)
            return
        except OSError as exc:
            log.warning("status write failed pod=%s/%s: %s", self.namespace, self.name, exc)
            return
        self._published = status
        self._conditions = [
            c for c in status["conditions"] if c.get("type") in lifecycle.OWN_CONDITIONS
        ]

    def _terminate(self, pod: Mapping[str, Any]) -> None:
        """Graceful deletion: SIGTERM, the grace period, SIGKILL, then confirm the deletion."""
        meta = pod.get("metadata") or {}
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        self._kill_all(float(grace or 0))
        self._reap(time.time())
        try:
            self._ctx.kube.delete(
                self._api_path(),
                {
                    "apiVersion": "v1",
                    "kind": "DeleteOptions",
                    "gracePeriodSeconds": 0,
                    "preconditions": {"uid": self.uid},
                },
            )
        except (ApiError, OSError) as exc:
            log.warning("confirming deletion failed pod=%s/%s: %s", self.namespace, self.name, exc)
            return
        self._deleted = True
        log.info("pod deleted pod=%s/%s", self.namespace, self.name)

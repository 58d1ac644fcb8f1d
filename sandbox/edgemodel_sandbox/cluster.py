"""Owns the sandbox's processes: a real control plane on loopback plus kwok's simulated fleet.

`up` starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok, the pod
runner (the kubelet for EdgeModel's pods; see edgemodel_sandbox.runner) and Prometheus as
detached processes (each in its own session, logs under the state folder),
creates the edge nodes and waits until they are Ready. It is idempotent: a healthy sandbox
is reused (and grown when asked for more nodes), a broken one is torn down and made anew.
`down` stops every process group it started and frees every port it held.
`up(real_node=True)` adds edge-real-amd64-0, a real kubelet node (edgemodel_sandbox.realnode),
which `down` drains and sweeps from the machine before the control plane stops.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgemodel_sandbox import fleet, pki
from edgemodel_sandbox.errors import EdgeModelSandboxError
from edgemodel_sandbox.files import locked
from edgemodel_sandbox.kubeconfig import render as render_kubeconfig
from edgemodel_sandbox.tools import Tools, ensure_tools

STAGES = Path(__file__).with_name("kwok") / "stages.yaml"
# The label that keeps EdgeModel's pods away from kwok's pod stages (the pod runner's own).
RUNNER_LABEL = "app.kubernetes.io/part-of"
SERVICE_CIDR = "10.96.0.0/16"
COMPONENT_ORDER = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "pod-runner",
    "discovery",
    "prometheus",
)


class SandboxError(EdgeModelSandboxError, RuntimeError):
    """The sandbox could not be brought up, inspected or torn down."""


DEFAULT_NODE_LEASE_S = 40  # simulated nodes renew every 10 s, as a kubelet does


def state_dir() -> Path:
    explicit = os.environ.get("EDGEMODEL_SANDBOX_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME", str(Path.home() / ".local" / "state"))
    return Path(xdg) / "edgemodel" / "sandbox"


def _log(message: str) -> None:
    print(f"[sandbox {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@dataclass
class Process:
    """A component the sandbox started: enough to find it again and to stop it."""

    name: str
    pid: int
    ports: list[int]
    exe: str

    def alive(self) -> bool:
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            return False
        # A recycled pid runs some other program: not ours.
        return Path(cmdline).name == Path(self.exe).name


@dataclass
class State:
    """What `up` recorded in state.json."""

    ports: dict[str, int]
    processes: list[Process] = field(default_factory=list)
    nodes: int = 0
    # The real node's record (edgemodel_sandbox.realnode.node.NodeRecord), when it runs.
    real_node: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> State:
        raw = json.loads(text)
        return cls(
            ports=raw["ports"],
            processes=[Process(**p) for p in raw["processes"]],
            nodes=raw["nodes"],
            real_node=raw.get("real_node"),
        )


@dataclass(frozen=True)
class Sandbox:
    """One sandbox, living in `directory`.

    `node_lease_seconds` is the simulated nodes' lease (kwok renews it every quarter of it; 40 s
    gives the kubelet's 10 s heartbeat). A longer lease quiets a large fleet: with 1000 nodes the
    10 s renewals are about 80 writes a second, a third of a core for kube-apiserver and etcd
    with no model at all (bench/operator uses 600 s); the node controller's grace period then
    grows to two leases, so it does not call a node lost between renewals.
    """

    directory: Path
    node_lease_seconds: int = DEFAULT_NODE_LEASE_S

    @classmethod
    def default(cls) -> Sandbox:
        return cls(state_dir())

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.directory / "state.json"

    @property
    def logs(self) -> Path:
        return self.directory / "logs"

    def state(self) -> State | None:
        try:
            return State.from_json(self.state_file.read_text())
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, state: State) -> None:
        self._save(state)

    def _save(self, state: State) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(state.to_json())
        os.replace(tmp, self.state_file)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with locked(self.directory.parent / f".{self.directory.name}.lock"):
            yield

    # ---------------------------------------------------------------- queries

    def api_url(self, state: State) -> str:
        return f"https://127.0.0.1:{state.ports['apiserver']}"

    def prometheus_url(self, state: State | None = None) -> str | None:
        state = state or self.state()
        if state is None or "prometheus" not in state.ports:
            return None
        return f"http://127.0.0.1:{state.ports['prometheus']}"

    def healthy(self, state: State | None = None) -> bool:
        state = state or self.state()
        if state is None or not all(p.alive() for p in state.processes):
            return False
        return self._apiserver_ready(state)

    def _apiserver_ready(self, state: State) -> bool:
        credentials = pki.PKI(self.directory / "pki")
        context = ssl.create_default_context(cafile=str(credentials.ca_cert))
        request = urllib.request.Request(
            f"{self.api_url(state)}/readyz",
            headers={"Authorization": f"Bearer {credentials.admin_token}"},
        )
        try:
            with urllib.request.urlopen(request, context=context, timeout=3) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError, ssl.SSLError):
            return False

    def core_api(self) -> Any:
        from kubernetes import client, config

        api_client = config.new_client_from_config(config_file=str(self.kubeconfig))
        return client.CoreV1Api(api_client)

    # ---------------------------------------------------------------- up

    def up(
        self,
        nodes: int = len(fleet.DEFAULT_FLEET),
        prometheus: bool = True,
        kwok_pods: bool = False,
        real_node: bool = False,
    ) -> State:
        """Start (or reuse) the sandbox. `kwok_pods`: kwok plays every pod, EdgeModel's too, and
        no pod runner starts: pods go Running/Ready without a process behind them (for
        benchmarks of the control loop at a scale real processes cannot reach here).
        `real_node`: add edge-real-amd64-0, a real kubelet (edgemodel_sandbox.realnode)."""
        if real_node:
            from edgemodel_sandbox.realnode import node as realnode

            other = realnode.holder()
            if other is not None and other != self.directory and other.exists():
                raise SandboxError(
                    f"the sandbox in {other} already runs this machine's real node; only one "
                    f"can exist per machine: take it down first "
                    f"(EDGEMODEL_SANDBOX_DIR={other} edgemodel sandbox down)"
                )
        with self._locked():
            state = self.state()
            if state is not None and self.healthy(state):
                _log(f"sandbox already running in {self.directory}")
            else:
                if state is not None or self.directory.exists():
                    _log("found a stopped or broken sandbox: cleaning it up first")
                    self._down_locked()
                state = self._start(ensure_tools(), prometheus, kwok_pods)
            self._ensure_storage_class()
            if state.nodes < nodes:
                self._create_nodes(state, nodes)
            self._wait_nodes_ready(state.nodes)
            if real_node:
                from edgemodel_sandbox.realnode import node as realnode

                realnode.RealNode(self).up(state)
            return state

    def _start(self, tools: Tools, prometheus: bool, kwok_pods: bool = False) -> State:
        started = time.monotonic()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        credentials = pki.create(self.directory / "pki")
        ports = {name: free_port() for name in ("etcd", "etcd_peer", "apiserver")}
        if prometheus:
            ports["prometheus"] = free_port()
            ports["discovery"] = free_port()
        state = State(ports=ports)
        self._save(state)
        self._write_kubeconfig(credentials, ports["apiserver"])
        try:
            self._spawn_control_plane(state, tools, credentials, kwok_pods)
            # The kubelet for EdgeModel's pods on kwok nodes (see edgemodel_sandbox.runner).
            if not kwok_pods:
                self.start_pod_runner(state)
            if prometheus:
                self._spawn_monitoring(state, tools)
            time.sleep(1.0)
            for process in state.processes:
                if not process.alive():
                    raise SandboxError(
                        f"{process.name} exited at start; see {self.logs / process.name}.log"
                    )
        except BaseException:
            _log("start failed: stopping what was started")
            self._stop_processes(state)
            raise
        _log(f"control plane up in {time.monotonic() - started:.1f} s")
        return state

    def _spawn_control_plane(
        self, state: State, tools: Tools, credentials: pki.PKI, kwok_pods: bool
    ) -> None:
        """etcd, kube-apiserver (each waited for), controller-manager, scheduler and kwok."""
        ports = state.ports
        self._spawn(
            state,
            "etcd",
            tools.etcd,
            self._etcd_args(ports),
            [ports["etcd"], ports["etcd_peer"]],
        )
        self._wait("etcd", lambda: _http_ok(f"http://127.0.0.1:{ports['etcd']}/health"), 60)
        self._spawn(
            state,
            "kube-apiserver",
            tools.kube_apiserver,
            self._apiserver_args(credentials, ports),
            [ports["apiserver"]],
        )
        self._wait("kube-apiserver", lambda: self._apiserver_ready(state), 120)
        self._spawn(
            state,
            "kube-controller-manager",
            tools.kube_controller_manager,
            self._controller_manager_args(credentials),
            [],
        )
        self._spawn(state, "kube-scheduler", tools.kube_scheduler, self._scheduler_args(), [])
        self._spawn(state, "kwok", tools.kwok, self._kwok_args(kwok_pods), [])

    def _spawn_monitoring(self, state: State, tools: Tools) -> None:
        """The scrape-target discovery service and Prometheus."""
        if tools.prometheus is None:
            raise SandboxError("prometheus is not installed (Debian package `prometheus`)")
        ports = state.ports
        self._spawn(
            state,
            "discovery",
            Path(sys.executable),
            [
                "-m",
                "edgemodel_sandbox.discovery",
                f"--kubeconfig={self.kubeconfig}",
                f"--port={ports['discovery']}",
            ],
            [ports["discovery"]],
        )
        self._spawn(
            state,
            "prometheus",
            tools.prometheus,
            self._prometheus_args(ports),
            [ports["prometheus"]],
        )

    def _controller_manager_args(self, credentials: pki.PKI) -> list[str]:
        kubeconfig = str(self.kubeconfig)
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--leader-elect=false",
            "--use-service-account-credentials=false",
            f"--service-account-private-key-file={credentials.sa_key}",
            f"--root-ca-file={credentials.ca_cert}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--controllers=*",
            # Not the machine-wide /usr/libexec/kubernetes default: `down` removes it.
            f"--flex-volume-plugin-dir={self.directory / 'flexvolume'}",
            "--concurrent-deployment-syncs=10",
            "--concurrent-replicaset-syncs=10",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            *self._node_monitor_args(),
            "--v=1",
        ]

    def _node_monitor_args(self) -> list[str]:
        if self.node_lease_seconds <= DEFAULT_NODE_LEASE_S:
            return []  # the controller manager's own grace period fits the default lease
        return [f"--node-monitor-grace-period={2 * self.node_lease_seconds}s"]

    def _scheduler_args(self) -> list[str]:
        kubeconfig = str(self.kubeconfig)
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--leader-elect=false",
            "--v=1",
        ]

    def _kwok_args(self, kwok_pods: bool) -> list[str]:
        return [
            f"--kubeconfig={self.kubeconfig}",
            f"--config={self._kwok_stages() if kwok_pods else STAGES}",
            f"--manage-nodes-with-annotation-selector={fleet.FAKE_NODE_ANNOTATION}=fake",
            "--cidr=10.244.0.0/16",
            f"--node-lease-duration-seconds={self.node_lease_seconds}",
            "--node-ip=127.0.0.1",
        ]

    def _kwok_stages(self) -> Path:
        """stages.yaml without the exclusion of EdgeModel's pods, written into the state dir."""
        path = self.directory / "kwok-stages-all-pods.yaml"
        path.write_text(yaml.safe_dump_all(kwok_stages_for_all_pods(STAGES.read_text())))
        return path

    def _etcd_args(self, ports: dict[str, int]) -> list[str]:
        client_url = f"http://127.0.0.1:{ports['etcd']}"
        peer_url = f"http://127.0.0.1:{ports['etcd_peer']}"
        return [
            "--name=sandbox",
            f"--data-dir={self.directory / 'etcd'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=sandbox={peer_url}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync",
            "--auto-compaction-mode=periodic",
            "--auto-compaction-retention=5m",
            "--quota-backend-bytes=8589934592",
            "--log-level=warn",
        ]

    def _apiserver_args(self, credentials: pki.PKI, ports: dict[str, int]) -> list[str]:
        kubelet_client = pki.kubelet_client(credentials)
        return [
            f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports['apiserver']}",
            f"--tls-cert-file={credentials.server_cert}",
            f"--tls-private-key-file={credentials.server_key}",
            f"--client-ca-file={credentials.ca_cert}",
            f"--token-auth-file={credentials.token_file}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={credentials.sa_pub}",
            f"--service-account-signing-key-file={credentials.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            # A real node (edgemodel_sandbox.realnode) may modify only its own Node and pods.
            "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-client-certificate={kubelet_client.cert}",
            f"--kubelet-client-key={kubelet_client.key}",
            # The real node's hostname resolves nowhere: reach its kubelet on its bridge IP.
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            "--allow-privileged=true",
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            "--max-requests-inflight=1000",
            "--max-mutating-requests-inflight=500",
            f"--cert-dir={self.directory / 'pki'}",
            "--v=1",
        ]

    def _prometheus_args(self, ports: dict[str, int]) -> list[str]:
        config_path = self.directory / "prometheus.yml"
        config_path.write_text(
            yaml.safe_dump(prometheus_config(f"http://127.0.0.1:{ports['discovery']}/"))
        )
        return [
            f"--config.file={config_path}",
            f"--storage.tsdb.path={self.directory / 'prometheus'}",
            f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=1d",
            "--log.level=warn",
        ]

    def _write_kubeconfig(self, credentials: pki.PKI, port: int) -> None:
        import base64

        cluster = {
            "server": f"https://127.0.0.1:{port}",
            "certificate-authority-data": base64.b64encode(
                credentials.ca_cert.read_bytes()
            ).decode(),
        }
        config = render_kubeconfig(
            "edgemodel-sandbox", cluster, "admin", {"token": credentials.admin_token}
        )
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)

    def ensure_process(self, name: str, exe: Path, args: list[str], env: dict[str, str]) -> bool:
        """Starts an extra component (the operator, in the demo) unless it already runs; `down`
        stops it with the rest. True when it was started now."""
        with self._locked():
            state = self.state()
            if state is None:
                raise SandboxError("the sandbox is not up")
            if any(p.name == name and p.alive() for p in state.processes):
                return False
            state.processes = [p for p in state.processes if p.name != name]
            self._spawn(state, name, exe, args, [], env=env)
            return True

    def start_pod_runner(self, state: State) -> None:
        """Start the pod runner (the sandbox's kubelet for EdgeModel's pods on kwok nodes)."""
        self._spawn(
            state,
            "pod-runner",
            Path(sys.executable),
            [
                "-m",
                "edgemodel_sandbox.runner",
                "--kubeconfig",
                str(self.kubeconfig),
                "--state",
                str(self.directory / "runner"),
            ],
            [],
        )

    def spawn(
        self,
        state: State,
        name: str,
        exe: Path,
        args: list[str],
        ports: list[int],
        env: dict[str, str] | None = None,
    ) -> None:
        """Starts a component recorded in the state, stopped by `down` (the real node's)."""
        self._spawn(state, name, exe, args, ports, env)

    def stop(self, state: State, name: str) -> None:
        """Stops the component `name` (all its process group) and forgets it."""
        self._stop_processes(
            State(ports={}, processes=[p for p in state.processes if p.name == name])
        )
        state.processes = [p for p in state.processes if p.name != name]
        self._save(state)

    def _spawn(
        self,
        state: State,
        name: str,
        exe: Path,
        args: list[str],
        ports: list[int],
        env: dict[str, str] | None = None,
    ) -> None:
        _log(f"starting {name}")
        log = (self.logs / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [str(exe), *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.directory,
            env={**os.environ, **(env or {})},
        )
        log.close()
        state.processes.append(Process(name=name, pid=process.pid, ports=ports, exe=str(exe)))
        self._save(state)

    def _wait(self, name: str, check: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.25)
        raise SandboxError(f"{name} not ready after {timeout:.0f} s; see {self.logs / name}.log")

    def _ensure_storage_class(self) -> None:
        """The default `local-path` StorageClass, as K3s ships it (the runner provisions it)."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        from edgemodel_sandbox.runner.provisioner import storage_class_manifest

        storage = client.StorageV1Api(self.core_api().api_client)
        try:
            storage.create_storage_class(storage_class_manifest())
        except ApiException as exc:
            if exc.status != 409:
                raise

    def _create_nodes(self, state: State, count: int) -> None:
        from kubernetes.client.exceptions import ApiException

        core = self.core_api()
        manifests = fleet.fleet(count)[state.nodes :]
        _log(f"creating {len(manifests)} simulated edge nodes")

        def create(manifest: dict[str, Any]) -> None:
            try:
                core.create_node(manifest)
            except ApiException as exc:
                if exc.status != 409:
                    raise

        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(create, manifests))
        state.nodes = max(count, len(fleet.DEFAULT_FLEET))
        self._save(state)

    def _wait_nodes_ready(self, count: int, timeout: float | None = None) -> None:
        core = self.core_api()
        timeout = timeout or 120 + count / 10
        deadline = time.monotonic() + timeout
        ready = 0
        while time.monotonic() < deadline:
            nodes = core.list_node(label_selector=f"{fleet.FLEET_LABEL}=true").items
            ready = sum(
                1
                for node in nodes
                if any(
                    c.type == "Ready" and c.status == "True" for c in (node.status.conditions or [])
                )
            )
            if ready >= count:
                _log(f"{ready} edge nodes Ready")
                return
            time.sleep(1.0)
        raise SandboxError(
            f"only {ready} of {count} nodes Ready after {timeout:.0f} s; see {self.logs}/kwok.log"
        )

    # ---------------------------------------------------------------- down

    def down(self) -> None:
        with self._locked():
            self._down_locked()

    def _down_locked(self) -> None:
        state = self.state()
        from edgemodel_sandbox.realnode import node as realnode

        if (state is not None and state.real_node is not None) or (
            realnode.holder() == self.directory
        ):
            # Before the control plane stops: its pods are drained through the API server.
            realnode.RealNode(self).down(state)
        if state is not None:
            self._stop_processes(state)
            busy = [port for port in state.ports.values() if port_open(port)]
            deadline = time.monotonic() + 10
            while busy and time.monotonic() < deadline:
                time.sleep(0.2)
                busy = [port for port in busy if port_open(port)]
            if busy:
                raise SandboxError(f"ports still in use after stopping the sandbox: {busy}")
        # A runner killed before its own cleanup leaves its pod network namespace behind.
        from edgemodel_sandbox.runner import network

        network.release(
            network.PodNetwork(
                "", network.Plumbing("", network.ident(self.directory / "runner")).netns
            )
        )
        shutil.rmtree(self.directory, ignore_errors=True)

    def _stop_processes(self, state: State) -> None:
        order = {name: i for i, name in enumerate(COMPONENT_ORDER)}
        processes = sorted(state.processes, key=lambda p: order.get(p.name, -1), reverse=True)
        for process in processes:
            if process.alive():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in processes:
            while process.alive() and time.monotonic() < deadline:
                time.sleep(0.1)
            if process.alive():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(process.pid, os.WNOHANG)

    # ---------------------------------------------------------------- status

    def status_report(self) -> dict[str, Any]:
        state = self.state()
        if state is None:
            return {"running": False, "directory": str(self.directory)}
        report: dict[str, Any] = {
            "running": self.healthy(state),
            "directory": str(self.directory),
            "kubeconfig": str(self.kubeconfig),
            "apiServer": self.api_url(state),
            "prometheus": self.prometheus_url(state),
            "components": {
                p.name: ("running" if p.alive() else "stopped") for p in state.processes
            },
        }
        if report["running"]:
            core = self.core_api()
            groups: dict[tuple[str, str], list[int]] = {}
            for node in core.list_node().items:
                labels = node.metadata.labels or {}
                accelerator = (
                    "nvidia-gpu" if "nvidia.com/gpu" in (node.status.capacity or {}) else "none"
                )
                key = (labels.get("kubernetes.io/arch", "?"), accelerator)
                ready = any(
                    c.type == "Ready" and c.status == "True" for c in (node.status.conditions or [])
                )
                totals = groups.setdefault(key, [0, 0])
                totals[0] += 1
                totals[1] += int(ready)
            report["nodes"] = [
                {"arch": arch, "accelerator": acc, "nodes": total, "ready": ready}
                for (arch, acc), (total, ready) in sorted(groups.items())
            ]
        if state.real_node is not None:
            from edgemodel_sandbox.realnode import node as realnode

            report["realNode"] = realnode.RealNode(self).status(state)
        return report


def prometheus_config(discovery_url: str) -> dict[str, Any]:
    """Scrape every pod annotated prometheus.io/scrape; relabelling as on a real cluster."""
    return {
        "global": {"scrape_interval": "2s", "evaluation_interval": "2s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {
                "job_name": "edgemodel-pods",
                "http_sd_configs": [{"url": discovery_url, "refresh_interval": "2s"}],
                "relabel_configs": [
                    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                    {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"},
                ],
            }
        ],
    }


def kwok_stages_for_all_pods(text: str) -> list[dict[str, Any]]:
    """The stage documents in `text` with every `RUNNER_LABEL` selector dropped."""
    documents = [doc for doc in yaml.safe_load_all(text) if doc]
    for doc in documents:
        selector = (doc.get("spec") or {}).get("selector") or {}
        expressions = selector.get("matchExpressions")
        if expressions:
            selector["matchExpressions"] = [
                e for e in expressions if RUNNER_LABEL not in str(e.get("key", ""))
            ]
    return documents


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False

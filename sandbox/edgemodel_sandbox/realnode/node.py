"""Owns the real node's lifecycle: `up` joins edge-real-amd64-0 (a real kubelet over containerd
+ runc with bridge CNI, kube-proxy, the registry, cluster DNS) to a running sandbox; `down`
stops it and sweeps the machine clean; `status` reports it. One real node per machine: the
kubelet, CNI and containerd write machine-wide paths, so a claim file names the sandbox that
holds it and `up` refuses while another sandbox does.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from edgemodel_sandbox import pki
from edgemodel_sandbox.cluster import SandboxError, free_port
from edgemodel_sandbox.files import locked
from edgemodel_sandbox.realnode import plan, registry, sweep
from edgemodel_sandbox.tools import NodeTools, ensure_node_tools

if TYPE_CHECKING:
    from edgemodel_sandbox.cluster import Sandbox, State

CLAIM_DIR = Path(os.environ.get("EDGEMODEL_REAL_NODE_CLAIM_DIR", "/run/edgemodel"))
CLAIM = CLAIM_DIR / "real-node.json"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
# Stopped in this order: nothing new starts on the node while its pods go away.
PROCESSES = ("kube-proxy", "kubelet", "containerd", "real-node-registry", "real-node-gateway")
# Fixed paths the kubelet (device plugins, /var/log/containers links), the CNI library (its
# result cache) and the operator's node cache (a hostPath) create when they are missing.
MACHINE_PATHS = (
    Path("/var/lib/kubelet"),
    Path("/var/log/containers"),
    Path("/var/lib/cni"),
    Path("/var/lib/edgemodel"),
)
# Kernel settings the kubelet sets to its defaults (protectKernelDefaults: false): put back.
KERNEL_TUNABLES = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    # Set by `up` so bridged pod-to-pod traffic passes kube-proxy's rules (Service -> pod on
    # the same bridge); hairpin mode on the bridge covers a pod reaching itself.
    "net/bridge/bridge-nf-call-iptables",
)
BRIDGE_NF = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
READY_TIMEOUT_S = 180


class RealNodeError(SandboxError):
    """The real node could not be brought up, or another sandbox holds it."""


def _log(message: str) -> None:
    print(f"[real-node {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class NodeRecord:
    """What `up` recorded about the real node (in the sandbox's state.json)."""

    runtime_image: str = ""
    containerd_socket: str = ""
    kubelet_port: int = 0
    ports: dict[str, int] = field(default_factory=dict)
    machine_paths: list[str] = field(default_factory=list)
    ip_forward: str = ""
    sysctls: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> NodeRecord:
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def missing_requirements() -> list[str]:
    """What this machine lacks for a real node (empty: it can run one)."""
    import shutil

    from edgemodel_sandbox.containerd import CNI_BIN_DIR

    missing = []
    if os.geteuid() != 0:
        missing.append("not root")
    for program in ("containerd", "ctr", "runc", "ip", "iptables", "skopeo", "go"):
        if shutil.which(program) is None:
            missing.append(f"no {program}")
    if not (Path(CNI_BIN_DIR) / "bridge").exists():
        missing.append(f"no bridge CNI plugin in {CNI_BIN_DIR}")
    return missing


# ---------------------------------------------------------------- the machine-wide claim


@contextlib.contextmanager
def _claim_lock() -> Iterator[None]:
    with locked(CLAIM_DIR / "real-node.lock"):
        yield


def holder() -> Path | None:
    """The state folder of the sandbox that holds this machine's real node, if any."""
    try:
        return Path(json.loads(CLAIM.read_text())["sandbox"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _claim(directory: Path) -> None:
    with _claim_lock():
        current = holder()
        if current is not None and current != directory and current.exists():
            raise RealNodeError(
                f"the sandbox in {current} already runs this machine's real node "
                f"({plan.NODE_NAME}); only one can exist per machine: take it down first "
                f"(EDGEMODEL_SANDBOX_DIR={current} edgemodel sandbox down)"
            )
        if current is not None and current != directory:
            _recover(current)
        CLAIM.write_text(json.dumps({"sandbox": str(directory), "pid": os.getpid()}) + "\n")


def _release(directory: Path) -> None:
    with _claim_lock():
        if holder() == directory:
            CLAIM.unlink(missing_ok=True)


def _recover(directory: Path) -> None:
    """Removes the real node of a sandbox whose folder was deleted without `down`: its
    processes (found by the folder in their command line) and what they left."""
    _log(f"the real node of {directory} was never taken down: removing what is left of it")
    mentioned = str(directory).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            group = os.getpgid(int(proc.name))
            if mentioned in (proc / "cmdline").read_bytes() and group != os.getpgrp():
                os.killpg(group, signal.SIGKILL)
    root = directory / "real-node"
    sweep.sweep(sweep.Footprint((root,), str(root / "containerd" / "containerd.sock")))


def take_down_holder() -> Path | None:
    """Takes down whichever sandbox holds this machine's real node (tests use it before
    bringing up their own); returns its folder, or None when no sandbox held one."""
    from edgemodel_sandbox.cluster import Sandbox

    current = holder()
    if current is None:
        return None
    Sandbox(current).down()
    _release(current)
    return current


# ---------------------------------------------------------------- the node


def _run(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)


def _must(argv: list[str]) -> None:
    result = _run(argv)
    if result.returncode != 0:
        raise RealNodeError(f"{' '.join(argv)}: {result.stderr.strip()}")


def _listening(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@dataclass(frozen=True)
class RealNode:
    """The real node of one sandbox (its files live in `<sandbox>/real-node`)."""

    sandbox: Sandbox

    @property
    def layout(self) -> plan.Layout:
        return plan.Layout(self.sandbox.directory / "real-node")

    def record(self, state: State) -> NodeRecord | None:
        return NodeRecord.from_dict(state.real_node) if state.real_node else None

    def footprint(self, record: NodeRecord | None) -> sweep.Footprint:
        socket_path = record.containerd_socket if record else str(self._containerd_socket())
        paths = tuple(Path(p) for p in (record.machine_paths if record else []))
        return sweep.Footprint((self.layout.root,), socket_path, paths)

    # ------------------------------------------------------------ up

    def up(self, state: State) -> NodeRecord:
        existing = self.record(state)
        if existing is not None and self._running(state):
            return existing
        _claim(self.sandbox.directory)
        started = time.monotonic()
        record = NodeRecord()
        try:
            self._up(state, record)
        except BaseException:
            _log("start failed: taking the real node down again")
            self.down(state)
            raise
        record.timings["up_s"] = round(time.monotonic() - started, 1)
        state.real_node = record.to_dict()
        self.sandbox.save(state)
        _log(f"{plan.NODE_NAME} Ready; real node up in {record.timings['up_s']} s")
        return record

    def _up(self, state: State, record: NodeRecord) -> None:
        tools = ensure_node_tools()
        images = _images()
        layout = self.layout
        for folder in (layout.root, layout.kubelet_root, layout.pod_logs, layout.cni_conf_dir):
            folder.mkdir(parents=True, exist_ok=True)
        record.machine_paths = [str(p) for p in MACHINE_PATHS if not p.exists()]
        record.ip_forward = IP_FORWARD.read_text().strip()
        record.sysctls = {
            key: (Path("/proc/sys") / key).read_text().strip()
            for key in KERNEL_TUNABLES
            if (Path("/proc/sys") / key).exists()
        }
        record.containerd_socket = str(self._containerd_socket())
        # Recorded before anything starts, so a failed `up` is taken down completely.
        state.real_node = record.to_dict()
        self.sandbox.save(state)
        credentials = pki.PKI(self.sandbox.directory / "pki")
        self._network()
        api = f"127.0.0.1:{state.ports['apiserver']}"
        self.sandbox.spawn(
            state,
            "real-node-gateway",
            Path(sys.executable),
            [
                "-m",
                "edgemodel_sandbox.realnode.gateway",
                f"--kubeconfig={self.sandbox.kubeconfig}",
                f"--api={api}",
            ],
            [],
        )
        self._registry(state, tools, credentials, record, images.runtime_tag)
        # The push runs while containerd, the kubelet and kube-proxy start.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pushed = pool.submit(self._push, images.runtime, record.runtime_image)
            self._containerd(state, credentials, images, record)
            self._kubelet(state, tools, credentials, record)
            self._kube_proxy(state, tools, credentials, record)
            self._wait_for("the gateway", lambda: _listening(plan.GATEWAY_IP, plan.API_PORT), 30)
            self._publish_api_endpoint()
            ready_from = time.monotonic()
            self._wait_ready()
            record.timings["node_ready_s"] = round(time.monotonic() - ready_from, 1)
            self._label()
            record.timings["push_s"] = pushed.result()

    def _containerd_socket(self) -> Path:
        return self.layout.containerd / "containerd.sock"

    def _network(self) -> None:
        """The bridge (before the kubelet: its node IP and the host-side services live on it)
        and IP forwarding (pods reach the pod runner's network and the host through it)."""
        if not Path(f"/sys/class/net/{plan.BRIDGE}").exists():
            _must(["ip", "link", "add", plan.BRIDGE, "type", "bridge"])
        prefix = plan.POD_CIDR.split("/")[1]
        addresses = _run(["ip", "-4", "addr", "show", "dev", plan.BRIDGE]).stdout
        if f"{plan.GATEWAY_IP}/" not in addresses:
            _must(["ip", "addr", "add", f"{plan.GATEWAY_IP}/{prefix}", "dev", plan.BRIDGE])
        _must(["ip", "link", "set", plan.BRIDGE, "up"])
        IP_FORWARD.write_text("1\n")
        if BRIDGE_NF.exists():
            BRIDGE_NF.write_text("1\n")
        self.layout.resolv_conf.write_text(f"nameserver {plan.GATEWAY_IP}\n")

    def _registry(
        self,
        state: State,
        tools: NodeTools,
        credentials: pki.PKI,
        record: NodeRecord,
        tag: str,
    ) -> None:
        layout = self.layout
        registry.prepare(layout, credentials)
        self.sandbox.spawn(
            state,
            "real-node-registry",
            tools.registry,
            ["serve", str(layout.registry_config)],
            [],
        )
        self._wait_for("the registry", lambda: _listening(plan.GATEWAY_IP, plan.REGISTRY_PORT), 30)
        record.runtime_image = plan.runtime_reference(tag)
        self._apply_pull_secret(plan.PULL_SECRET_NAMESPACE)

    def _push(self, archive: Path, reference: str) -> float:
        _log(f"pushing {archive.name} (every platform) to {reference}")
        seconds = round(registry.push(self.layout, archive, reference), 1)
        _log(f"pushed in {seconds} s")
        return seconds

    def _containerd(
        self, state: State, credentials: pki.PKI, images: Any, record: NodeRecord
    ) -> None:
        from edgemodel_sandbox.realnode import runtime

        runtime.start(self.sandbox, state, self.layout, credentials, images.pause, images.pause_ref)

    def _kubelet(
        self, state: State, tools: NodeTools, credentials: pki.PKI, record: NodeRecord
    ) -> None:
        layout = self.layout
        client = pki.issue(
            credentials, "kubelet-client", f"system:node:{plan.NODE_NAME}", ["system:nodes"]
        )
        serving = pki.issue(
            credentials,
            "kubelet-serving",
            plan.NODE_NAME,
            sans=[plan.NODE_NAME, plan.GATEWAY_IP, "127.0.0.1"],
            server=True,
            client=False,
        )
        server = f"https://127.0.0.1:{state.ports['apiserver']}"
        layout.kubelet_kubeconfig.write_text(
            yaml.safe_dump(
                plan.kubeconfig(server, credentials.ca_cert, client.cert, client.key, "kubelet")
            )
        )
        record.kubelet_port = free_port()
        record.ports["kubelet_healthz"] = free_port()
        config = plan.kubelet_configuration(
            layout,
            credentials.ca_cert,
            serving.cert,
            serving.key,
            Path(record.containerd_socket),
            record.kubelet_port,
            record.ports["kubelet_healthz"],
        )
        layout.kubelet_config.write_text(yaml.safe_dump(config))
        own, _ = plan.split_labels(plan.node_labels())
        self.sandbox.spawn(state, "kubelet", tools.kubelet, plan.kubelet_args(layout, own), [])

    def _kube_proxy(
        self, state: State, tools: NodeTools, credentials: pki.PKI, record: NodeRecord
    ) -> None:
        layout = self.layout
        client = pki.issue(credentials, "kube-proxy", "system:kube-proxy")
        server = f"https://127.0.0.1:{state.ports['apiserver']}"
        layout.proxy_kubeconfig.write_text(
            yaml.safe_dump(
                plan.kubeconfig(server, credentials.ca_cert, client.cert, client.key, "kube-proxy")
            )
        )
        record.ports["proxy_healthz"] = free_port()
        record.ports["proxy_metrics"] = free_port()
        config = plan.kube_proxy_configuration(
            layout, record.ports["proxy_healthz"], record.ports["proxy_metrics"]
        )
        layout.proxy_config.write_text(yaml.safe_dump(config))
        self.sandbox.spawn(
            state,
            "kube-proxy",
            tools.kube_proxy,
            [f"--config={layout.proxy_config}", "--v=1"],
            [],
        )

    def _wait_for(self, what: str, check: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.25)
        raise RealNodeError(f"{what} not ready after {timeout:.0f} s; see {self.sandbox.logs}")

    def _ready(self) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            node = self.sandbox.core_api().read_node(plan.NODE_NAME)
        except ApiException:
            return False
        return any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))

    def _wait_ready(self) -> None:
        self._wait_for(f"{plan.NODE_NAME} (kubelet.log)", self._ready, READY_TIMEOUT_S)

    def _label(self) -> None:
        """Labels NodeRestriction keeps from the kubelet, and the K3s annotation, by the admin;
        schedulable again if a failed `up` had drained it."""
        _, admin = plan.split_labels(plan.node_labels())
        patch = {
            "metadata": {
                "labels": admin,
                "annotations": {"k3s.io/hostname": plan.NODE_NAME},
            },
            "spec": {"unschedulable": False},
        }
        self.sandbox.core_api().patch_node(plan.NODE_NAME, patch)

    def _publish_api_endpoint(self) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        discovery = client.DiscoveryV1Api(self.sandbox.core_api().api_client)
        body = plan.kubernetes_endpoint_slice()
        try:
            discovery.create_namespaced_endpoint_slice("default", body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            discovery.replace_namespaced_endpoint_slice(body["metadata"]["name"], "default", body)

    def _apply_pull_secret(self, namespace: str) -> None:
        apply_pull_secret(self.sandbox, namespace)

    def _running(self, state: State) -> bool:
        alive = {p.name for p in state.processes if p.alive()}
        return set(PROCESSES) <= alive

    # ------------------------------------------------------------ down

    def down(self, state: State | None) -> None:
        """Stops the real node's processes and removes all it left on the machine."""
        started = time.monotonic()
        record = self.record(state) if state is not None else None
        if state is not None:
            self._drain()
            drained = time.monotonic()
            for name in PROCESSES:
                if name == "containerd":
                    from edgemodel_sandbox.realnode import runtime

                    runtime.stop(self.sandbox, state, self.layout)
                self.sandbox.stop(state, name)
            _log(
                f"drained in {drained - started:.1f} s, "
                f"processes stopped in {time.monotonic() - drained:.1f} s"
            )
        tools = NodeTools.at(_tools_root())
        if os.access(tools.kube_proxy, os.X_OK):
            _run([str(tools.kube_proxy), "--cleanup"], timeout=60)
        sweep.sweep(self.footprint(record))
        if record is not None:
            for key, value in {**record.sysctls, "net/ipv4/ip_forward": record.ip_forward}.items():
                if value:
                    with contextlib.suppress(OSError):
                        (Path("/proc/sys") / key).write_text(value + "\n")
        if state is not None:
            state.real_node = None
            state.processes = [p for p in state.processes if p.name not in PROCESSES]
            self.sandbox.save(state)
        _release(self.sandbox.directory)
        _log(f"{plan.NODE_NAME} down and swept in {time.monotonic() - started:.1f} s")

    def _drain(self) -> None:
        """Cordons the node and deletes its pods while the kubelet still runs, so containerd
        tears their sandboxes down (CNI DEL) as on a real cluster; the sweep catches the rest."""
        try:
            core = self.sandbox.core_api()
            core.patch_node(plan.NODE_NAME, {"spec": {"unschedulable": True}})
            selector = f"spec.nodeName={plan.NODE_NAME}"
            for pod in core.list_pod_for_all_namespaces(field_selector=selector).items:
                core.delete_namespaced_pod(
                    pod.metadata.name, pod.metadata.namespace, grace_period_seconds=2
                )
            deadline = time.monotonic() + 45
            while time.monotonic() < deadline:
                if not core.list_pod_for_all_namespaces(field_selector=selector).items:
                    break
                time.sleep(0.5)
        except Exception as exc:  # the API server may be gone already: sweep instead
            _log(f"drain skipped: {exc}")

    # ------------------------------------------------------------ status

    def status(self, state: State) -> dict[str, Any] | None:
        record = self.record(state)
        if record is None:
            return None
        report: dict[str, Any] = {
            "name": plan.NODE_NAME,
            "registry": plan.REGISTRY,
            "runtimeImage": record.runtime_image,
            "credentials": str(self.layout.registry_credentials),
            "certDir": str(self.layout.certs),
            "pullSecret": f"{plan.PULL_SECRET_NAMESPACE}/{plan.PULL_SECRET}",
            "pullSecretManifest": str(self.layout.pull_secret),
            "clusterDNS": plan.GATEWAY_IP,
            "ready": False,
        }
        try:
            core = self.sandbox.core_api()
            node = core.read_node(plan.NODE_NAME)
            pods = core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={plan.NODE_NAME}"
            ).items
        except Exception as exc:  # the API server is away: report what is known
            report["error"] = str(exc)
            return report
        info = node.status.node_info
        report.update(
            ready=any(
                c.type == "Ready" and c.status == "True" for c in (node.status.conditions or [])
            ),
            kubeletVersion=info.kubelet_version,
            containerRuntime=info.container_runtime_version,
            pods=len(pods),
            podsRunning=sum(1 for p in pods if p.status.phase == "Running"),
        )
        return report


def apply_pull_secret(sandbox: Sandbox, namespace: str, name: str = plan.PULL_SECRET) -> None:
    """Creates (or updates) the registry's pull secret `name` in `namespace`."""
    from kubernetes.client.exceptions import ApiException

    layout = plan.Layout(sandbox.directory / "real-node")
    secret: dict[str, Any] = yaml.safe_load(layout.pull_secret.read_text())
    secret["metadata"].update(name=name, namespace=namespace)
    core = sandbox.core_api()
    try:
        core.create_namespaced_secret(namespace, secret)
    except ApiException as exc:
        if exc.status != 409:
            raise
        core.replace_namespaced_secret(name, namespace, secret)


def _tools_root() -> Path:
    from edgemodel_sandbox.tools import tools_dir

    return tools_dir()


@dataclass(frozen=True)
class Images:
    """The runtime image archive (pushed to the registry) and the pause image (imported)."""

    runtime: Path
    runtime_tag: str
    pause: Path
    pause_ref: str


def _images() -> Images:
    """The images of `make image` (edgemodel_sandbox.image.build), built first when missing."""
    from edgemodel_sandbox.image import build

    runtime = build.ensure_runtime_image()
    pause = build.ensure_pause_image()
    return Images(runtime.path, runtime.ref.rsplit(":", 1)[1], pause.path, pause.ref)

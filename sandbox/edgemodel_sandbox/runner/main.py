"""Owns the runner process: arguments, the pod watch, dispatch to pod workers, shutdown.

One watch on pods labelled `app.kubernetes.io/part-of=edgemodel` (list, then watch from its
resourceVersion; relist on expiry) and one on claims (the provisioner). A pod is taken only
once it is scheduled to a kwok node (annotation `kwok.x-k8s.io/node: fake`); node
annotations are read once per node and cached. SIGTERM or SIGINT stops every container
process (SIGTERM, 5 s, SIGKILL) before the runner exits; the pods keep their status so a
later runner adopts and restarts them.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from edgemodel_operator import labels
from edgemodel_runtime.logs import add_log_format_argument, configure
from edgemodel_sandbox.runner import FAKE_NODE_ANNOTATION, apiproxy, network, plan
from edgemodel_sandbox.runner.ipam import Allocator
from edgemodel_sandbox.runner.kube import SyncKube, relisting
from edgemodel_sandbox.runner.provisioner import Provisioner
from edgemodel_sandbox.runner.supervisor import Context, PodWorker

log = logging.getLogger("edgemodel.runner")
SHUTDOWN_GRACE = 5.0
PASSED_ENV = (
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "XDG_CACHE_HOME",
    "LD_LIBRARY_PATH",
    "VIRTUAL_ENV",
    "EDGEMODEL_FIXTURES_DIR",
)
# The pods the runner looks at (it takes those of them scheduled to a kwok node).
SELECTOR = {labels.PART_OF: labels.PART_OF_VALUE}


def find_triton() -> plan.Triton | None:
    """The tritonserver binary of the nvidia-pytriton wheel, when it is installed."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        base = Path(location) / "tritonserver"
        binary = base / "bin" / "tritonserver"
        if binary.is_file() and os.access(binary, os.X_OK):
            return plan.Triton(binary=str(binary), backends=str(base / "backends"))
    return None


def base_env() -> dict[str, str]:
    """What every container process inherits besides its own env: enough to run Python.

    The runner's KUBECONFIG and credentials are deliberately not passed on: a pod has no
    admin access on a real cluster either.
    """
    env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
    path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["PATH"] = f"{Path(sys.executable).parent}:{path}"
    return env


def selector() -> str:
    """SELECTOR as a label selector."""
    return ",".join(f"{key}={value}" for key, value in SELECTOR.items())


def is_owned_label(pod: dict[str, Any]) -> bool:
    """Whether the pod carries SELECTOR's labels (the watch selects on them too)."""
    found = (pod.get("metadata") or {}).get("labels") or {}
    return all(found.get(key) == value for key, value in SELECTOR.items())


class Runner:
    """The pod watch and the table of pod workers."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._workers: dict[str, PodWorker] = {}
        self._fake_nodes: dict[str, bool] = {}

    def _node_is_fake(self, name: str) -> bool:
        if name not in self._fake_nodes:
            node = self._ctx.kube.get(f"/api/v1/nodes/{name}")
            if node is None:
                return False  # not cached: the node may yet appear
            annotations = (node.get("metadata") or {}).get("annotations") or {}
            self._fake_nodes[name] = annotations.get(FAKE_NODE_ANNOTATION) == "fake"
        return self._fake_nodes[name]

    def _owned(self, pod: dict[str, Any]) -> bool:
        node = (pod.get("spec") or {}).get("nodeName")
        return is_owned_label(pod) and bool(node) and self._node_is_fake(str(node))

    def _dispatch(self, kind: str, pod: dict[str, Any]) -> None:
        uid = str((pod.get("metadata") or {}).get("uid", ""))
        if kind == "DELETED":
            worker = self._workers.pop(uid, None)
            if worker is not None:
                worker.gone()
            return
        worker = self._workers.get(uid)
        if worker is not None and worker.alive:
            worker.update(pod)
            return
        # A worker that ended while its pod still exists failed: start the pod over, as the
        # kubelet would after a crash (its IP stays reserved under the same uid).
        if not self._owned(pod):
            return
        worker = PodWorker(self._ctx, pod)
        self._workers[uid] = worker
        worker.start()

    def _list(self) -> str:
        listing = self._ctx.kube.request("GET", "/api/v1/pods", query={"labelSelector": selector()})
        pods: list[dict[str, Any]] = listing.get("items") or []
        seen = {str(p["metadata"]["uid"]) for p in pods}
        for uid in [u for u in self._workers if u not in seen]:
            self._workers.pop(uid).gone()
        owned = [p for p in pods if self._owned(p)]
        # Pods a previous runner started keep their IPs: reserve them all before any new pod
        # is given one.
        for pod in owned:
            ip = (pod.get("status") or {}).get("podIP")
            uid = str(pod["metadata"]["uid"])
            if ip and self._ctx.ipam.contains(ip) and uid not in self._workers:
                self._ctx.ipam.allocate(uid, ip)
        for pod in pods:
            self._dispatch("ADDED", pod)
        return str(listing["metadata"]["resourceVersion"])

    def watch_pods(self) -> None:
        """List, then watch from the listing's version, until shutdown (relisting as needed)."""
        relisting(self._ctx.shutdown, "pod", self._list_and_watch)

    def _list_and_watch(self) -> None:
        version = self._list()
        while not self._ctx.shutdown.is_set():
            for event in self._ctx.kube.watch("v1", "Pod", version, labels=SELECTOR):
                pod = event.get("object") or {}
                version = str((pod.get("metadata") or {}).get("resourceVersion") or version)
                if event.get("type") != "BOOKMARK":
                    self._dispatch(str(event.get("type")), pod)
                if self._ctx.shutdown.is_set():
                    return

    def stop(self) -> None:
        self._ctx.shutdown.set()
        for worker in list(self._workers.values()):
            worker.wake()
        self._ctx.stop_all(SHUTDOWN_GRACE)
        for worker in list(self._workers.values()):
            worker.join(0.5)


def service_env(
    pod_network: network.PodNetwork, server: str, stop_proxy: threading.Event
) -> dict[str, str]:
    """Where in-cluster clients find the API: where a real cluster puts it, the `kubernetes`
    Service (proxied into the pod network until `stop_proxy`), else the API server itself."""
    if pod_network.netns_path and apiproxy.start(pod_network.netns_path, server, stop_proxy):
        host, port = apiproxy.SERVICE_IP, str(apiproxy.SERVICE_PORT)
    else:
        upstream_host, upstream_port = apiproxy.upstream_of(server)
        host, port = upstream_host, str(upstream_port)
    return {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": port,
        "KUBERNETES_SERVICE_PORT_HTTPS": port,
    }


def serve(ctx: Context) -> None:
    """Run the claim and pod watches until SIGTERM or SIGINT; then stop every container."""
    runner = Runner(ctx)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        del frame
        log.info("signal %d: stopping every container", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    provisioner = Provisioner(ctx.kube, ctx.state / "pvs", ctx.shutdown)
    threading.Thread(target=provisioner.run, name="provisioner", daemon=True).start()
    threading.Thread(target=runner.watch_pods, name="pod watch", daemon=True).start()
    while not stop.wait(1.0):
        pass
    runner.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", required=True, type=Path)
    parser.add_argument("--state", required=True, type=Path, help="folder for pods, PVs, logs")
    parser.add_argument(
        "--pod-cidr", help="pod address range (default: a free 10.x.0.0/16 made local)"
    )
    parser.add_argument("--dns-timeout", type=float, default=60.0)
    parser.add_argument("--log-level", default="INFO")
    add_log_format_argument(parser)
    args = parser.parse_args(argv)
    configure(args.log_level, args.log_format)
    state: Path = args.state.resolve()
    for sub in ("pods", "nodes", "pvs"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    kube = SyncKube.from_kubeconfig(args.kubeconfig)
    pod_network = network.claim(state, args.pod_cidr)
    stop_proxy = threading.Event()
    try:
        ctx = Context(
            kube=kube,
            ipam=Allocator(ipaddress.IPv4Network(pod_network.cidr)),
            state=state,
            python=sys.executable,
            triton=find_triton(),
            base_env={**base_env(), **service_env(pod_network, kube.server, stop_proxy)},
            dns_timeout=args.dns_timeout,
            netns_path=pod_network.netns_path,
        )
        log.info(
            "pod runner up state=%s pods=%s netns=%s triton=%s",
            state,
            pod_network.cidr,
            pod_network.netns,
            ctx.triton is not None,
        )
        serve(ctx)
    finally:
        stop_proxy.set()
        kube.close()
        network.release(pod_network)
    log.info("pod runner stopped")
    return 0

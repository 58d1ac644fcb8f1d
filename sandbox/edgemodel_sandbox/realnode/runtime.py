"""Owns the real node's container runtime: the sandbox's containerd (edgemodel_sandbox.
containerd) with its CRI plugin for the kubelet, in the CRI's `k8s.io` namespace, the pause
image imported (never pulled), the bridge CNI network, and the local registry trusted through
the sandbox CA. Pull credentials are not in containerd's config: pods bring a pull secret.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from edgemodel_sandbox import pki
from edgemodel_sandbox.containerd import Containerd, ContainerdError, Registry, shim_socket
from edgemodel_sandbox.realnode import plan

if TYPE_CHECKING:
    from edgemodel_sandbox.cluster import Sandbox, State

CRI_NAMESPACE = "k8s.io"


def daemon(layout: plan.Layout, ca_cert: Path, pause_ref: str) -> Containerd:
    return Containerd(
        layout.containerd,
        namespace=CRI_NAMESPACE,
        sandbox_image=pause_ref,
        cni_conf_dir=layout.cni_conf_dir,
        registries=[Registry(plan.REGISTRY, ca_file=ca_cert)],
    )


def start(
    sandbox: Sandbox,
    state: State,
    layout: plan.Layout,
    credentials: pki.PKI,
    pause: Path,
    pause_ref: str,
) -> Containerd:
    """Writes the CNI network, starts containerd (recorded in the sandbox's state, so `down`
    stops it) and imports the pause image; returns the running daemon."""
    from edgemodel_sandbox.cluster import Process

    layout.cni_conf_dir.mkdir(parents=True, exist_ok=True)
    conflist = layout.cni_conf_dir / f"10-{plan.CNI_NETWORK}.conflist"
    conflist.write_text(json.dumps(plan.cni_conflist(layout), indent=2))
    runtime = daemon(layout, credentials.ca_cert, pause_ref)
    runtime.start()
    assert runtime.process is not None
    exe = shutil.which("containerd") or "containerd"
    state.processes.append(Process("containerd", runtime.process.pid, [], exe))
    sandbox.save(state)
    runtime.import_image(pause)
    return runtime


def shim_sockets(layout: plan.Layout) -> list[Path]:
    """The shim sockets (in the machine-wide /run/containerd/s) of the CRI's tasks."""
    tasks = layout.containerd / "state" / "io.containerd.runtime.v2.task" / CRI_NAMESPACE
    address = (layout.containerd / "containerd.sock").resolve()
    ids = sorted(p.name for p in tasks.iterdir()) if tasks.is_dir() else []
    return [shim_socket(address, CRI_NAMESPACE, task) for task in ids]


def stop(sandbox: Sandbox, state: State, layout: plan.Layout) -> None:
    """Stops containerd, then has edgemodel_sandbox.containerd remove its shims, mounts, root
    and state (its containers went with the drained pods, or with the sweep), and removes the
    shim sockets a killed shim leaves in /run/containerd/s."""
    sockets = shim_sockets(layout)
    sandbox.stop(state, "containerd")
    try:
        Containerd(layout.containerd, namespace=CRI_NAMESPACE).stop()
    except (ContainerdError, OSError) as exc:  # the sweep after this removes what is left
        print(f"[real-node] containerd cleanup: {exc}", file=sys.stderr, flush=True)
    for path in sockets:
        path.unlink(missing_ok=True)
